"""The front end imports nothing heavy before it is needed: `speccomp --help`, a command's help, an
input refused by the option parser and a bad meta setting (one line, exit 2) import neither torch
nor mlflow, in a fresh interpreter (how long they take is `benchmarks/bench_pipeline.py`'s to say)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "mlflow", "matplotlib", "optuna")
CODE = """
import json, sys
from speccomp_cli.main import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0),
    (["run", "--help"], 0),
    (["run", "--seeds", "abc"], 2),
    (["run", "--model-format", "onnx"], 2),
    (["study", "--n-trials", "x"], 2),
    (["meta", "--num_meta_training_tasks", "0"], 2),  # refused by the settings, before the heavy imports
    (["meta-eval", "--meta-learning-rate", "-1"], 2),
])
def test_help_and_refused_options_import_nothing_heavy(argv, code, tmp_path):
    done = subprocess.run([sys.executable, "-c", CODE, json.dumps(argv), json.dumps(HEAVY)], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": code, "heavy": []}, done.stderr[-2000:]
    if code == 2:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    if argv[0].startswith("meta"):  # the settings' own refusal, not the option parser's
        variable = {"--num_meta_training_tasks": "NUM_META_TRAINING_TASKS", "--meta-learning-rate": "META_LEARNING_RATE"}
        assert done.stderr.startswith(f"error: {variable[argv[1]]}={argv[2]} (set by flag "), done.stderr
