"""The codebase's own promises: the config loads without torch, no config field is accepted and
ignored, private library APIs are touched only in `speccomp_compat` (and still exist), every YAML
file under configs/ loads, the package layers import only downwards, the core imports no domain,
and no modules import each other in a circle."""

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


# --- the import graph: every import statement of a module, at any depth (a function-level import
# is an import too: it runs as soon as the function does), resolved to the project's modules.
GRAPH_PACKAGES = ("speccomp", "speccomp_compat", "tracking", "study", "speccomp_cli")
KNOWN_CIRCLES: list[set[str]] = []
"""Circles left on purpose: none."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(packages=GRAPH_PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports (a name resolved to the longest module it names)."""
    files = {_module_name(p): p for p in _python_files(*packages)}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets |= {resolve(f"{base}.{a.name}") for a in node.names}
        graph[module] = {m for m in targets if m and m != module}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan), each a set of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_circle_finder_finds_circles_through_lazy_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from .c import g\n")  # a lazy, relative import
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg.a import x\n")  # into the circle, not part of it
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    graph = _import_graph(("pkg",))
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.d"] == {"pkg.a"}
    assert _circles(graph) == [{"pkg.a", "pkg.b", "pkg.c"}]


def test_no_import_circles():
    """No modules of the project import each other in a circle (directly or through others, at
    module level or inside a function), except the known ones the lead is removing."""
    circles = _circles(_import_graph())
    unexpected = [sorted(c) for c in circles if c not in KNOWN_CIRCLES]
    assert unexpected == []


def test_core_imports_no_domain():
    """The core defines interfaces and knows no domain: no module of speccomp/core/ imports
    speccomp.spectra or speccomp.matrices (domains are declared by speccomp/domains.py and register
    themselves), or names one of their modules in code (an importlib string is an import too)."""
    domains = ("speccomp.spectra", "speccomp.matrices")
    offenders = []
    for module, targets in _import_graph(("speccomp",)).items():
        if module.startswith("speccomp.core"):
            bad = {t for t in targets if t.startswith(domains)}
            offenders += [f"{module} imports {t}" for t in sorted(bad)]
    for path in _python_files("speccomp/core"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and node.value.startswith(domains):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} names {node.value}")
    assert offenders == []


SEARCH_AND_META_INTERFACES = ("speccomp.nas.domain", "speccomp.meta.domain", "speccomp.meta.bank",
                              "speccomp.meta.settings", "speccomp.meta.tasks")
"""What a domain's object for the search and the meta-learner (its `search.py`, `meta_tasks.py`) may
import of those packages: their interfaces, never their machinery."""


def test_domains_import_only_the_core():
    """A domain package imports the core and itself, never another domain; its domain object of the
    search and the meta-learner imports their interfaces (`SEARCH_AND_META_INTERFACES`) only, and
    nothing of speccomp/nas/ or speccomp/meta/ imports a domain (they look its object up)."""
    offenders = []
    graph = _import_graph(("speccomp",))
    for module, targets in graph.items():
        parts = module.split(".")
        if len(parts) > 1 and parts[1] in ("spectra", "matrices"):
            own = f"speccomp.{parts[1]}"
            offenders += [f"{module} imports {t}" for t in sorted(targets)
                          if not (t.startswith("speccomp.core") or t == own or t.startswith(own + ".")
                                  or t in SEARCH_AND_META_INTERFACES)]
        if len(parts) > 1 and parts[1] in ("nas", "meta"):
            offenders += [f"{module} imports {t}" for t in sorted(targets)
                          if t.startswith(("speccomp.spectra", "speccomp.matrices"))]
    assert offenders == []


DOMAIN_NAMES = {"MATRICES", "SPECTRA"}
DOMAIN_WORDS = {"matrices", "spectra", "chance/acc"}
SEARCH_AND_META = ("speccomp/nas", "speccomp/meta", "tracking/nas.py", "tracking/meta.py", "study/meta.py")


def _domain_tests(path: Path) -> list[str]:
    """Comparisons that test which domain is at hand: `x is MATRICES`, `task.name == "spectra"`,
    `"chance/acc" in floor` (a metric name standing for a domain)."""

    def names_a_domain(node: ast.AST) -> bool:
        return ((isinstance(node, ast.Name) and node.id in DOMAIN_NAMES)
                or (isinstance(node, ast.Attribute) and node.attr in DOMAIN_NAMES)
                or (isinstance(node, ast.Constant) and node.value in DOMAIN_WORDS))

    return [f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Compare) and any(names_a_domain(n) for n in (node.left, *node.comparators))]


def test_domain_test_finder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    code = ('if d is MATRICES or t.name == "spectra" or "chance/acc" in f or x.y is not lib.SPECTRA:\n    pass\n'
            '"""docs may say matrices"""\nif name == "comp4":\n    pass\n')
    (tmp_path / "m.py").write_text(code)
    found = _domain_tests(tmp_path / "m.py")
    assert len(found) == 4 and all(line.startswith("m.py:1: ") for line in found)


def test_search_and_meta_learner_never_test_their_domain():
    """The search and the meta-learner ask their domain object (data, loss, scores, floor, reading,
    table row); only a domain object, which lives in its domain package (`speccomp/spectra/search.py`,
    `speccomp/matrices/search.py`), knows which domain it is. No file is exempt."""
    offenders = []
    for path in _python_files(*(d for d in SEARCH_AND_META if not d.endswith(".py"))) + \
            [REPO / f for f in SEARCH_AND_META if f.endswith(".py")]:
        offenders += _domain_tests(path)
    assert offenders == []
