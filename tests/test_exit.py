"""`speccomp` ends without the interpreter's teardown (`speccomp_cli.main.exit_now`), yet keeps what
a normal exit does that matters: the exit code, atexit handlers, non-daemon threads joined, output
flushed; after Ctrl-C or SIGTERM (130, 143) it only flushes, so that nothing holds the exit up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE = """
import atexit, sys, threading, time
from pathlib import Path
from speccomp_cli.main import exit_now
out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late():
    time.sleep(0.3)
    (out / "thread").write_text("done")
threading.Thread(target=late).start()
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(max_workers=1)  # left alive, as MLflow leaves its artifact downloads' pool
pool.submit(lambda: None).result()
print("last line", end="")  # unflushed: exit_now must flush it
exit_now(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 2, 3])
def test_a_normal_exit_keeps_its_code_handlers_threads_and_output(code, tmp_path):
    """...and an idle thread pool a library left alive does not hold the exit (it did, before the
    pools were stopped first, as the interpreter does)."""
    done = subprocess.run([sys.executable, "-c", CODE, str(tmp_path), str(code)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == code, done.stderr
    assert done.stdout == "last line"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"


@pytest.mark.parametrize("code", [130, 143])
def test_a_stopped_command_exits_at_once(code, tmp_path):
    done = subprocess.run([sys.executable, "-c", CODE, str(tmp_path), str(code)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == code, done.stderr
    assert done.stdout == "last line"
    assert not (tmp_path / "atexit").exists() and not (tmp_path / "thread").exists()


def test_a_closed_pipe_does_not_stop_the_exit(tmp_path):
    """`speccomp readback ... | head -1`: the reader has gone when the last output is flushed."""
    proc = subprocess.Popen([sys.executable, "-c", CODE, str(tmp_path), "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    proc.stdout.close()  # the reader goes away before the buffered line is flushed
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()
    assert (tmp_path / "atexit").read_text() == "ran"
