"""Architecture search (speccomp.nas): supernet = derived model, Gumbel sampling, straight-through
gradients, a planted task, determinism, and every bad search-space input."""

from __future__ import annotations

import random

import pytest
import torch
import yaml

from speccomp.core.config import ConfigError, load_config
from speccomp.core.models import ModelSpec, build_model
from speccomp.core.seeding import torch_generator
from speccomp.core.training import train
from speccomp.nas import (
    Supernet,
    architecture_probabilities,
    choices_of,
    flatten_alpha,
    inherit_weights,
    init_alpha,
    load_space,
    mean_entropy,
    one_hot_weights,
    preset_of,
    run_search,
    sample_weights,
    space_from_dict,
    temperature,
    unflatten_alpha,
    write_preset,
)
from speccomp.nas.space import SearchSettings, SpaceFile
from tests.conftest import TINY_OVERRIDES

SPACE_FILE = "configs/nas/spectra.yaml"
N_BINS = 128


@pytest.fixture(scope="module")
def space():
    return load_space(SPACE_FILE)


def _spectra(n: int, n_bins: int = N_BINS, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, n_bins, generator=torch.Generator().manual_seed(seed)) + 0.2


def test_default_space_file_is_complete(space):
    with open(SPACE_FILE) as fh:  # every key of the schema is spelled out in the file
        raw = yaml.safe_load(fh)
    assert set(raw) == set(SpaceFile.model_fields) and set(raw["search"]) == set(SearchSettings.model_fields)
    names = space.decision_names
    assert names[0] == "input" and {"conv1", "conv1_act", "dense2", "dense2_act"} <= set(names)
    assert space.search.tau_max == 10 and space.search.tau_min == 0.1
    assert space.search.architecture_learning_rate == 0.1 and space.search.architecture_weight_decay == 0
    assert space.search == SearchSettings(), "the file states the schema's search defaults"
    assert "zero" not in space.decision("dense1").options


def test_one_hot_supernet_equals_the_standalone_derived_model(space, tmp_path):
    """With α one-hot, the supernet computes what the `seq` model built from the derived preset
    computes, weights copied in, for random architectures of the default space."""
    net = Supernet(space, N_BINS, 20, torch.Generator().manual_seed(0))
    x = _spectra(64)
    net.fit_inputs(x)
    rng = random.Random(0)
    picked = [{d.name: d.options[-1] if i == 0 else rng.choice(d.options) for d in space.decisions} for i in range(8)]
    for k, choices in enumerate(picked):
        preset = preset_of(space, choices)
        cfg = load_config(overrides=[f"physics.n_bins={N_BINS}"], presets=[write_preset(preset, tmp_path / f"a{k}.yaml")])
        assert cfg.training.model_type == "seq"
        model = build_model(ModelSpec.from_training(cfg.training, N_BINS, 20), [torch_generator(9, "init")]).eval()
        inherit_weights(net, choices, model)
        with torch.no_grad():
            expected = model(x[:16].unsqueeze(0))[0]
            got = net(x[:16], one_hot_weights(space, choices))
            alpha = {name: 50.0 * w for name, w in one_hot_weights(space, choices).items()}  # argmax = choices
            sampled = net.sample_forward(x[:16], alpha, 1.0, True, torch.Generator().manual_seed(1))
        derived = choices_of(space, alpha)  # the argmax, except that zero is never derived
        assert {k: v for k, v in derived.items() if choices[k] != "zero"} == {k: v for k, v in choices.items() if v != "zero"}
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sampled, expected, rtol=1e-4, atol=1e-5)


def test_hard_sampling_frequencies_match_softmax():
    """Hard Gumbel samples pick option k with probability softmax(α)_k (chi-square at the 99.9 %
    level, fixed seed), at the highest and the lowest temperature; soft samples sum to one."""
    alpha = {"a": torch.tensor([1.0, 0.0, -1.0, 0.5]), "b": torch.tensor([2.0, -2.0])}
    probs = architecture_probabilities(alpha)
    critical = {4: 16.27, 2: 10.83}  # chi-square 99.9 % quantiles for df = 3 and df = 1
    gen = torch.Generator().manual_seed(0)
    n = 2000
    for tau in (10.0, 0.1):
        draws = [sample_weights(alpha, tau, True, gen) for _ in range(n)]
        for name, p in probs.items():
            w = torch.stack([d[name] for d in draws])
            assert torch.equal(w.sum(1), torch.ones(n)) and torch.equal(w.max(1).values, torch.ones(n))
            observed, expected = w.sum(0), n * p
            assert float(((observed - expected) ** 2 / expected).sum()) < critical[len(p)], (tau, name, observed)
    skewed = torch.tensor([3.0, 0.0, 0.0, 0.0])  # and a wrong distribution is told apart
    w = torch.stack([sample_weights({"a": skewed}, 1.0, True, gen)["a"] for _ in range(500)])
    assert float(((w.sum(0) - 500 * probs["a"]) ** 2 / (500 * probs["a"])).sum()) > critical[4]
    soft = torch.stack([sample_weights(alpha, 1.0, False, gen)["a"] for _ in range(100)])
    assert torch.allclose(soft.sum(1), torch.ones(100)) and bool((soft > 0).all())


