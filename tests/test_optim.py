"""The flat optimiser does what torch.optim does, element by element."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from speccomp.core.optim import FlatAdam


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # test-local; the package never touches the global RNG
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize(("decoupled", "reference"), [(True, torch.optim.AdamW), (False, torch.optim.Adam)])
def test_flat_adam_matches_torch_optim(decoupled, reference):
    ours, theirs = _model(0), _model(0)
    flat = FlatAdam(ours, lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=decoupled)
    ref = reference(theirs.parameters(), lr=1e-2, weight_decay=1e-2, fused=True)
    gen = torch.Generator().manual_seed(1)
    for _ in range(25):
        x, y = torch.randn(32, 16, generator=gen), torch.randn(32, 3, generator=gen)
        flat.zero_grad()
        ((ours(x) - y) ** 2).mean().backward()
        flat.step()
        ref.zero_grad()
        ((theirs(x) - y) ** 2).mean().backward()
        ref.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert float(flat.step_count) == 25


def test_parameters_and_gradients_live_in_the_flat_buffers():
    model = _model(2)
    flat = FlatAdam(model, lr=1e-3)
    first = next(model.parameters())
    assert first.data_ptr() == flat.params.data_ptr() and first.grad.data_ptr() == flat.grads.data_ptr()
    ((model(torch.ones(4, 16)) ** 2).sum()).backward()
    assert bool(flat.grads.abs().sum() > 0)
    flat.zero_grad()
    assert not bool(flat.grads.any())
