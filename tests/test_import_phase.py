"""What a command does while it imports its libraries (`speccomp.core.import_phase`): collections
held off, and back on with the libraries' objects frozen, before the command's work; pyarrow hidden
from pandas and MLflow, and importable again after."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from speccomp.core import import_phase
from tests.conftest import TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[1]


def test_end_without_begin_leaves_the_collector_and_the_modules_as_they_were():
    frozen, pyarrow = gc.get_freeze_count(), sys.modules.get("pyarrow", "absent")
    import_phase.end()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    assert sys.modules.get("pyarrow", "absent") is pyarrow


def test_begin_turns_collections_off_and_end_freezes_what_exists_and_turns_them_on(tmp_path):
    code = ("import gc, json; from speccomp.core import import_phase; import_phase.begin(); paused = gc.isenabled(); "
            "import pandas; import_phase.end(); import_phase.end(); "
            "print(json.dumps([paused, gc.isenabled(), gc.get_freeze_count()]))")
    paused, enabled, frozen = _command_in_a_process(code, tmp_path)
    assert (paused, enabled) == (False, True)
    assert frozen > 10_000  # pandas' objects, frozen once (the second end did nothing)


def test_a_block_left_by_an_error_ends_the_phase(tmp_path):
    code = """
import gc, json, sys
from speccomp.core import import_phase
try:
    with import_phase.during_imports():
        inside = [gc.isenabled(), sys.modules.get("pyarrow", "absent") is None]
        raise ValueError("a refused input")
except ValueError:
    pass
import pyarrow
print(json.dumps(inside + [gc.isenabled(), pyarrow.__name__]))
"""
    assert _command_in_a_process(code, tmp_path, NO_HDFS) == [False, True, True, "pyarrow"]


PYARROW_PROBE = """
import json, sys
from speccomp.core import import_phase
import_phase.begin()
import pandas, mlflow
from mlflow.store.artifact import hdfs_artifact_repo
from pandas.compat.pyarrow import PYARROW_INSTALLED
seen = ["pyarrow" in sys.modules and sys.modules["pyarrow"] is not None, PYARROW_INSTALLED]
import_phase.end()
seen.append(import_phase.pyarrow_hidden())  # what a worker given pandas objects must be started with
import pyarrow
print(json.dumps(seen + [pyarrow.__name__]))
"""


NO_HDFS = {name: "" for name in (*import_phase.HDFS_ENVIRONMENT, "CLASSPATH")}


def test_pandas_and_mlflow_import_without_pyarrow_and_it_imports_after(tmp_path):
    loaded, pandas_found_it, hidden, after = _command_in_a_process(PYARROW_PROBE, tmp_path, NO_HDFS)
    assert (loaded, pandas_found_it, hidden) == (False, False, True)
    assert after == "pyarrow"


def test_pyarrow_stays_visible_where_hdfs_is_set_up(tmp_path):
    loaded, pandas_found_it, hidden, _ = _command_in_a_process(PYARROW_PROBE, tmp_path,
                                                               {**NO_HDFS, "HADOOP_HOME": "/opt/hadoop"})
    assert (loaded, pandas_found_it, hidden) == (True, True, False)


def test_while_hidden_pyarrow_hidden_says_so_before_pandas_is_imported(tmp_path):
    code = ("import json; from speccomp.core import import_phase; import_phase.begin(); "
            "print(json.dumps([import_phase.pyarrow_hidden()]))")
    assert _command_in_a_process(code, tmp_path, NO_HDFS) == [True]


def test_pandas_here_uses_pyarrow_so_a_worker_started_here_keeps_it():
    import pandas  # noqa: F401  (as the test suite's modules import it, pyarrow visible)

    assert not import_phase.pyarrow_hidden()


def test_hdfs_configured_reads_the_variables_pyarrows_client_needs():
    assert not import_phase.hdfs_configured({})
    assert not import_phase.hdfs_configured({"HADOOP_HOME": "", "CLASSPATH": "/opt/app/lib/*"})
    assert import_phase.hdfs_configured({"ARROW_LIBHDFS_DIR": "/usr/lib/hadoop/lib/native"})
    assert import_phase.hdfs_configured({"CLASSPATH": "/opt/Hadoop/share/hadoop/common/*"})


def _command_in_a_process(code: str, folder, environ: dict[str, str] | None = None) -> list:
    """Run `code` (which prints a JSON line last) in a fresh interpreter with a store in `folder`."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **(environ or {})}
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_run_trains_with_collections_on_and_the_libraries_frozen(tmp_path):
    """`speccomp run`: collections off for the imports, on once the store is open, before any run is made."""
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


def test_the_run_logs_its_records_model_and_figures_without_loading_pyarrow(tmp_path):
    """The command and its figure worker, which reads the command's DataFrames, both without it."""
    code = f"""
import json, subprocess, sys
started = []
real = subprocess.Popen
def spy(args, *rest, **kwargs):
    started.append([str(a) for a in args])
    return real(args, *rest, **kwargs)
subprocess.Popen = spy
from speccomp_cli.main import main
code = main(["run", "--seeds", "1", "--overrides", {" ".join(TINY_OVERRIDES)!r}])
workers = [args for args in started if "speccomp.core.figure_worker" in args]
print(json.dumps([code, "pyarrow" in sys.modules, "mlflow.pytorch" in sys.modules, workers]))
"""
    code, pyarrow_loaded, logged_a_model, workers = _command_in_a_process(code, tmp_path, NO_HDFS)
    assert code == 0 and logged_a_model
    assert not pyarrow_loaded
    assert len(workers) == 1 and "--with-pyarrow" not in workers[0]  # the worker hides it too


def test_a_study_runs_its_trials_without_loading_pyarrow(tmp_path):
    code = f"""
import json, sys
from speccomp_cli.main import main
code = main(["study", "--n-trials", "2", "--seeds", "1", "--storage", "optuna.log",
             "--space", {str(REPO / "configs" / "spaces" / "quick.yaml")!r}, "--overrides", {" ".join(TINY_OVERRIDES)!r}])
print(json.dumps([code, "pyarrow" in sys.modules]))
"""
    assert _command_in_a_process(code, tmp_path, NO_HDFS) == [0, False]  # the report included


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