def test_straight_through_gradients_reach_every_logit(space):
    """A hard sample's forward value is one path, yet the loss gradient reaches every α entry."""
    net = Supernet(space, N_BINS, 20, torch.Generator().manual_seed(0))
    x = _spectra(32)
    net.fit_inputs(x)
    alpha = init_alpha(space)
    out = net.sample_forward(x, alpha, 1.0, True, torch.Generator().manual_seed(3))
    grads = torch.autograd.grad((out**2).mean(), list(alpha.values()))
    for d, g in zip(space.decisions, grads, strict=True):
        if len(d.options) > 1:
            assert torch.all(g != 0), d.name
            assert abs(float(g.sum())) < 1e-6  # softmax gradients sum to zero per decision


def test_alpha_round_trips_and_entropy(space):
    alpha = {k: torch.randn(v.shape) for k, v in init_alpha(space).items()}
    back = unflatten_alpha(space, flatten_alpha(space, alpha))
    assert all(torch.equal(back[k], alpha[k]) for k in alpha)
    uniform = mean_entropy(init_alpha(space, requires_grad=False))
    expected = sum(torch.log(torch.tensor(float(len(d.options)))) for d in space.decisions) / len(space.decisions)
    assert torch.isclose(uniform, expected)
    assert mean_entropy(alpha) < uniform
    assert temperature(0, 100, 10, 0.1) == 10 and temperature(99, 100, 10, 0.1) == pytest.approx(0.1)
    assert temperature(99, 100, 10, 0.1, "exponential") == pytest.approx(0.1)


def _planted(n: int, seed: int, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(n, weights.shape[0], generator=torch.Generator().manual_seed(seed))
    return torch.exp(z), z @ weights


def test_planted_task_is_found_at_the_default_search_settings_for_three_seeds_of_three():
    """The positive control, at the project's search defaults (nothing tuned: 1000 iterations,
    α step 0.1, the warm-up): targets linear in the log-spectrum, so only the log transform lets a
    linear read-out fit them exactly. The search puts p > 0.6 on `log` for each of three seeds."""
    weights = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)) / 4
    train_xy, val_xy = _planted(512, 1, weights), _planted(256, 2, weights)
    space = space_from_dict({
        "input_transforms": ["none", "log"], "activations": ["relu"],
        "conv": {"positions": 0}, "dense": {"positions": 1, "ops": ["identity", "dense4"]},
    })
    assert space.search == SearchSettings()  # the defaults, as the project's space files state them
    for seed in (0, 1, 2):
        result = run_search(space, train_xy, val_xy, seed)
        assert result.choices["input"] == "log", (seed, result.probabilities())
        assert result.probabilities()["input"]["log"] > 0.6


def test_search_is_deterministic_per_seed():
    space = space_from_dict({"conv": {"positions": 1, "channels": 2}, "dense": {"positions": 1},
                             "search": {"architecture_search_iterations": 8, "batch_size": 16,
                                        "architecture_learning_rate": 0.05}})
    x = _spectra(96, 64)
    y = torch.rand(96, 4, generator=torch.Generator().manual_seed(5))
    a = run_search(space, (x[:64], y[:64]), (x[64:], y[64:]), 7)
    b = run_search(space, (x[:64], y[:64]), (x[64:], y[64:]), 7)
    c = run_search(space, (x[:64], y[:64]), (x[64:], y[64:]), 8)
    assert torch.equal(a.alpha_trajectory, b.alpha_trajectory)
    assert torch.equal(a.history.nan_to_num(-1.0), b.history.nan_to_num(-1.0))
    assert not torch.equal(a.alpha_trajectory, c.alpha_trajectory)
    assert not torch.equal(a.alpha_trajectory[0], a.alpha_trajectory[-1])


