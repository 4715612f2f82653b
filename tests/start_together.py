"""Start N study workers at the same instant (used by the fresh-database race tests).

    python tests/start_together.py N -- STUDY_ARGS...          one start, then exit
    python tests/start_together.py --serve                     one start per JSON line on stdin

Imports everything a worker needs once, forks N processes that wait on one pipe, releases them
together, and runs `speccomp study ARGS` (`speccomp_cli.main.main(["study", *ARGS])`) in each: as if N machines started the same command at
the same moment, without N interpreter start-ups (seconds each, and different on a loaded
machine) spreading the moment out. The workers are separate processes with their own database
connections; nothing is shared after the fork, and the launcher itself never opens a store.

`--serve` reads lines `{"n": 4, "argv": [...], "cwd": DIR, "env": {...}, "logs": DIR}` and answers
each with `{"codes": [exit code of each worker]}`; worker i's output goes to `logs/worker-i.log`.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def _preload() -> None:
    """Imports, and the one-time set-up of SQLAlchemy's mappers, done once before the fork: the
    workers then reach the database within milliseconds of each other."""
    import mlflow  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import optuna
    import psycopg  # noqa: F401
    import sqlalchemy.orm
    import torch  # noqa: F401

    optuna.storages.RDBStorage("sqlite://")  # an in-memory database: Optuna's models and migrations loaded
    sqlalchemy.orm.configure_mappers()

    import speccomp_cli.main  # noqa: F401
    import study.main  # noqa: F401
    import study.objective  # noqa: F401
    import study.report  # noqa: F401
    import study.storage  # noqa: F401
    import tracking.pipeline  # noqa: F401


def _worker(gate: int, argv: list[str]) -> int:
    os.read(gate, 1)  # blocks until the parent releases every worker at once
    from speccomp_cli.main import main

    try:
        return main(["study", *argv])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def start_together(n: int, argv: list[str], cwd: str | None = None, env: dict[str, str] | None = None,
                   logs: str | None = None) -> list[int]:
    """Fork `n` workers, release them at once, wait; their exit codes."""
    read_end, write_end = os.pipe()
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                os.close(write_end)
                if logs is not None:
                    fd = os.open(Path(logs) / f"worker-{i}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                if cwd is not None:
                    os.chdir(cwd)
                os.environ.update(env or {})
                code = _worker(read_end, argv)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        pids.append(pid)
    os.close(read_end)
    os.write(write_end, b"x" * n)  # one byte each: all released together
    os.close(write_end)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def main() -> int:
    _preload()
    if sys.argv[1:] == ["--serve"]:
        for line in sys.stdin:
            job = json.loads(line)
            codes = start_together(job["n"], job["argv"], job.get("cwd"), job.get("env"), job.get("logs"))
            print(json.dumps({"codes": codes}), flush=True)
        return 0
    codes = start_together(int(sys.argv[1]), sys.argv[sys.argv.index("--") + 1:])
    for i, code in enumerate(codes):
        print(f"worker {i}: exit {code}", flush=True)
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
