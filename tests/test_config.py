"""Config loading: every bad input fails with one line naming the file and the dotted key; the
tutorial's own files load unchanged; overrides reach into lists and parse as YAML; the science
package never imports the tracking or study libraries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from speccomp.core.config import ConfigError, default_config_dir, load_config, parse_seed_list

REPO = Path(__file__).resolve().parents[1]
TUTORIAL_CONFIGS = REPO / "tests" / "data" / "tutorial_configs"  # copied unchanged from shared/reference
DEFAULT_DIR = default_config_dir()


def config_error(config_dir=None, overrides=()) -> str:
    """Load, expect a ConfigError, check it is one line and return its message."""
    with pytest.raises(ConfigError) as info:
        load_config(config_dir, list(overrides))
    msg = str(info.value)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert msg.strip() == msg and msg
    return msg


def assert_names(msg: str, file: Path | str, key: str, *words: str) -> None:
    assert str(file) in msg, f"file {file} not named in {msg!r}"
    assert key in msg, f"key {key} not named in {msg!r}"
    for word in words:
        assert word.lower() in msg.lower(), f"{word!r} not in {msg!r}"


# --------------------------------------------------------------------------------------------
# bad values (through overrides: the message names the override that set the key, else the file)
# --------------------------------------------------------------------------------------------
PHYSICS = DEFAULT_DIR / "synthetic_spectra.yaml"
DATA = DEFAULT_DIR / "data_distribution.yaml"
TRAINING = DEFAULT_DIR / "training.yaml"
ANALYSIS = DEFAULT_DIR / "analysis.yaml"
ALL_ZERO = [f"data.splits.train.distribution.combinations.{i}.weight=0" for i in range(3)]


@pytest.mark.parametrize(
    ("overrides", "file", "key", "words"),
    [
        (["data.splits.train.distribution.combinations.1.components=[comp99]"], DATA,
         "data.splits.train.distribution.combinations.1.components", ["comp99"]),
        (["data.splits.test.combined_fraction=0.5", "data.splits.test.combined_components=[compX]"], DATA,
         "data.splits.test.combined_components", ["compX"]),
        (["data.splits.train.n_samples=0"], DATA, "data.splits.train.n_samples", []),
        (["data.splits.test.n_samples=-5"], DATA, "data.splits.test.n_samples", []),
        (ALL_ZERO, DATA, "data.splits.train.distribution.combinations", ["zero"]),
        (["data.splits.train.distribution.combinations.2.weight=-1"], DATA,
         "data.splits.train.distribution.combinations.2.weight", []),
        # strength -1 with abundance 1: 1 + s*a*g reaches 0 at the line centre
        (["physics.lines.3.strength=-1.0"], PHYSICS, "physics.sampling.abundance.range", ["comp4"]),
        (["physics.sampling.abundance.range=[0.0, 2.0]"], PHYSICS, "physics.sampling.abundance.range", ["<= 0"]),
        (["data.splits.train.abundance_range=[0.0, 1.5]"], DATA, "data.splits.train.abundance_range", ["<= 0"]),
        (["physics.lines.0.strength=1.5"], PHYSICS, "physics.lines.0.strength", []),
        (["physics.wavelength_min=1200"], PHYSICS, "physics.wavelength_min", ["wavelength_max"]),
        (["physics.wavelength_min=1500"], PHYSICS, "physics.wavelength_min", ["wavelength_max"]),
        (["physics.lines.3.width=0"], PHYSICS, "physics.lines.3.width", []),
        (["physics.lines.3.width=-2.5"], PHYSICS, "physics.lines.3.width", []),
        (["training.model_type=transformer"], TRAINING, "training.model_type", ["transformer", "mlp", "cnn", "linear"]),
        (["training.input_transform=sqrt"], TRAINING, "training.input_transform", ["log+standardize"]),
        (["training.hidden_dims=[]"], TRAINING, "training.hidden_dims", []),
        (["training.hidden_dims=[64, 1.5]"], TRAINING, "training.hidden_dims", ["integer"]),
        (["training.hidden_dims=[abc]"], TRAINING, "training.hidden_dims", ["integer"]),
        (["training.hidden_dims=[0]"], TRAINING, "training.hidden_dims", []),
        (["training.epochs=0"], TRAINING, "training.epochs", []),
        (["analysis.tracked=[comp1]"], ANALYSIS, "analysis.tracked", ["comp1", "test"]),
        (["analysis.plot_config.x_component=3"], ANALYSIS, "analysis.tracked", ["comp3", "test"]),
        (["analysis.tracked=[comp77]"], ANALYSIS, "analysis.tracked", ["comp77"]),
        (["physics.n_components=19"], PHYSICS, "physics.n_components", ["20"]),
        (["training.n_bins=512"], TRAINING, "training.n_bins", ["physics.n_bins"]),
        (["training.model_type=cnn", "physics.n_bins=4"], TRAINING, "training.cnn.channels", ["pooling", "n_bins=4"]),
    ],
)
def test_bad_value_gives_one_line_naming_file_and_key(overrides, file, key, words):
    msg = config_error(None, overrides)
    blamed = [o for o in overrides if msg.startswith(f"override {o}: ")]
    assert_names(msg, f"override {blamed[0]}" if blamed else file, key, *words)


def test_a_bad_value_from_an_override_names_the_override_not_the_file():
    msg = config_error(None, ["training.epochs=0"])
    assert msg.startswith("override training.epochs=0: training.epochs:"), msg
    assert "training.yaml" not in msg


def test_unknown_override_key_is_refused_with_the_allowed_keys():
    msg = config_error(None, ["training.epochz=3"])
    assert "training.epochz" in msg and "epochs" in msg
    msg = config_error(None, ["physics.lines.2.widht=3"])
    assert "widht" in msg and "width" in msg
    msg = config_error(None, ["trainign.epochs=3"])
    assert "trainign" in msg


def test_override_index_out_of_range_is_refused():
    msg = config_error(None, ["physics.lines.20.strength=0.5"])
    assert "physics.lines.20" in msg and "0..19" in msg


# --------------------------------------------------------------------------------------------
# bad files (temp copies of configs/ with one edit)
# --------------------------------------------------------------------------------------------
def test_unknown_key_in_yaml_file(edited_config_dir):
    folder = edited_config_dir("training.yaml", lambda raw: raw.update(epochz=3))
    msg = config_error(folder)
    assert_names(msg, folder / "training.yaml", "training.epochz", "unknown key", "epochs")


def test_unknown_nested_key_in_yaml_file(edited_config_dir):
    folder = edited_config_dir("synthetic_spectra.yaml", lambda raw: raw["lines"][2].update(widht=3.0))
    msg = config_error(folder)
    assert_names(msg, folder / "synthetic_spectra.yaml", "physics.lines.2.widht", "unknown key", "width")

    folder = edited_config_dir("data_distribution.yaml", lambda raw: raw["splits"]["train"].update(n_sample=3))
    msg = config_error(folder)
    assert_names(msg, folder / "data_distribution.yaml", "data.splits.train.n_sample", "unknown key", "n_samples")


def test_unknown_component_in_yaml_file(edited_config_dir):
    def edit(raw):
        raw["splits"]["test"]["distribution"]["combinations"][0]["components"] = ["comp10", "comp40"]

    folder = edited_config_dir("data_distribution.yaml", edit)
    msg = config_error(folder)
    assert_names(msg, folder / "data_distribution.yaml", "data.splits.test.distribution.combinations.0.components", "comp40")


def test_missing_physics_file(edited_config_dir):
    folder = edited_config_dir(remove=("synthetic_spectra.yaml",))
    msg = config_error(folder)
    assert_names(msg, "config_dir", str(folder), "has no synthetic_spectra.yaml", "allowed")


def test_missing_config_folder(tmp_path):
    msg = config_error(tmp_path / "nope")
    assert str(tmp_path / "nope") in msg and "not found" in msg


def test_training_and_analysis_files_are_optional(edited_config_dir):
    folder = edited_config_dir(remove=("training.yaml", "analysis.yaml"))
    cfg = load_config(folder)
    assert cfg.training.epochs == 6 and cfg.tracked_labels == ["comp10", "comp4"]


def test_invalid_yaml(edited_config_dir):
    folder = edited_config_dir("training.yaml", lambda raw: "epochs: [1, 2\nbatch_size: 3\n")
    msg = config_error(folder)
    assert_names(msg, folder / "training.yaml", "training.yaml", "yaml", "line")


def test_yaml_that_is_not_a_mapping(edited_config_dir):
    folder = edited_config_dir("analysis.yaml", lambda raw: "- 1\n- 2\n")
    msg = config_error(folder)
    assert_names(msg, folder / "analysis.yaml", "analysis.yaml", "mapping")


def test_sampling_code_is_refused_and_points_to_custom(edited_config_dir):
    def edit(raw):
        raw["splits"]["train"]["distribution"] = {
            "type": "sampling_code",
            "code": "import os\nos.system('touch /tmp/speccomp-pwned')\n",
        }

    folder = edited_config_dir("data_distribution.yaml", edit)
    msg = config_error(folder)
    assert_names(msg, folder / "data_distribution.yaml", "data.splits.train.distribution",
                 "sampling_code", "type: custom", "package.module:function")


@pytest.mark.parametrize(
    ("sampler", "words"),
    [("no_such_pkg.mod:f", ["no_such_pkg"]), ("math:no_such_function", ["no_such_function"]), ("justaname", ["package.module:function"])],
)
def test_custom_sampler_that_cannot_be_imported(edited_config_dir, sampler, words):
    def edit(raw):
        raw["splits"]["train"]["distribution"] = {"type": "custom", "sampler": sampler}

    folder = edited_config_dir("data_distribution.yaml", edit)
    msg = config_error(folder)
    assert_names(msg, folder / "data_distribution.yaml", "data.splits.train.distribution.sampler", *words)


# --------------------------------------------------------------------------------------------
# what loads
# --------------------------------------------------------------------------------------------
def test_tutorial_config_files_load_unchanged():
    assert (TUTORIAL_CONFIGS / "synthetic_spectra.yaml").is_file(), TUTORIAL_CONFIGS
    cfg = load_config(TUTORIAL_CONFIGS)
    splits = cfg.data.resolved_splits()
    assert splits["train"].n_samples == 4096
    assert splits["test"].n_samples == 1024
    train_sets = [sorted(c.components) for c in splits["train"].distribution.combinations]
    assert train_sets == [[], ["comp10"], ["comp4"]]
    assert [sorted(c.components) for c in splits["test"].distribution.combinations] == [["comp10", "comp4"]]
    assert cfg.tracked_labels == ["comp10", "comp4"]
    phys = cfg.physics
    assert (phys.n_bins, phys.wavelength_min, phys.wavelength_max) == (1024, 300.0, 1200.0)
    assert len(phys.lines) == 20 and phys.labels == [f"comp{i}" for i in range(1, 21)]
    comp10, comp4 = phys.lines[9], phys.lines[3]
    assert (comp10.label, comp10.center, comp10.width, comp10.strength) == ("comp10", 956.0, 71.8, -0.7)
    assert (comp4.label, comp4.center, comp4.width, comp4.strength) == ("comp4", 891.0, 9.0, -0.4)
    t = cfg.training
    assert (t.model_type, t.hidden_dims, t.epochs, t.batch_size, t.learning_rate) == ("mlp", [128, 64], 6, 64, 1e-3)
    assert t.checkpoint_ratio == 0.05


def test_project_defaults_match_the_tutorial_physics_and_training():
    ours, theirs = load_config(), load_config(TUTORIAL_CONFIGS)
    assert ours.physics == theirs.physics
    assert set(ours.data.splits) == set(theirs.data.splits)
    for name, split in ours.data.splits.items():
        assert split.n_samples == theirs.data.splits[name].n_samples
        assert split.distribution == theirs.data.splits[name].distribution
        assert split.combined_fraction == 0.0  # a strict compositional split, as in the tutorial
    assert ours.tracked_labels == theirs.tracked_labels
    for key in ("model_type", "hidden_dims", "dropout_rate", "epochs", "batch_size", "learning_rate", "weight_decay"):
        assert getattr(ours.training, key) == getattr(theirs.training, key), key
    # the project adds an in-distribution validation split drawn like train
    assert ours.data.resolved_splits()["val"].distribution == ours.data.splits["train"].distribution


def test_override_into_a_list_changes_only_that_item():
    base = load_config()
    cfg = load_config(None, ["physics.lines.3.strength=0.5"])
    assert cfg.physics.lines[3].strength == 0.5
    assert base.physics.lines[3].strength == -0.4
    assert [ln for i, ln in enumerate(cfg.physics.lines) if i != 3] == [ln for i, ln in enumerate(base.physics.lines) if i != 3]


def test_override_values_parse_as_yaml_types():
    cfg = load_config(
        None,
        [
            "training.epochs=3",
            "training.learning_rate=2e-3",
            "training.hidden_dims=[16, 8]",
            "training.activation=gelu",
            "analysis.tracked=[comp4]",
            "physics.sampling.temperature.range=[4000, 5000]",
        ],
    )
    assert cfg.training.epochs == 3 and isinstance(cfg.training.epochs, int)
    assert cfg.training.learning_rate == pytest.approx(2e-3)
    assert cfg.training.hidden_dims == [16, 8]
    assert cfg.training.activation == "gelu"
    assert cfg.tracked_labels == ["comp4"]
    assert tuple(cfg.physics.sampling.temperature.range) == (4000.0, 5000.0)


def test_the_oracle_turned_off_as_yaml_reads_it(tmp_path):
    """YAML reads an unquoted `off` as false: the override and the file both mean `off`, and the
    resolved config writes it back as the word."""
    import shutil

    assert load_config(None, ["analysis.oracle=off"]).analysis.oracle == "off"
    assert load_config(None, ["analysis.oracle='off'"]).analysis.oracle == "off"
    (tmp_path / "configs").mkdir()
    for name in ("synthetic_spectra.yaml", "data_distribution.yaml", "training.yaml"):
        shutil.copy(DEFAULT_DIR / name, tmp_path / "configs" / name)
    (tmp_path / "configs" / "analysis.yaml").write_text("oracle: off\n")
    cfg = load_config(tmp_path / "configs")
    assert cfg.analysis.oracle == "off" and cfg.to_dict()["analysis"]["oracle"] == "off"
    with pytest.raises(ConfigError, match="analysis.oracle: Input should be 'split', 'all' or 'off'"):
        load_config(None, ["analysis.oracle=on"])


def test_override_can_add_a_split_as_a_yaml_mapping():
    cfg = load_config(
        None,
        ["data.splits.extra={n_samples: 7, distribution: {type: component_combinations, "
         "combinations: [{weight: 1, components: [comp1, comp2]}]}}"],
    )
    assert cfg.data.splits["extra"].n_samples == 7
    assert cfg.data.splits["extra"].distribution.combinations[0].components == ["comp1", "comp2"]


def test_loading_does_not_mutate_between_calls():
    load_config(None, ["training.epochs=9", "physics.lines.0.strength=0.1"])
    cfg = load_config()
    assert cfg.training.epochs == 6 and cfg.physics.lines[0].strength == 0.8


@pytest.mark.parametrize(
    ("text", "expected"), [("123,124,125", [123, 124, 125]), ("7", [7]), (" 1, 2 ", [1, 2]), (5, [5])]
)
def test_parse_seed_list_accepts(text, expected):
    assert parse_seed_list(text) == expected


@pytest.mark.parametrize("text", ["", " ", "1,,2", "abc", "-1", "1,1", "1.5", "1,"])
def test_parse_seed_list_refuses_with_parameter_name(text):
    with pytest.raises(ConfigError) as info:
        parse_seed_list(text, "--seeds")
    msg = str(info.value)
    assert msg.startswith("--seeds") and "\n" not in msg


# --------------------------------------------------------------------------------------------
# the boundary: the science never imports the tracking or study libraries
# --------------------------------------------------------------------------------------------
IMPORT_LINE = re.compile(r"^\s*(?:import\s+[^#\n]*\b(mlflow|optuna)\b|from\s+(mlflow|optuna)\b)", re.MULTILINE)
DYNAMIC_IMPORT = re.compile(r"(?:import_module|__import__)\(\s*['\"](mlflow|optuna)")


def test_boundary_regex_catches_imports():
    # the check below must be able to fail
    for line in ["import mlflow", "  import optuna.trial", "from mlflow.tracking import MlflowClient",
                 "import numpy, mlflow", "from optuna import Trial"]:
        assert IMPORT_LINE.search(line), line
    for line in ["# mlflow is not used here", "x = 'optuna'", "import mlflowish_thing_not_real"]:
        assert not IMPORT_LINE.search(line), line


def test_speccomp_never_imports_mlflow_or_optuna():
    sources = sorted((REPO / "speccomp").rglob("*.py"))
    assert len(sources) >= 9
    offenders = []
    for path in sources:
        text = path.read_text()
        for pattern in (IMPORT_LINE, DYNAMIC_IMPORT):
            offenders += [f"{path.name}: {m.group(0).strip()}" for m in pattern.finditer(text)]
    assert not offenders, offenders


def test_even_cnn_kernels_are_refused_at_load():
    msg = config_error(None, ["training.model_type=cnn", "training.cnn.kernel_sizes=[7,4,3]"])
    assert "training.cnn.kernel_sizes" in msg and "odd" in msg


def test_the_validation_split_cannot_copy_the_test_distribution():
    msg = config_error(None, ["data.validation.source=test"])
    assert "data.validation.source" in msg and "in-distribution" in msg