def test_warmup_trains_the_weights_only_and_the_alpha_steps_are_counted():
    """round(0.3 · 10) = 3 warm-up iterations: α stays at zero, no validation loss and no α gradient
    exist for them; from the fourth on α moves, every α gradient is recorded, and the budget
    counts one gradient step per weight step and `alpha_samples` per α step."""
    space = space_from_dict({"conv": {"positions": 0}, "dense": {"positions": 1, "ops": ["dense8", "identity"]},
                             "search": {"architecture_search_iterations": 10, "batch_size": 16,
                                        "warmup_fraction": 0.3, "alpha_samples": 2}})
    x = _spectra(96, 32)
    y = torch.rand(96, 2, generator=torch.Generator().manual_seed(5))
    r = run_search(space, (x[:64], y[:64]), (x[64:], y[64:]), 3)
    assert r.warmup_iterations == 3
    assert torch.equal(r.alpha_trajectory[:4], torch.zeros(4, space.n_logits))
    assert not torch.equal(r.alpha_trajectory[4], r.alpha_trajectory[3])
    assert torch.isnan(r.history[:3, 2]).all() and torch.isfinite(r.history[3:, 2]).all()
    assert torch.isnan(r.alpha_gradients[:3]).all() and torch.isfinite(r.alpha_gradients[3:]).all()
    assert r.gradient_steps == 10 + 7 * 2
    taus = r.history[:, 0]  # τ is tau_max through the warm-up, then anneals to tau_min over the α steps
    assert torch.all(taus[:4] == 10.0) and taus[-1].item() == pytest.approx(0.1)


def test_gradient_snr_and_the_decision_table_read_what_they_say():
    from speccomp.nas import decision_table, gradient_snr

    signal = torch.tensor([[1.0, -1.0], [1.2, -1.2], [0.8, -0.8], [float("nan"), float("nan")]])
    snr = gradient_snr(signal)
    assert snr[0].item() == pytest.approx(1.0 / 0.2) and snr[1].item() == pytest.approx(1.0 / 0.2)
    space = space_from_dict({"input_transforms": ["none", "log"], "activations": ["relu", "tanh", "gelu"],
                             "conv": {"positions": 0}, "dense": {"positions": 1, "ops": ["dense8", "identity"]}})
    alpha = {"input": torch.tensor([3.0, 0.0]), "dense1": torch.zeros(2), "dense1_act": torch.tensor([0.0, 0.1, 0.0])}
    rows = {r["decision"]: r for r in decision_table(space, alpha)}
    assert rows["input"]["choice"] == "none" and rows["input"]["decided"]
    assert rows["input"]["p"] == pytest.approx(torch.softmax(torch.tensor([3.0, 0.0]), 0)[0].item())
    assert rows["dense1"]["entropy_ratio"] == pytest.approx(1.0) and not rows["dense1"]["decided"]
    assert rows["dense1_act"]["choice"] == "tanh" and rows["dense1_act"]["runner_up"] in ("relu", "gelu")


def test_derived_preset_trains_through_the_normal_loop(space, tmp_path):
    choices = {d.name: d.options[0] for d in space.decisions}
    path = write_preset(preset_of(space, choices), tmp_path / "arch.yaml", header="test")
    cfg = load_config(overrides=[*TINY_OVERRIDES, "training.epochs=1"], presets=[path])
    from speccomp.spectra.data import generate_datasets

    result = train(cfg, generate_datasets(cfg, 1), [1, 2])
    assert result.spec.model_type == "seq" and len(result.spec.seq["layers"]) == 4
    assert all(torch.isfinite(torch.tensor(r.final["test/mse"])) for r in result.seeds)


