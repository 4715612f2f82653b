"""The meta-learner's six settings, as the second source document names them, and where each came from.

| variable                          | default | allowed                          |
| --------------------------------- | ------- | -------------------------------- |
| `TASK_GENERATOR_SEED`             | 0       | integer >= 0                     |
| `META_LEARNING_RATE`              | 0.001   | finite number > 0                |
| `ARCHITECTURE_LEARNING_RATE`      | 0.001   | finite number > 0                |
| `NUM_META_TRAINING_TASKS`         | 100     | integer >= 1, <= number of pairs |
| `NUM_META_TESTING_TASKS`          | 20      | integer >= 1, <= number of pairs |
| `ARCHITECTURE_SEARCH_ITERATIONS`  | 1000    | integer >= 1                     |

Each is read, highest precedence first, from a command-line flag (`--task_generator_seed` or
`--task-generator-seed`; an empty value means "not given", so that `mlflow run`'s empty parameter
defaults never mask the environment), the environment, a `.env` file in the working directory, the
`settings:` section of the meta config file, and finally the default. Environment and `.env` are
read by pydantic-settings (`EnvSettingsSource`, `DotEnvSettingsSource`); the layers are kept apart
so that the effective value of every setting is known together with its source. A bad value is one
line naming the variable, the value and where it was set (`SettingsError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from speccomp.core.config import ConfigError


class SettingsError(ConfigError):
    """A bad meta setting; one line naming the variable and where it was set."""


ENV_FILE = ".env"


class MetaSettings(BaseSettings):
    """The six settings of the source document (env names are the upper-case field names)."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore", case_sensitive=False, frozen=True
    )

    task_generator_seed: int = Field(0, ge=0)
    """Seed of the task generator: which pairs are meta-training and which meta-test tasks."""
    meta_learning_rate: float = Field(0.001, gt=0, allow_inf_nan=False)
    """Adam learning rate of the variational posterior q(α) (mean and scale of the logits)."""
    architecture_learning_rate: float = Field(0.001, gt=0, allow_inf_nan=False)
    """Adam learning rate of α when stage two adapts the architecture to a meta-test pair."""
    num_meta_training_tasks: int = Field(100, ge=1)
    """Number of meta-training pairs (their combinations are seen by the meta-learner)."""
    num_meta_testing_tasks: int = Field(20, ge=1)
    """Number of meta-test pairs (their combinations stay unseen until the final evaluation)."""
    architecture_search_iterations: int = Field(1000, ge=1)
    """Number of meta-iterations (one task and one architecture sample each)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flag (init) > environment > .env; the config file is passed as init values below those
        # by `resolve_settings`, which also records the source of each value.
        return init_settings, env_settings, dotenv_settings


FIELDS: tuple[str, ...] = tuple(MetaSettings.model_fields)
ENV_NAMES: dict[str, str] = {name: name.upper() for name in FIELDS}
_ALLOWED = {
    "task_generator_seed": "an integer >= 0",
    "meta_learning_rate": "a finite number > 0",
    "architecture_learning_rate": "a finite number > 0",
    "num_meta_training_tasks": "an integer >= 1",
    "num_meta_testing_tasks": "an integer >= 1",
    "architecture_search_iterations": "an integer >= 1",
}


@dataclass(frozen=True)
class ResolvedSettings:
    """The effective settings and, per setting, where its value came from."""

    values: MetaSettings
    sources: dict[str, str]  # field -> "flag --x", "environment", ".env (path)", "config file (path)", "default"

    def as_params(self) -> dict[str, str]:
        """MLflow params: `meta.<field>` = value and `meta.<field>.source` = where it came from."""
        out: dict[str, str] = {}
        for name in FIELDS:
            out[f"meta.{name}"] = str(getattr(self.values, name))
            out[f"meta.{name}.source"] = self.sources[name]
        return out


def check_named_env_file(path: str | Path) -> Path:
    """An env file the user named (`--env-file F`) must exist and be a text file of NAME=VALUE lines:
    a missing one is refused, not read as "no file" (only the default `.env` is optional)."""
    path = Path(path)
    if not path.exists():
        raise SettingsError(f"--env-file: {path}: no such file; allowed: an existing file of NAME=VALUE lines "
                            f"(or leave --env-file out: then {ENV_FILE} in the working directory is read if present)")
    if not path.is_file():
        raise SettingsError(f"--env-file: {path} is not a file; allowed: a text file of NAME=VALUE lines")
    check_env_file(path)
    return path


def check_env_file(path: Path) -> None:
    """Refuse a `.env` file that cannot be read as UTF-8 text, or has a line python-dotenv cannot
    parse (it would only warn)."""
    from dotenv.parser import parse_stream

    try:
        text = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"--env-file: {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = text[: exc.start].count(b"\n") + 1
        raise SettingsError(f"--env-file: {path}: line {line}: not UTF-8 text (byte 0x{text[exc.start]:02x}); "
                            "allowed: a UTF-8 text file of NAME=VALUE lines") from None
    if "\x00" in decoded:
        raise SettingsError(f"--env-file: {path}: holds NUL bytes (a binary file?); allowed: a UTF-8 text file of "
                            "NAME=VALUE lines")
    import io

    with io.StringIO(decoded) as fh:
        for binding in parse_stream(fh):
            if binding.error:
                shown = binding.original.string.strip()[:60]
                raise SettingsError(
                    f"{path}: line {binding.original.line}: malformed line {shown!r}; allowed: NAME=VALUE, "
                    "blank lines and # comments"
                )


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    env_file: str | Path | None = ENV_FILE,
    file_values: Mapping[str, Any] | None = None,
    file_name: str | Path | None = None,
) -> ResolvedSettings:
    """Merge the layers flag > environment > `.env` > config file > default and validate.

    `flags` maps field names to the flag values (None or "" = not given); the environment is
    `os.environ` (read through pydantic-settings); `env_file` is the `.env` path (missing = none);
    `file_values` the `settings:` section of the meta config file named `file_name`.
    Raises SettingsError (one line) for the first bad value.
    """
    layers = _layers(flags or {}, env_file, file_values or {}, file_name)
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in FIELDS:
        for source, values, key in layers:
            if name in values:
                raw[name], sources[name] = values[name], source if key is None else f"{source} {key(name)}"
                break
        else:
            sources[name] = "default"
            continue
        raw[name] = _validate_one(name, raw[name], sources[name])
    values = MetaSettings.model_construct(**{**_defaults(), **raw})
    return ResolvedSettings(values=values, sources=sources)


def _defaults() -> dict[str, Any]:
    return {name: field.default for name, field in MetaSettings.model_fields.items()}


def _layers(flags, env_file, file_values, file_name) -> list[tuple[str, dict[str, Any], Any]]:
    flag_values = {k: v for k, v in flags.items() if k in FIELDS and v is not None and str(v).strip() != ""}
    env_values = _read_env()
    dot_values: dict[str, Any] = {}
    dot_label = ".env"
    if env_file is not None and Path(env_file).is_file():
        check_env_file(Path(env_file))
        dot_values = {k: v for k, v in DotEnvSettingsSource(MetaSettings, env_file=Path(env_file))().items() if k in FIELDS}
        dot_label = f".env file {env_file}"
    unknown = sorted(set(file_values) - set(FIELDS))
    if unknown:
        raise SettingsError(f"{file_name}: settings.{unknown[0]}: unknown setting; allowed: {', '.join(FIELDS)}")
    file_label = f"config file {file_name}" if file_name else "config file"
    return [
        ("flag", flag_values, lambda n: f"--{n}"),
        ("environment", env_values, lambda n: ENV_NAMES[n]),
        (dot_label, dot_values, lambda n: ENV_NAMES[n]),
        (file_label, dict(file_values), lambda n: f"settings.{n}"),
    ]


def _read_env() -> dict[str, Any]:
    """The six variables from the process environment, read by pydantic-settings' own source."""
    return {k: v for k, v in EnvSettingsSource(MetaSettings)().items() if k in FIELDS}


