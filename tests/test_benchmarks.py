"""Every benchmark still runs: each `benchmarks/bench_*.py --smoke` as a fresh process (the same code
paths at the smallest size) exits 0 and writes, in its JSON, every measure it lists in PROMISES. A
new benchmark file is picked up by the glob; it declares its own PROMISES. A probe that names a
function that no longer exists ends its benchmark with exit code 3 (`_common.probed`), so a rename
fails here. No figure is judged: a smoke run prints no verdict."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))


def promises(script: Path) -> tuple[str, ...]:
    """The script's PROMISES tuple, read without importing it (imports are heavy)."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PROMISES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def test_every_benchmark_is_found():
    names = {s.stem for s in SCRIPTS}
    assert {"bench_train", "bench_pipeline", "bench_generate"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_benchmark_smoke_runs_and_prints_its_figures(script: Path, tmp_path: Path):
    promised = promises(script)
    assert promised, f"{script.name}: declare PROMISES, the measures every run prints"
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"  # nothing lands in the user's store
    done = subprocess.run([sys.executable, str(script), "--smoke", "--json", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    tail = (done.stdout[-2000:] + done.stderr[-3000:]).strip()
    assert done.returncode == 0, f"{script.name} --smoke exited {done.returncode}:\n{tail}"
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    measures = [row["measure"].strip() for row in result["rows"]]
    missing = [p for p in promised if not any(m.startswith(p) for m in measures)]
    assert not missing, f"{script.name} --smoke did not report {missing}; it reported {measures}"
    for row in result["rows"]:
        assert row["verdict"] in ("", "smoke"), f"{script.name} --smoke gave a verdict: {row}"
        assert row["figure"].strip(), f"{script.name}: empty figure for {row['measure']!r}"


def test_a_missing_probe_target_exits_3_naming_it(capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from _common import PROBE_MISSING, probed
    finally:
        sys.path.remove(str(BENCHMARKS))
    import speccomp.core.training as training

    assert probed(training, "train") is training.train
    with pytest.raises(SystemExit) as info:
        probed(training, "no_such_function")
    assert info.value.code == PROBE_MISSING == 3
    assert "speccomp.core.training.no_such_function does not exist" in capsys.readouterr().err


def test_footprint_sums_the_whole_process_tree(tmp_path: Path):
    """bench_pipeline's footprint: the peak of the PSS summed over a command and its children. A
    parent and a child each holding 120 MB of their own (written, so resident) must give at least
    240 MB over 2 processes; the parent alone holding it must give one process and less."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_pipeline import footprint_run
    finally:
        sys.path.remove(str(BENCHMARKS))
    hold = "import time; b = bytearray(120 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.0)"
    both = f"import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', {hold!r}]); {hold}; c.wait()"
    pss_mb, procs = footprint_run([sys.executable, "-c", both], tmp_path)
    assert procs == 2 and pss_mb >= 240, (pss_mb, procs)
    alone_mb, alone_procs = footprint_run([sys.executable, "-c", hold], tmp_path)
    assert alone_procs == 1 and 120 <= alone_mb < pss_mb - 100, (alone_mb, pss_mb)
    with pytest.raises(SystemExit) as info:
        footprint_run([sys.executable, "-c", "raise SystemExit(4)"], tmp_path)
    assert info.value.code == 4
