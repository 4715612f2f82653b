"""Models: seeds trained together equal seeds trained alone (mlp, cnn, linear), exact
reproducibility, the registry, members and input transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from speccomp.core.config import ConfigError
from speccomp.core.models import (
    MODEL_REGISTRY,
    EnsembleLinear,
    EnsembleModel,
    ModelSpec,
    build_model,
    extract_member,
    load_member,
    register_model,
)
from speccomp.core.registry import MODEL_MODULES
from speccomp.core.seeding import torch_generator
from speccomp.core.training import predict, train
from speccomp.spectra.data import generate_datasets
from tests.conftest import ListLogger, tiny_config

TINY_CNN = ["training.model_type=cnn", "training.cnn.channels=[4,8]", "training.cnn.kernel_sizes=[5,3]", "training.cnn.head_dim=16"]
MODEL_OVERRIDES = {
    "mlp": ["training.model_type=mlp"],
    "cnn": TINY_CNN,
    "linear": ["training.model_type=linear", "training.input_transform=log"],
}


@pytest.fixture(scope="module")
def datasets():
    return generate_datasets(tiny_config(), 42)


def init_state(spec: ModelSpec, seed: int) -> dict[str, torch.Tensor]:
    return build_model(spec, [torch_generator(seed, "init")]).state_dict()


def assert_same_run(a, b, atol: float = 1e-5) -> None:
    """Two SeedResults of the same seed: every final metric and the predictions agree."""
    assert set(a.final) == set(b.final)
    for key, value in a.final.items():
        other = b.final[key]
        if math.isnan(value):
            assert math.isnan(other), key
        else:
            assert abs(value - other) <= atol, (key, value, other)
    np.testing.assert_allclose(a.test_predictions, b.test_predictions, rtol=0, atol=atol)


# --------------------------------------------------------------------------------------------
# batched ensembles
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["mlp", "cnn", "linear"])
def test_seed_in_ensemble_equals_seed_alone(datasets, model_type):
    cfg = tiny_config(*MODEL_OVERRIDES[model_type])
    log3, log1 = ListLogger(), ListLogger()
    together = train(cfg, datasets, [1, 2, 3], logger=log3)
    alone = train(cfg, datasets, [2], logger=log1)
    assert together.spec.model_type == model_type
    assert_same_run(together.by_seed(2), alone.by_seed(2))
    # every logged value of seed 2 (train loss included) agrees along the way, too
    h3, h1 = log3.history(2, "train/loss"), log1.history(2, "train/loss")
    assert [s for s, _ in h3] == [s for s, _ in h1] and len(h1) == together.total_steps
    np.testing.assert_allclose([v for _, v in h3], [v for _, v in h1], rtol=0, atol=1e-5)
    t3 = together.trajectory[together.trajectory.seed == 2].reset_index(drop=True)
    t1 = alone.trajectory.reset_index(drop=True)
    np.testing.assert_allclose(t3["test_loss"], t1["test_loss"], rtol=0, atol=1e-5)
    # the members really are different models
    assert not np.allclose(together.by_seed(1).test_predictions, together.by_seed(2).test_predictions)


@pytest.mark.parametrize("model_type", ["mlp", "cnn"])
def test_same_seed_twice_is_identical_and_another_seed_differs(datasets, model_type):
    cfg = tiny_config(*MODEL_OVERRIDES[model_type])
    a = train(cfg, datasets, [5]).by_seed(5)
    b = train(cfg, datasets, [5]).by_seed(5)
    assert np.array_equal(a.test_predictions, b.test_predictions)
    assert_same_run(a, b, atol=0.0)
    c = train(cfg, datasets, [6]).by_seed(6)
    assert not np.allclose(a.test_predictions, c.test_predictions)


@pytest.mark.parametrize("model_type", ["mlp", "cnn", "linear"])
def test_initialisation_is_determined_by_the_seed(model_type):
    cfg = tiny_config(*MODEL_OVERRIDES[model_type])
    spec = ModelSpec.from_training(cfg.training, cfg.physics.n_bins, 20)
    first, again, other = init_state(spec, 7), init_state(spec, 7), init_state(spec, 8)
    weights = [k for k in first if k.endswith("weight")]
    assert weights
    for k in first:
        assert torch.equal(first[k], again[k]), k
    assert all(not torch.equal(first[k], other[k]) for k in weights)
    # member s of an ensemble is initialised exactly as the same seed alone
    ens = build_model(spec, [torch_generator(s, "init") for s in (8, 7)]).state_dict()
    for k in first:
        assert torch.equal(ens[k][1:2], first[k]) and torch.equal(ens[k][0:1], other[k]), k


def test_kaiming_normal_initialisation_scale():
    spec = ModelSpec("mlp", n_bins=1024, n_outputs=20, hidden_dims=[128, 64])
    model = build_model(spec, [torch_generator(s, "init") for s in range(4)])
    w = model.layers[0].weight.detach()  # (S, 1024, 128)
    assert abs(float(w.std()) - math.sqrt(2.0 / 1024)) < 0.02 * math.sqrt(2.0 / 1024)
    assert not bool(model.layers[0].bias.detach().any())


@pytest.mark.parametrize("model_type", ["mlp", "cnn", "linear"])
def test_extracted_member_computes_what_the_ensemble_computes(model_type, datasets):
    cfg = tiny_config(*MODEL_OVERRIDES[model_type])
    spec = ModelSpec.from_training(cfg.training, cfg.physics.n_bins, 20)
    model = build_model(spec, [torch_generator(s, "init") for s in (3, 4)], datasets["train"].spectra)
    x = datasets["test"].spectra
    pred = predict(model, x)  # (S, N, C)
    assert pred.shape == (2, len(x), 20)
    for s in range(2):
        member = extract_member(model, s)
        with torch.no_grad():
            torch.testing.assert_close(member(x), pred[s], rtol=0, atol=1e-6)


def test_eval_mode_is_deterministic_and_training_mode_uses_dropout(datasets):
    cfg = tiny_config("training.dropout_rate=0.5")
    spec = ModelSpec.from_training(cfg.training, cfg.physics.n_bins, 20)
    model = build_model(spec, [torch_generator(1, "init")])
    x = datasets["test"].spectra[:8].unsqueeze(0)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        model.dropout_generators = [torch_generator(1, "dropout")]
        assert not torch.equal(model(x), model(x))


# --------------------------------------------------------------------------------------------
# input transforms: inside the model, statistics in the state
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["none", "log", "standardize", "log+standardize"])
def test_input_transform(kind, datasets):
    cfg = tiny_config(f"training.input_transform={kind}")
    spec = ModelSpec.from_training(cfg.training, cfg.physics.n_bins, 20)
    x = datasets["train"].spectra
    model = build_model(spec, [torch_generator(1, "init")], x)
    z = model.transform(x.unsqueeze(0))[0].double()
    ref = torch.log(x.double().clamp_min(1e-6)) if kind.startswith("log") else x.double()
    if "standardize" in kind:
        torch.testing.assert_close(z.mean(0), torch.zeros(x.shape[1], dtype=torch.float64), rtol=0, atol=1e-4)
        torch.testing.assert_close(z.std(0), torch.ones(x.shape[1], dtype=torch.float64), rtol=0, atol=1e-3)
        assert not torch.equal(model.transform.mean, torch.zeros_like(model.transform.mean))
        torch.testing.assert_close(model.transform.mean[0, 0].double(), ref.mean(0), rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(z, ref, rtol=1e-6, atol=1e-6)
        assert torch.equal(model.transform.mean, torch.zeros_like(model.transform.mean))
    # the statistics are buffers, so they travel in the state dict
    state = model.state_dict()
    assert "transform.mean" in state and "transform.std" in state


def test_log_transform_survives_non_positive_bins():
    spec = ModelSpec("linear", n_bins=4, n_outputs=2, input_transform="log")
    model = build_model(spec, [torch_generator(0, "init")])
    out = model(torch.tensor([[[0.5, 0.0, -0.2, 1.0]]]))
    assert bool(torch.isfinite(out).all())


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------
class PooledLinear(EnsembleModel):
    """A test model: average-pool the spectrum to 8 values, then one linear map."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(spec, n_members)
        self.pool = spec.n_bins // 8
        self.layer = EnsembleLinear(n_members, 8, spec.n_outputs)

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        self.layer.reset_member(s, gen, 1.0)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        s, b, length = x.shape
        pooled = x[..., : 8 * self.pool].reshape(s, b, 8, self.pool).mean(-1)
        return self.layer(pooled)


