"""Starting a helper process of this project (the figure worker, a study's record writer): its
environment, and the signals held back while it starts.

    with signals_blocked({signal.SIGINT}):
        worker = Worker(subprocess.Popen([sys.executable, "-m", "speccomp.core.figure_worker"],
                                         env=child_env(), ...))
    # a Ctrl-C that arrived meanwhile is raised here, once the worker is in hand to be ended

A signal landing while `Popen` returns, before the caller holds the object that ends the child,
would leave a child nobody ends. The child inherits the blocked mask: it sets what it does with
those signals (usually: ignore them, the caller decides) and then unblocks them itself.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def child_env(**changes: str | None) -> dict[str, str]:
    """This process's environment with the repository on PYTHONPATH (the child imports this
    project's packages wherever it runs from), and `changes` applied (None removes a variable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@contextlib.contextmanager
def signals_blocked(signals: Iterable[int]) -> Iterator[None]:
    """Block `signals` in this thread for the block; one that arrived meanwhile is delivered as the
    block ends (however it ends)."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

