"""Matrices models: (S, B, 16, D) encoded panels (8 context panels, then the candidates) ->
(S, B, n_candidates) scores, one member per training seed (see `speccomp.core.models`).

- `raven_mlp`: a candidate scorer, one MLP over (the eight context panels, one candidate).
- `raven_wren`: relational (WReN-like): panels embedded by a shared layer, a shared function `g`
  over the ordered panel pairs of each row (with the pair's place in the row), summed per row;
  a head scores the three row summaries, the third row being completed by the candidate.
- `raven_seq`: the layers of `training.seq` (what architecture search derives, `speccomp.nas`)
  as a candidate scorer over (the eight context panels, one candidate), like `raven_mlp`.
- `raven_candidates`: sees the candidates only (each candidate with the mean of all candidates):
  the shortcut probe; on a bias-free answer set it cannot beat chance by much.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from speccomp.core.models import ACTIVATIONS, EnsembleLinear, EnsembleModel, ModelSpec, Seq, register_model

N_CONTEXT = 8
ROW_PAIRS = ((0, 1), (0, 2), (1, 2))


class _Head(torch.nn.Module):
    """An ensemble MLP n_in -> widths... -> 1 (activation and dropout after each hidden layer)."""

    def __init__(self, owner: EnsembleModel, n_members: int, n_in: int, widths: list[int]):
        super().__init__()
        dims = [n_in, *widths, 1]
        self.layers = torch.nn.ModuleList(EnsembleLinear(n_members, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        # A bias on the score moves every candidate alike: the loss cannot see it, its gradient is
        # rounding noise, and Adam would turn that noise into steps. It is a fixed zero instead.
        last = self.layers[-1]
        del last.bias
        last.register_buffer("bias", torch.zeros(n_members, 1, 1))
        self._owner = [owner]  # not a submodule: avoids a cycle in the module tree

    def reset_member(self, s: int, gen: torch.Generator, gain: float) -> None:
        for layer in self.layers:
            layer.reset_member(s, gen, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        owner = self._owner[0]
        act = ACTIVATIONS[owner.spec.activation]
        for layer in self.layers[:-1]:
            x = owner._dropout(act(layer(x)))
        return self.layers[-1](x)


def context_candidate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(S, B, 8 + C, D) panels -> (S, B * C, 9 D): each candidate after the eight context panels.
    Any (S, N, F) -> (S, N, 1) network scores matrices through this view (e.g. a NAS supernet
    built for flat inputs); `scores_from` turns its output back into (S, B, C) scores."""
    n_members, batch, _, dim = x.shape
    n_cand = x.shape[2] - N_CONTEXT
    context = x[:, :, :N_CONTEXT].reshape(n_members, batch, 1, N_CONTEXT * dim).expand(-1, -1, n_cand, -1)
    return torch.cat([context, x[:, :, N_CONTEXT:]], dim=-1).reshape(n_members, batch * n_cand, -1)


def scores_from(out: torch.Tensor, n_candidates: int) -> torch.Tensor:
    """(S, B * C, 1) per-candidate outputs -> (S, B, C) scores."""
    return out.reshape(out.shape[0], -1, n_candidates)


