"""The `pair` split setting: train on each of two components alone (and the bare continuum), test
on the two together. Used by the study's named setting `pair` and by the meta-learner's tasks."""

from __future__ import annotations


def parse_pair(value: str) -> tuple[str, str]:
    """'comp10+comp4' -> ('comp10', 'comp4'); ValueError for anything else."""
    parts = [p.strip() for p in str(value).split("+")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ValueError(f"a pair is two different labels joined by '+', e.g. 'comp10+comp4', got {value!r}")
    return parts[0], parts[1]


def pair_overrides(value: str) -> list[str]:
    """Config overrides that make an experiment the compositional task of a pair 'a+b'."""
    a, b = parse_pair(value)
    return [
        "data.splits.train.distribution.combinations="
        f"[{{weight: 1.0, components: []}}, {{weight: 1.0, components: [{a}]}}, {{weight: 1.0, components: [{b}]}}]",
        f"data.splits.test.distribution.combinations=[{{weight: 1.0, components: [{a}, {b}]}}]",
        f"data.splits.train.combined_components=[{a}, {b}]",
        f"analysis.tracked=[{a}, {b}]",
    ]