BAD_SPACES = [
    ({"dense": {"ops": []}}, "dense.ops", "empty candidate list"),
    ({"conv": {"ops": ["conv5", "maxpool"]}}, "conv.ops", "unknown op 'maxpool'"),
    ({"dense": {"ops": ["dense64", "conv3"]}}, "dense.ops", "unknown op 'conv3'"),
    ({"search": {"tau_min": 20.0}}, "search.tau_min", "must be <= tau_max"),
    ({"search": {"tau_min": 0}}, "search.tau_min", "greater than 0"),
    ({"search": {"tau_max": -1}}, "search.tau_max", "greater than 0"),
    ({"search": {"architecture_search_iterations": 0}}, "search.architecture_search_iterations", "greater than 0"),
    ({"search": {"architecture_learning_rate": 0}}, "search.architecture_learning_rate", "greater than 0"),
    ({"search": {"architecture_learning_rate": "fast"}}, "search.architecture_learning_rate", "valid number"),
    ({"search": {"architecture_learning_rate": float("nan")}}, "search.architecture_learning_rate", "finite"),
    ({"conv": {"positions": 0}, "dense": {"positions": 0}}, "dense.positions", "leaves no layer"),
    ({"input_transforms": ["log", "sqrt"]}, "input_transforms.1", "'none', 'log'"),
    ({"searhc": {}}, "searhc", "unknown key"),
]


@pytest.mark.parametrize(("raw", "key", "text"), BAD_SPACES, ids=[b[1] + ":" + b[2][:12] for b in BAD_SPACES])
def test_bad_space_is_one_line_naming_file_and_key(tmp_path, raw, key, text):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: {key}: ") and text in message, message


def test_pooling_that_leaves_no_bins_is_refused(space):
    with pytest.raises(ConfigError, match=r"spectra.yaml: conv.positions: 2 pooling stages of 4 leave no bins"):
        space.check_bins(15)
    with pytest.raises(ConfigError, match="architecture_learning_rate: Input should be greater than 0"):
        space.with_search(architecture_learning_rate=-0.1)


def test_derivation_leaves_zero_out_as_darts():
    space = space_from_dict({"conv": {"positions": 0}, "dense": {"positions": 1,
                                                                "ops": ["dense32", "dense64", "identity", "zero"]}})
    alpha = {k: v.detach().clone() for k, v in init_alpha(space).items()}
    options = space.decision("dense1").options
    alpha["dense1"][options.index("zero")] = 5.0
    alpha["dense1"][options.index("dense64")] = 1.0
    assert choices_of(space, alpha)["dense1"] == "dense64"
    assert architecture_probabilities(alpha)["dense1"][options.index("zero")] > 0.9
    only_zero = space_from_dict({"conv": {"positions": 0}, "dense": {"positions": 1, "ops": ["zero"]}})
    assert choices_of(only_zero, init_alpha(only_zero))["dense1"] == "zero"


SEQ_ERRORS = [
    ("training.seq.layers=[{op: conv, width: 4}]", "training.seq.layers.0.kernel: a conv layer needs an odd kernel"),
    ("training.seq.layers=[{op: dense}]", "training.seq.layers.0.width: a dense layer needs width"),
    ("training.seq.layers=[{op: dense, width: 8}, {op: pool}]", "training.seq.layers.1.op: pool after a dense layer"),
    ("training.seq.layers=[{op: identity, width: 8}]", "training.seq.layers.0.op: a identity layer takes no width"),
    ("training.seq.layers=[{op: pool}, {op: pool}, {op: pool}, {op: pool}, {op: pool}, {op: pool}, {op: pool}, {op: pool}]",
     "training.seq.layers: the conv and pool layers leave no bins of physics.n_bins=128"),
]


@pytest.mark.parametrize(("override", "text"), SEQ_ERRORS, ids=[t.split(":")[0] for _, t in SEQ_ERRORS])
def test_bad_seq_layers_are_one_line_naming_the_key(override, text):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[*TINY_OVERRIDES, "training.model_type=seq", override])
    assert text in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_snas_mixes_every_path_and_differs_from_gdas():
    space = space_from_dict({"conv": {"positions": 0}, "dense": {"positions": 1},
                             "search": {"architecture_search_iterations": 6, "batch_size": 16, "sampling": "snas"}})
    x = _spectra(96, 32)
    y = torch.rand(96, 3, generator=torch.Generator().manual_seed(5))
    w = sample_weights(init_alpha(space), 0.5, space.search.hard, torch.Generator().manual_seed(0))
    assert all(bool((v > 0).all()) and not bool((v == 1).any()) for v in w.values())  # a mixture, not a path
    snas = run_search(space, (x[:64], y[:64]), (x[64:], y[64:]), 3)
    gdas = run_search(space.with_search(sampling="gdas"), (x[:64], y[:64]), (x[64:], y[64:]), 3)
    warm = snas.warmup_iterations
    assert torch.isfinite(snas.history[warm:]).all() and torch.isnan(snas.history[:warm, 2]).all()
    assert not torch.equal(snas.alpha_trajectory, gdas.alpha_trajectory)