@pytest.fixture
def pooled_linear_registered():
    name = "pooled_linear_test"
    assert name not in MODEL_REGISTRY
    register_model(name)(PooledLinear)
    yield name
    MODEL_REGISTRY.pop(name, None)
    MODEL_MODULES.pop(name, None)


def test_registered_model_trains_through_the_config(pooled_linear_registered, datasets, tmp_path):
    name = pooled_linear_registered
    cfg = tiny_config(f"training.model_type={name}", "training.checkpoint_retention=last")
    result = train(cfg, datasets, [1, 2], out_dir=tmp_path)
    assert result.spec.model_type == name
    r = result.by_seed(1)
    assert isinstance(r.model.net, PooledLinear)
    assert r.test_predictions.shape == (len(datasets["test"]), 20)
    # it learned something: its final validation error is below its initial one
    traj = result.trajectory[result.trajectory.seed == 1]
    assert traj["val_loss"].iloc[-1] < traj["val_loss"].iloc[0]
    # and its checkpoint rebuilds through the registry
    member = load_member(r.checkpoint_paths[-1])
    assert isinstance(member.net, PooledLinear)
    with torch.no_grad():
        np.testing.assert_allclose(member(datasets["test"].spectra).numpy(), r.test_predictions, rtol=0, atol=1e-6)


def test_unregistered_model_is_a_config_error():
    with pytest.raises(ConfigError, match="pooled_linear_test.*registered: cnn, linear, mlp"):
        tiny_config("training.model_type=pooled_linear_test")


def test_build_model_refuses_an_unknown_spec():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model(ModelSpec("nope", n_bins=8, n_outputs=2), [torch_generator(0, "init")])


def test_ensemble_model_is_a_torch_module_with_member_dimension():
    spec = ModelSpec("mlp", n_bins=16, n_outputs=3, hidden_dims=[5])
    model = build_model(spec, [torch_generator(s, "init") for s in range(3)])
    assert isinstance(model, nn.Module)
    assert all(p.shape[0] == 3 for p in model.parameters())
    assert model(torch.rand(3, 2, 16)).shape == (3, 2, 3)
