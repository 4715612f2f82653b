"""Splits: exact reproducibility from the data seed, independence of splits, combined_fraction,
the in-distribution validation split, custom samplers named by import path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speccomp.core.config import ConfigError, load_config
from speccomp.spectra.data import SplitData, generate_datasets, generate_split, load_datasets, save_datasets

SMALL = ["physics.n_bins=64", "data.splits.train.n_samples=96", "data.splits.test.n_samples=32", "data.validation.n_samples=48"]
EXTRA_SPLIT = (
    "data.splits.extra={n_samples: 16, distribution: {type: component_combinations, "
    "combinations: [{weight: 1, components: [comp1]}, {weight: 2, components: [comp2, comp3]}]}}"
)
FIELDS = ("spectra", "abundances", "present", "temperature_k", "noise_sigma")


def my_sampler(rng: np.random.Generator, n_samples: int, labels: list[str]) -> np.ndarray:
    """A custom sampler for the tests: comp1 always, in [0.2, 0.8]; comp7 in half the samples."""
    out = np.zeros((n_samples, len(labels)))
    out[:, labels.index("comp1")] = rng.uniform(0.2, 0.8, size=n_samples)
    half = rng.random(n_samples) < 0.5
    out[half, labels.index("comp7")] = rng.uniform(0.0, 1.0, size=int(half.sum()))
    return out


def bad_shape_sampler(rng: np.random.Generator, n_samples: int, labels: list[str]) -> np.ndarray:
    return np.zeros((n_samples, 3))


SAMPLER_PATH = f"{my_sampler.__module__}:my_sampler"


def same(a: SplitData, b: SplitData) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def combos(split: SplitData) -> set[tuple[str, ...]]:
    return {tuple(lab for lab, p in zip(split.labels, row, strict=True) if p) for row in split.present.tolist()}


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, SMALL)


@pytest.fixture(scope="module")
def data42(cfg):
    return generate_datasets(cfg, 42)


def test_splits_have_the_configured_sizes_and_dtypes(data42):
    assert {n: len(d) for n, d in data42.items()} == {"train": 96, "test": 32, "val": 48}
    for d in data42.values():
        assert d.spectra.dtype == torch.float32 and d.abundances.dtype == torch.float32
        assert d.spectra.shape[1] == 64 and d.abundances.shape[1] == 20
        assert d.present.dtype == torch.bool
        assert torch.equal(d.present, d.abundances != 0)  # uniform(0, 1) is never exactly 0 here


def test_draws_stay_in_their_ranges(data42):
    for d in data42.values():
        assert float(d.temperature_k.min()) >= 3000 and float(d.temperature_k.max()) <= 7000
        assert float(d.noise_sigma.min()) >= 0.01 and float(d.noise_sigma.max()) <= 0.15
        assert float(d.abundances.min()) >= 0 and float(d.abundances.max()) <= 1


def test_splits_carry_their_distributions(data42):
    assert combos(data42["train"]) == {(), ("comp4",), ("comp10",)}
    assert combos(data42["test"]) == {("comp4", "comp10")}


def test_same_data_seed_gives_identical_tensors(cfg, data42):
    again = generate_datasets(cfg, 42)
    for name in data42:
        assert same(data42[name], again[name]), name
        assert data42[name].digest == again[name].digest


def test_different_data_seed_gives_different_tensors(cfg, data42):
    other = generate_datasets(cfg, 43)
    for name in data42:
        for f in FIELDS[:2] + FIELDS[3:]:
            assert not torch.equal(getattr(data42[name], f), getattr(other[name], f)), (name, f)
        assert data42[name].digest != other[name].digest


def test_adding_a_split_leaves_the_others_bit_identical(data42):
    cfg = load_config(None, [*SMALL, EXTRA_SPLIT])
    more = generate_datasets(cfg, 42)
    assert set(more) == {"train", "test", "val", "extra"}
    for name in data42:
        assert same(data42[name], more[name]), name
    assert len(more["extra"]) == 16 and combos(more["extra"]) == {("comp1",), ("comp2", "comp3")}


def test_resizing_one_split_leaves_the_others_unchanged(data42):
    cfg = load_config(None, [*SMALL, "data.splits.train.n_samples=40", "training.batch_size=40"])
    resized = generate_datasets(cfg, 42)
    assert len(resized["train"]) == 40
    assert same(resized["test"], data42["test"]) and same(resized["val"], data42["val"])


def test_validation_split_is_in_distribution_but_not_train():
    cfg = load_config(None, [*SMALL, "data.validation.n_samples=96"])  # as many as train
    data = generate_datasets(cfg, 42)
    train, val = data["train"], data["val"]
    assert len(val) == len(train) == 96
    assert combos(val) == combos(train)  # the same component sets, drawn from its own stream
    for f in FIELDS:
        assert not torch.equal(getattr(train, f), getattr(val, f)), f
    # no spectrum is shared between the two
    assert not set(train.temperature_k.tolist()) & set(val.temperature_k.tolist())


def test_identical_split_configs_under_different_names_draw_different_samples():
    twin = EXTRA_SPLIT.replace("data.splits.extra=", "data.splits.twin=")
    cfg = load_config(None, [*SMALL, EXTRA_SPLIT, twin])
    data = generate_datasets(cfg, 42)
    assert cfg.data.splits["extra"] == cfg.data.splits["twin"]
    assert not torch.equal(data["extra"].temperature_k, data["twin"].temperature_k)
    assert not torch.equal(data["extra"].spectra, data["twin"].spectra)


def test_validation_split_can_be_turned_off(cfg):
    off = load_config(None, [*SMALL, "data.validation.n_samples=0"])
    assert set(generate_datasets(off, 42)) == {"train", "test"}


@pytest.mark.parametrize(("fraction", "n"), [(0.1, 96), (0.25, 190), (1.0, 20)])
def test_combined_fraction_adds_exactly_round_f_n_combined_samples(fraction, n):
    base = [*SMALL, f"data.splits.train.n_samples={n}", "training.batch_size=16"]
    strict = load_config(None, base)
    mixed = load_config(
        None, [*base, f"data.splits.train.combined_fraction={fraction}", "data.splits.train.combined_components=[comp10, comp4]"]
    )
    a = generate_split(strict.physics, strict.data.splits["train"], "train", 5)
    b = generate_split(mixed.physics, mixed.data.splits["train"], "train", 5)
    i10, i4 = b.label_index("comp10"), b.label_index("comp4")
    both = b.present[:, i10] & b.present[:, i4]
    assert int(both.sum()) == round(fraction * n)
    assert int((a.present[:, i10] & a.present[:, i4]).sum()) == 0
    # combined samples carry exactly the combination, with fresh abundances in range
    assert torch.equal(b.present[both].sum(dim=1), torch.full((int(both.sum()),), 2))
    assert bool((b.abundances[both][:, [i10, i4]] > 0).all())
    # temperature and noise level are the same for every sample; the other samples are untouched
    assert torch.equal(a.temperature_k, b.temperature_k) and torch.equal(a.noise_sigma, b.noise_sigma)
    rest = ~both
    assert torch.equal(a.abundances[rest], b.abundances[rest]) and torch.equal(a.present[rest], b.present[rest])
    assert torch.equal(a.spectra[rest], b.spectra[rest])
    assert not torch.equal(a.spectra[both], b.spectra[both])


def test_per_split_ranges_override_the_physics_ranges():
    cfg = load_config(
        None,
        [*SMALL, "data.splits.test.abundance_range=[0.5, 0.6]", "data.splits.test.temperature_range=[4000, 4100]",
         "data.splits.test.noise_range=[0.02, 0.03]"],
    )
    test = generate_datasets(cfg, 1)["test"]
    nz = test.abundances[test.present]
    assert float(nz.min()) >= 0.5 and float(nz.max()) <= 0.6
    assert float(test.temperature_k.min()) >= 4000 and float(test.temperature_k.max()) <= 4100
    assert float(test.noise_sigma.min()) >= 0.02 and float(test.noise_sigma.max()) <= 0.03


def test_custom_sampler_named_by_import_path():
    cfg = load_config(None, [*SMALL, f"data.splits.train.distribution={{type: custom, sampler: '{SAMPLER_PATH}'}}"])
    train = generate_datasets(cfg, 42)["train"]
    i1, i7 = train.label_index("comp1"), train.label_index("comp7")
    assert bool((train.abundances[:, i1] >= 0.2).all()) and bool((train.abundances[:, i1] <= 0.8).all())
    assert 10 < int(train.present[:, i7].sum()) < 86
    others = [i for i in range(20) if i not in (i1, i7)]
    assert not bool(train.present[:, others].any())
    assert torch.equal(train.present, train.abundances != 0)
    # reproducible and drawn from the split's own generator
    again = generate_datasets(cfg, 42)["train"]
    assert same(train, again)
    assert not torch.equal(train.abundances, generate_datasets(cfg, 41)["train"].abundances)


def test_custom_sampler_in_a_yaml_file(edited_config_dir):
    def edit(raw):
        raw["splits"]["train"]["distribution"] = {"type": "custom", "sampler": SAMPLER_PATH}

    folder = edited_config_dir("data_distribution.yaml", edit)
    cfg = load_config(folder, SMALL[:2])
    assert cfg.data.splits["train"].distribution.sampler == SAMPLER_PATH


def test_custom_sampler_with_wrong_shape_fails_clearly():
    """Refused at load: the sampler is called once with two samples before any data is drawn."""
    with pytest.raises(ConfigError, match=r"data.splits.train.distribution.sampler: .*bad_shape_sampler returned shape"):
        load_config(None, [*SMALL, f"data.splits.train.distribution={{type: custom, sampler: '{__name__}:bad_shape_sampler'}}"])


def test_custom_sampler_that_is_not_callable_is_a_config_error():
    with pytest.raises(ConfigError, match="SAMPLER_PATH"):
        load_config(None, [*SMALL, f"data.splits.train.distribution={{type: custom, sampler: '{__name__}:SAMPLER_PATH'}}"])


def test_save_and_load_round_trip(tmp_path, data42):
    folder = save_datasets(data42, tmp_path / "data")
    for name, d in data42.items():
        assert torch.equal(torch.load(folder / f"{name}_spectra.pt", weights_only=True), d.spectra)
        assert torch.equal(torch.load(folder / f"{name}_abundances.pt", weights_only=True), d.abundances)
    back = load_datasets(folder)
    assert set(back) == set(data42)
    for name in data42:
        assert same(back[name], data42[name]) and back[name].digest == data42[name].digest
        assert back[name].labels == data42[name].labels and back[name].data_seed == 42