@register_model("raven_mlp", domain="matrices")
class CandidateScorer(EnsembleModel):
    """score_c = MLP([context panels 1..8, candidate c]) with `hidden_dims` hidden layers."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(spec, n_members)
        self.head = _Head(self, n_members, (N_CONTEXT + 1) * spec.n_bins, list(spec.hidden_dims))

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        self.head.reset_member(s, gen, self._gain())

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return scores_from(self.head(context_candidate_pairs(x)), x.shape[2] - N_CONTEXT)


@register_model("raven_wren", domain="matrices")
class RelationalScorer(EnsembleModel):
    """WReN-like: e = act(W panel); row summary = sum over the row's ordered pairs (i<j) of
    g([e_i, e_j, place of the pair]); score_c = head([row 1, row 2, row 3 completed by c]).
    Widths: hidden_dims[0] for e and g, hidden_dims[1:] (or hidden_dims[0]) for the head."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(spec, n_members)
        width = spec.hidden_dims[0]
        self.embed = EnsembleLinear(n_members, spec.n_bins, width)
        self.g1 = EnsembleLinear(n_members, 2 * width + len(ROW_PAIRS), width)
        self.g2 = EnsembleLinear(n_members, width, width)
        self.head = _Head(self, n_members, 3 * width, list(spec.hidden_dims[1:]) or [width])
        self.register_buffer("place", torch.eye(len(ROW_PAIRS)), persistent=False)

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        for layer in (self.embed, self.g1, self.g2):
            layer.reset_member(s, gen, self._gain())
        self.head.reset_member(s, gen, self._gain())

    def _row(self, panels: torch.Tensor) -> torch.Tensor:
        """(S, M, 3, E) rows of embedded panels -> (S, M, E) summed pair relations."""
        act = ACTIVATIONS[self.spec.activation]
        n_members, m = panels.shape[:2]
        pairs = torch.stack(
            [torch.cat([panels[:, :, i], panels[:, :, j], self.place[k].expand(n_members, m, -1)], dim=-1)
             for k, (i, j) in enumerate(ROW_PAIRS)],
            dim=2,
        )  # (S, M, 3, 2E+3)
        h = act(self.g2(act(self.g1(pairs.reshape(n_members, m * len(ROW_PAIRS), -1)))))
        return h.reshape(n_members, m, len(ROW_PAIRS), -1).sum(2)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        act = ACTIVATIONS[self.spec.activation]
        n_members, batch, n_panels, dim = x.shape
        n_cand = n_panels - N_CONTEXT
        e = act(self.embed(x.reshape(n_members, batch * n_panels, dim))).reshape(n_members, batch, n_panels, -1)
        rows12 = self._row(e[:, :, :6].reshape(n_members, batch * 2, 3, -1)).reshape(n_members, batch, 1, -1)
        third = torch.cat([e[:, :, 6:8].unsqueeze(2).expand(-1, -1, n_cand, -1, -1), e[:, :, N_CONTEXT:].unsqueeze(3)], dim=3)
        row3 = self._row(third.reshape(n_members, batch * n_cand, 3, -1)).reshape(n_members, batch, n_cand, -1)
        rows = torch.cat([rows12.expand(-1, -1, n_cand, -1), row3], dim=-1)  # (S, B, C, 3E)
        return self.head(rows.reshape(n_members, batch * n_cand, -1)).reshape(n_members, batch, n_cand)


@register_model("raven_seq", domain="matrices")
class SeqScorer(Seq):
    """score_c = seq([context panels 1..8, candidate c]): the `seq` model on the (9 D,) view of
    `context_candidate_pairs` with one output, so the NAS supernet's one-hot path computes it."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(replace(spec, n_bins=(N_CONTEXT + 1) * spec.n_bins, n_outputs=1), n_members)
        self.spec = spec  # the spec as given (checkpoints rebuild from it)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return scores_from(super().body(context_candidate_pairs(x)), x.shape[2] - N_CONTEXT)


@register_model("raven_candidates", domain="matrices")
class CandidatesOnly(EnsembleModel):
    """score_c = MLP([candidate c, mean of the candidates]): never sees the context panels."""

    def __init__(self, spec: ModelSpec, n_members: int):
        super().__init__(spec, n_members)
        self.head = _Head(self, n_members, 2 * spec.n_bins, list(spec.hidden_dims))

    def reset_member(self, s: int, gen: torch.Generator) -> None:
        self.head.reset_member(s, gen, self._gain())

    def body(self, x: torch.Tensor) -> torch.Tensor:
        n_members, batch = x.shape[:2]
        cands = x[:, :, N_CONTEXT:]
        n_cand = cands.shape[2]
        pooled = cands.mean(dim=2, keepdim=True).expand_as(cands)
        inp = torch.cat([cands, pooled], dim=-1).reshape(n_members, batch * n_cand, -1)
        return self.head(inp).reshape(n_members, batch, n_cand)
