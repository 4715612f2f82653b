"""Collections held off while a command imports its libraries (`speccomp.core.gc_pause`), and back
on, with the libraries' objects frozen, before the command's work."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from speccomp.core import gc_pause
from tests.conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[1]


def test_resume_without_pause_leaves_the_collector_as_it_was():
    frozen = gc.get_freeze_count()
    gc_pause.resume()
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_pause_turns_collections_off_and_resume_freezes_what_exists_and_turns_them_on():
    code = ("import gc, json; from speccomp.core import gc_pause; gc_pause.pause(); paused = gc.isenabled(); "
            "import pandas; gc_pause.resume(); gc_pause.resume(); "
            "print(json.dumps([paused, gc.isenabled(), gc.get_freeze_count()]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    paused, enabled, frozen = json.loads(done.stdout)
    assert (paused, enabled) == (False, True)
    assert frozen > 10_000  # pandas' objects, frozen once (the second resume did nothing)


def _command_in_a_process(code: str, folder) -> list:
    """Run `code` (which prints a JSON line last) in a fresh interpreter with a store in `folder`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_run_trains_with_collections_on_and_the_libraries_frozen(tmp_path):
    """`speccomp run`: paused for the imports, resumed once the store is open, before any run is made."""
    code = f"""
import gc, json
import tracking.main as m
seen = {{}}
real = m._run_all
def spy(*args, **kwargs):
    seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
    return real(*args, **kwargs)
m._run_all = spy
from speccomp_cli.main import main
code = main(["run", "--seeds", "1", "--no-figures", "--no-models", "--overrides", {" ".join(TINY_OVERRIDES)!r}])
print(json.dumps([code, seen, gc.isenabled()]))
"""
    code, seen, enabled_after = _command_in_a_process(code, tmp_path)
    assert code == 0
    assert seen["enabled"] and seen["frozen"] > 100_000  # torch's, MLflow's and its store's objects
    assert enabled_after


def test_a_studys_trials_run_with_collections_on_and_the_libraries_frozen(tmp_path):
    code = f"""
import gc, json
import study.objective as o
seen = []
real = o.Objective.__call__
def spy(self, trial):
    seen.append([gc.isenabled(), gc.get_freeze_count()])
    return real(self, trial)
o.Objective.__call__ = spy
from speccomp_cli.main import main
code = main(["study", "--n-trials", "2", "--seeds", "1", "--storage", "optuna.log", "--no-report",
             "--space", {str(REPO / "configs" / "spaces" / "quick.yaml")!r}, "--overrides", {" ".join(TINY_OVERRIDES)!r}])
print(json.dumps([code, seen, gc.isenabled()]))
"""
    code, seen, enabled_after = _command_in_a_process(code, tmp_path)
    assert code == 0 and len(seen) == 2
    assert all(enabled and frozen > 100_000 for enabled, frozen in seen)
    assert enabled_after