def _validate_one(name: str, value: Any, source: str) -> Any:
    field = MetaSettings.model_fields[name]
    adapter = TypeAdapter(_annotated(name))
    shown = value if isinstance(value, str) else repr(value)
    where = f"{ENV_NAMES[name]}={shown} (set by {source})"
    if isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise SettingsError(f"{where}: not a number; allowed: {_ALLOWED[name]}")
    try:
        out = adapter.validate_python(value.strip() if isinstance(value, str) else value)
    except ValidationError as exc:
        kind = exc.errors(include_url=False)[0]["type"]
        if kind in ("greater_than_equal", "greater_than"):
            what = "zero tasks" if name.startswith("num_meta") and _number(value) == 0 else (
                "negative" if _number(value) < 0 else "zero")
        elif kind == "finite_number":
            what = "not a finite number"
        elif field.annotation is int:
            what = "not an integer"
        else:
            what = "not a number"
        raise SettingsError(f"{where}: {what}; allowed: {_ALLOWED[name]}") from None
    return out


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _annotated(name: str) -> Any:
    from typing import Annotated

    field = MetaSettings.model_fields[name]
    return Annotated[field.annotation, *field.metadata]


def check_task_counts(resolved: ResolvedSettings, n_pairs: int, n_components: int, held_out: int = 0,
                      unit: str | None = None) -> None:
    """More tasks than pairs, or meta-training + meta-test > pairs, is one line naming the variables.

    With `held_out` > 0 components reserved for meta-test pairs, meta-training draws from the pairs
    of the other components and meta-test from the pairs of the held-out ones."""
    s, src = resolved.values, resolved.sources
    n_train, n_test = s.num_meta_training_tasks, s.num_meta_testing_tasks

    def named(field: str) -> str:
        return f"{ENV_NAMES[field]}={getattr(s, field)} (set by {src[field]})"

    kind = "pairs" if unit is None else unit
    train_pool = n_pairs if not held_out else math.comb(n_components - held_out, 2)
    test_pool = n_pairs if not held_out else math.comb(held_out, 2)
    if n_train > train_pool:
        raise SettingsError(f"{named('num_meta_training_tasks')}: more tasks than the {train_pool} {kind} available "
                            f"for meta-training; allowed: an integer 1..{train_pool}")
    if n_test > test_pool:
        raise SettingsError(f"{named('num_meta_testing_tasks')}: more tasks than the {test_pool} {kind} available "
                            f"for meta-testing; allowed: an integer 1..{test_pool}")
    if not held_out and n_train + n_test > n_pairs:
        raise SettingsError(f"{named('num_meta_training_tasks')} + {named('num_meta_testing_tasks')} = {n_train + n_test}: "
                            f"more than the {n_pairs} {kind if unit else f'pairs of {n_components} components'}; "
                            f"allowed: a sum <= {n_pairs}")
