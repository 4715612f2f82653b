"""An Optuna study of the meta-learner's own hyper-parameters, on the study machinery's storage and
samplers (`study.storage.open_storage`, `study.main.make_sampler`), each trial a tracked meta run.

    speccomp meta-study --space configs/meta/study.yaml --n-trials 8 [--config smoke]

The space file has the study spaces' form; a parameter is one of the six settings
(`meta_learning_rate`, `architecture_learning_rate`, ...) or a dotted path of the meta config
(`posterior.prior_scale`, `inner.steps`, ...):

    name: meta-hyper
    fixed: [task_generator_seed=1000]        # settings or meta-config overrides applied to every trial
    params:
      meta_learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
      inner.steps: {type: int, low: 1, high: 5}

The objective is the median over the trial's meta-test pairs of the meta-learner's test MSE ÷
oracle MSE (minimise); with a matrices meta config (`--config raven`) the median held-out error
1 − accuracy over its meta-test (rule, attribute) tasks. Those pairs become validation pairs for the study: fix a
`task_generator_seed` here that differs from the one of the run you report, so the reported
meta-test pairs play no part in choosing the hyper-parameters.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna

from speccomp.core.config import ConfigError, default_config_dir, read_yaml
from speccomp.meta.config import MetaConfig
from speccomp.meta.settings import FIELDS

USER_ERROR = 2


@dataclass
class MetaParam:
    name: str
    distribution: optuna.distributions.BaseDistribution


@dataclass
class MetaSpace:
    name: str
    path: Path
    params: list[MetaParam]
    fixed: list[str]

    def split(self, values: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
        """(setting flags, meta-config overrides) of fixed entries plus suggested values."""
        flags: dict[str, str] = {}
        overrides: list[str] = []
        items = [tuple(f.split("=", 1)) for f in self.fixed] + [(k, repr(v) if isinstance(v, float) else str(v))
                                                                  for k, v in values.items()]
        for key, value in items:
            if key in FIELDS:
                flags[key] = value
            else:
                overrides.append(f"{key}={value}")
        return flags, overrides


def _known(key: str) -> bool:
    if key in FIELDS:
        return True
    model: Any = MetaConfig
    for part in key.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        model = fields[part].annotation
    return getattr(model, "model_fields", None) is None  # a value, not a section


def load_meta_space(path: str | Path) -> MetaSpace:
    """Read and check a meta study space; ConfigError (one line naming file and entry). A relative
    path not found here is looked up in the project folder (the default `configs/meta/study.yaml`
    works from any working directory)."""
    path = Path(path)
    if not path.is_absolute() and not path.is_file() and (default_config_dir().parent / path).is_file():
        path = default_config_dir().parent / path
    raw = read_yaml(path)
    unknown = set(raw) - {"name", "description", "params", "fixed"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: name, description, params, fixed")
    fixed = raw.get("fixed") or []
    if not isinstance(fixed, list) or not all(isinstance(f, str) and "=" in f for f in fixed):
        raise ConfigError(f"{path}: fixed: must be a list of KEY=VALUE")
    for item in fixed:
        if not _known(item.split("=", 1)[0].strip()):
            raise ConfigError(f"{path}: fixed: {item}: unknown key; allowed: a setting ({', '.join(FIELDS)}) "
                              "or a dotted meta-config value (inner.steps, posterior.prior_scale, ...)")
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise ConfigError(f"{path}: params: must map at least one parameter to a distribution")
    params = [_param(path, str(k), v) for k, v in params_raw.items()]
    space = MetaSpace(str(raw.get("name") or path.stem), path, params, [f.strip() for f in fixed])
    _check_ends(space)
    return space


def _param(path: Path, name: str, entry: Any) -> MetaParam:
    where = f"{path}: params.{name}"
    if not _known(name):
        raise ConfigError(f"{where}: unknown parameter; allowed: a setting ({', '.join(FIELDS)}) or a dotted "
                          "meta-config value (inner.steps, posterior.prior_scale, ...)")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping with a type (categorical, int, float)")
    kind = entry.get("type")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices: must be a non-empty list")
        return MetaParam(name, optuna.distributions.CategoricalDistribution(choices))
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: type must be categorical, int or float, got {kind!r}")
    low, high, log = entry.get("low"), entry.get("high"), entry.get("log", False)
    if not isinstance(log, bool):  # bool("false") would be a log scale
        raise ConfigError(f"{where}: log: must be true or false, got {log!r}")
    for key, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{where}: {key}: must be a finite number, got {v!r}")
    if low >= high:
        raise ConfigError(f"{where}: empty or inverted range: low {low} >= high {high}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log distribution needs low > 0, got {low}")
    if kind == "int":
        return MetaParam(name, optuna.distributions.IntDistribution(int(low), int(high), log=log))
    return MetaParam(name, optuna.distributions.FloatDistribution(float(low), float(high), log=log))


def _check_ends(space: MetaSpace) -> None:
    """Both ends of every range (every choice) must give valid settings and a valid meta config."""
    from speccomp.meta.config import load_meta_config
    from speccomp.meta.settings import resolve_settings

    for p in space.params:
        dist = p.distribution
        values = list(dist.choices) if isinstance(dist, optuna.distributions.CategoricalDistribution) else [dist.low, dist.high]
        for value in values:
            flags, overrides = space.split({p.name: value})
            try:
                meta, meta_path = load_meta_config(None, overrides)
                resolve_settings(flags, env_file=None, file_values=meta.settings, file_name=meta_path)
            except ConfigError as exc:
                raise ConfigError(f"{space.path}: params.{p.name}: value {value!r} is refused: {exc}") from None


def suggest(trial: optuna.Trial, space: MetaSpace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in space.params:
        d = p.distribution
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            out[p.name] = trial.suggest_categorical(p.name, d.choices)
        elif isinstance(d, optuna.distributions.IntDistribution):
            out[p.name] = trial.suggest_int(p.name, d.low, d.high, log=d.log)
        else:
            out[p.name] = trial.suggest_float(p.name, d.low, d.high, log=d.log)
    return out


def main(space: str = "configs/meta/study.yaml", n_trials: str = "8", config: str = "smoke", overrides: str = "",
         study_name: str = "speccomp-meta-hyper", storage: str = "", sampler: str = "random",
         sampler_seed: str = "0", threads: str = "1") -> int:
    """`speccomp meta-study`: an Optuna study of the meta-learner's own hyper-parameters."""
    args = SimpleNamespace(space=space, n_trials=n_trials, config=config, overrides=overrides, study_name=study_name,
                           storage=storage, sampler=sampler, sampler_seed=sampler_seed, threads=threads)
    from study.main import make_sampler
    from study.storage import StorageError, open_storage
    from tracking import store

    try:
        n_trials, seed, threads = (_positive(args.n_trials, "n_trials", 1), _positive(args.sampler_seed, "sampler_seed", 0),
                                   _positive(args.threads, "threads", 1))
        space = load_meta_space(args.space)
        extra = [o for o in args.overrides.split() if o]
        objective_metric = _objective_metric(args.config, extra)
        storage = open_storage(args.storage)
        uri = store.configure()
        store.check_store(uri)
    except (ConfigError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR
    import torch

    torch.set_num_threads(threads)
    study = optuna.create_study(study_name=args.study_name, storage=storage, load_if_exists=True,
                                sampler=make_sampler(args.sampler, seed, 1), direction="minimize")

    def objective(trial: optuna.Trial) -> float:
        from tracking.meta import MetaOptions, run_meta

        flags, overrides = space.split(suggest(trial, space))
        name = f"{args.study_name}-trial-{trial.number}-{time.strftime('%H%M%S')}"
        options = MetaOptions(flags=flags, config=args.config, overrides=extra + overrides, env_file="",
                              threads=str(threads), experiment_name="speccomp-meta-study", run_name=name)
        if run_meta(options) != 0:
            raise RuntimeError(f"trial {trial.number}: the meta run failed")
        value, measure = _objective_of(name, objective_metric)
        trial.set_user_attr("measure", measure)
        return value

    study.optimize(objective, n_trials=n_trials)
    best = study.best_trial
    print(f"best trial {best.number}: {best.user_attrs.get('measure', 'objective')} {best.value:.3g} with {best.params}")
    return 0


def _objective_metric(config: str, overrides: list[str]) -> tuple[str, str]:
    """(metric, description) the trials minimise: the domain's (`MetaDomain.objective`; spectra, the
    meta-learner's median test MSE ÷ oracle MSE; matrices, its median held-out error), the domain
    that of the meta config's experiment. ConfigError (one line) if the config is bad."""
    from speccomp.meta.config import load_meta_config
    from speccomp.meta.domain import meta_domain
    from speccomp.meta.run import experiment_config

    return meta_domain(experiment_config(load_meta_config(config or None, overrides)[0])).objective()


def _objective_of(run_name: str, objective: tuple[str, str]) -> tuple[float, str]:
    """The trial's value (the `objective` metric of its meta run's parent) and what it is."""
    from tracking.store import tracking_client

    client = tracking_client()
    exp = client.get_experiment_by_name("speccomp-meta-study")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")
    metric, what = objective
    return float(run.data.metrics[metric]), what


def _positive(text: str, name: str, minimum: int) -> int:
    if not str(text).strip().isdigit() or int(text) < minimum:
        raise ConfigError(f"{name}: {text!r}; allowed: an integer >= {minimum}")
    return int(text)


if __name__ == "__main__":
    sys.exit(main())
