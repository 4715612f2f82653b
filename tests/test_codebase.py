"""The codebase's own promises: the config loads without torch, no config field is accepted and
ignored, private library APIs are touched only in `speccomp_compat` (and still exist), every YAML
file under configs/ loads, the package layers import only downwards."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from speccomp.core.config import load_config
from speccomp.core.schema import ExperimentConfig

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("speccomp", "speccomp_cli", "tracking", "study", "tests", "benchmarks")


def _python_files(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in sorted((REPO / d).rglob("*.py"))]


def test_loading_a_config_does_not_import_torch():
    code = ("import sys; from speccomp.core.config import load_config; cfg = load_config(); "
            "print(cfg.training.model_type, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["mlp", "False"]


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, field name) of every field of the schema, nested models walked."""
    out = []
    for name, info in model.model_fields.items():
        out.append((prefix + name, name))
        for option in _models(info.annotation):
            out.extend(_leaf_fields(option, f"{prefix}{name}."))
    return out


def _models(annotation) -> list[type[BaseModel]]:
    args = typing.get_args(annotation)
    found = [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []
    return found + [m for a in args for m in _models(a)]


def test_no_config_field_is_accepted_and_ignored():
    """Every field of the schema is read somewhere outside its own declaration: as an attribute
    (`.name`), a keyword or a key. A field added and never used fails here."""
    code = "\n".join(p.read_text() for p in _python_files("speccomp", "speccomp_cli", "tracking", "study"))
    declarations = re.compile(r"^[ \t]+\w+:[ \t].*$", re.M)  # `name: type = default` lines of the schema
    uses = declarations.sub("", code)
    unread = [path for path, name in _leaf_fields(ExperimentConfig)
              if not re.search(rf"\.{name}\b|\b{name}=|[\"']{name}[\"']", uses)]
    assert unread == []


PRIVATE = re.compile(
    r"\b(torch|optuna|mlflow|typer|pydantic|numpy|pandas|matplotlib)(\.\w+)*\._(?!_)\w"  # private module or attribute (dunders are public)
    r"|\._(rng|trial_id|study_id|to_mlflow_entity|fused_adamw?_|get_stale_trial_ids|project_spec)\b"  # known names
)


def test_private_library_apis_only_in_the_compat_module():
    offenders = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
                 for p in _python_files(*SOURCE_DIRS) if p.name != "test_codebase.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if PRIVATE.search(line)]
    assert offenders == []


def test_the_private_apis_the_compat_module_wraps_still_exist():
    from speccomp_compat import check

    assert check() == []


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").rglob("*.yaml")))
def test_every_yaml_under_configs_loads(path):
    """Each file through the loader that reads it: section files as the project's config (or a
    domain's folder), presets over it, study spaces against it, NAS spaces, meta configs and the
    meta-learner's own study space."""
    full = REPO / path
    folder = Path(path).parts[1] if len(Path(path).parts) > 2 else ""
    if folder == "presets":
        load_config(presets=[full])
    elif folder == "spaces":
        from speccomp.core.task import load_any_config
        from study.space import load_space

        base = load_any_config(REPO / "configs" / "raven") if "raven" in full.stem else load_config()
        assert load_space(full, base).params
    elif folder == "nas":
        from speccomp.nas.space import load_space as load_nas_space

        assert load_nas_space(full)
    elif folder == "meta":
        if full.stem == "study":
            from study.meta import load_meta_space

            assert load_meta_space(full)
        else:
            from speccomp.meta.config import load_meta_config

            assert load_meta_config(full)[0]
    elif folder:
        from speccomp.core.task import load_any_config

        assert load_any_config(full.parent)
    else:
        assert load_config(full.parent).physics.labels


LAYERS = {"speccomp": set(), "speccomp_compat": set(), "tracking": {"speccomp"},
          "study": {"speccomp", "tracking"}, "speccomp_cli": {"speccomp", "tracking", "study"}}
FORBIDDEN_LIBS = {"speccomp": {"mlflow", "optuna"}, "tracking": {"optuna"}}


def test_layers_import_only_downwards():
    offenders = []
    for layer, allowed in LAYERS.items():
        for path in _python_files(layer):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if (top in LAYERS and top != layer and top != "speccomp_compat" and top not in allowed) \
                            or top in FORBIDDEN_LIBS.get(layer, set()):
                        offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []
