"""`python -m speccomp` (or `speccomp`): the untracked pieces, one command each.

    speccomp generate --out data/          generate every split for the data seed(s) to a folder
    speccomp train --out runs/exp1         data, training of every seed, tables and figures, no MLflow
    speccomp plot runs/exp1                redraw the figures of a finished folder
    speccomp config                        print the resolved configuration

Every command takes the config options (`--config-dir`, `--set key=value`). A user error (bad
config, bad seeds) prints one line and exits with code 2 before any work.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from speccomp.core.config import ConfigError, ExperimentConfig, parse_seed_list
from speccomp.core.task import load_any_config, task_for

USER_ERROR = 2


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config-dir` and `--set`, shared with the tracked entry points."""
    parser.add_argument(
        "--config-dir",
        default=None,
        help="folder with synthetic_spectra.yaml, data_distribution.yaml, training.yaml, analysis.yaml "
        "(default: the project's configs/)",
    )
    parser.add_argument(
        "--preset",
        dest="presets",
        action="append",
        default=[],
        metavar="NAME",
        help="merge a partial config: a file, or a name under configs/presets/ (e.g. loglinear); repeatable",
    )
    parser.add_argument(
        "--set",
        dest="set_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value by dotted path, e.g. --set training.epochs=10 (repeatable)",
    )


def split_overrides(text: str) -> list[str]:
    """Overrides given as one string (an MLflow parameter): space- or newline-separated KEY=VALUE."""
    return [item for item in text.replace("\n", " ").split(" ") if item.strip()]


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The config of the folder's domain (a folder holding matrices.yaml is the matrices domain)."""
    return load_any_config(args.config_dir, args.set_overrides, presets=[p for p in args.presets if p])


def _cmd_config(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if task_for(cfg).name == "matrices":
        from speccomp.matrices.data import save_datasets
    else:
        from speccomp.core.data import save_datasets
    data_seeds = parse_seed_list(args.data_seeds, "--data-seeds")
    for data_seed in data_seeds:
        folder = Path(args.out) / f"data_seed-{data_seed}" if len(data_seeds) > 1 else Path(args.out)
        datasets = task_for(cfg).generate(cfg, data_seed)
        save_datasets(datasets, folder)
        sizes = ", ".join(f"{n}={len(d)}" for n, d in datasets.items())
        print(f"data seed {data_seed}: {sizes} -> {folder}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from speccomp.core.experiment import run_experiment

    cfg = config_from_args(args)
    seeds = parse_seed_list(args.seeds, "--seeds")
    data_seeds = parse_seed_list(args.data_seeds, "--data-seeds")
    for data_seed in data_seeds:
        out = Path(args.out) / f"data_seed-{data_seed}" if len(data_seeds) > 1 else Path(args.out)
        exp = run_experiment(cfg, data_seed, seeds, out, progress=sys.stderr.isatty())
        cols = ["seed"] + [c for c in exp.summary.columns
                           if c.startswith(("test/mse/", "gap/")) or c in ("val/acc", "test/acc", "chance/acc")]
        print(f"data seed {data_seed} -> {out}")
        print(exp.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from speccomp.core.experiment import redraw

    paths = redraw(args.folder)
    print(f"{len(paths)} figures -> {Path(args.folder) / 'plots'}")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "config": (_cmd_config, "print the resolved configuration as YAML"),
    "generate": (_cmd_generate, "generate every split to a folder (tensors, loadable with weights_only=True)"),
    "train": (_cmd_train, "generate, train every seed, write tables, checkpoints and figures (no MLflow)"),
    "plot": (_cmd_plot, "redraw the figures of a finished `train` folder from its files"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speccomp", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "plot":
            p.add_argument("folder", help="a folder written by `speccomp train`")
            continue
        add_config_arguments(p)
        if name in ("generate", "train"):
            p.add_argument("--out", required=True, help="output folder")
            p.add_argument("--data-seeds", default="42", help="comma-separated data seeds (default 42)")
        if name == "train":
            p.add_argument("--seeds", default="123,124,125", help="comma-separated training seeds (default 123,124,125)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR


def entry() -> None:
    sys.exit(main())
