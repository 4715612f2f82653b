"""What a command does while it imports its libraries: no cyclic garbage collection, and no pyarrow.

**Collections.** Importing torch, MLflow and MLflow's SQL store makes about 400 000 objects that
live as long as the process, and as their number grows the collector walks all of them again and
again: six full collections, 0.7–0.9 s of the 2.6 s those imports took on the 2-core machine
(2026-12-07). `end` freezes what exists (`gc.freeze`: later collections skip those objects, as
they would have survived them anyway) and turns collections back on for the work. The price is
that the few thousand objects in reference cycles that the imports dropped (about 9 000, about
a megabyte) are frozen with the rest and never freed, in a process that lives for seconds to
minutes.

**pyarrow.** MLflow requires pyarrow, so it is installed, and two imports load it that the
commands never use: pandas (`pandas.compat.pyarrow` imports it to learn its version; pandas then
backs its string columns with it) and MLflow's HDFS artifact repository (`from pyarrow.fs import
...`, guarded by `except ImportError`). pyarrow's libraries are 35–45 MB of the headline run's
peak RSS (477–483 MB with, 434–441 MB without, 2026-12-07). Between `begin` and `end`,
`sys.modules["pyarrow"]` is None, so both imports see pyarrow as absent, as in an environment
without it: pandas keeps strings in Python objects (the same values, CSV and text), and MLflow's
HDFS repository is left without pyarrow's file system. After `end`, `import pyarrow` works again
for whoever needs it. Where HDFS could work (`HADOOP_HOME` or `ARROW_LIBHDFS_DIR` set, or a Hadoop
`CLASSPATH`, which pyarrow's HDFS client needs), or where pyarrow is already imported, it is not
hidden.

pandas objects pickled where pandas uses pyarrow (string columns backed by it) do not load where it
is hidden: a process that hands pandas objects to another starts it with `pyarrow_hidden()` as it
is in its own (the figure worker does).

The headline command (`speccomp run`), its figure worker, `speccomp study` and its spawned workers
(`study-worker`) run their imports inside `during_imports()`, and the run and the study call `end()`
themselves once the libraries are in and the store is open (the block's own `end` is then a
no-op). A caller that never began (a test calling `tracking.main.run` in its own process) is left
as it is: `end` undoes only what `begin` did. Importing this module imports nothing but the
standard library's `contextlib`, `gc`, `os` and `sys`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator, Mapping

HDFS_ENVIRONMENT = ("HADOOP_HOME", "ARROW_LIBHDFS_DIR")
"""Variables that point pyarrow's HDFS client at libhdfs: where one is set, pyarrow stays visible."""

_paused = False
_hid_pyarrow = False


def hdfs_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this environment looks set up for HDFS (pyarrow's client needs libhdfs and Hadoop's classes)."""
    return any(environ.get(name) for name in HDFS_ENVIRONMENT) or "hadoop" in environ.get("CLASSPATH", "").lower()


def pyarrow_hidden() -> bool:
    """Whether pandas in this process runs without pyarrow: hidden now (by `begin`: pandas, if it
    is not imported yet, must be imported before `end`, as `FigureWorker.start` makes sure), or
    pandas was imported without it."""
    if "pyarrow" in sys.modules and sys.modules["pyarrow"] is None:
        return True
    compat = sys.modules.get("pandas.compat.pyarrow")
    return compat is not None and not compat.PYARROW_INSTALLED


def begin(hide_pyarrow: bool = True) -> None:
    """Turn automatic collections off and (`hide_pyarrow`) hide pyarrow until `end`, each only if
    it applies."""
    global _paused, _hid_pyarrow
    if gc.isenabled():
        gc.disable()
        _paused = True
    if hide_pyarrow and "pyarrow" not in sys.modules and not hdfs_configured():
        sys.modules["pyarrow"] = None  # `import pyarrow` raises ImportError, as if it were not installed
        _hid_pyarrow = True


@contextlib.contextmanager
def during_imports(hide_pyarrow: bool = True) -> Iterator[None]:
    """`begin(hide_pyarrow)`, and `end()` when the block is left, however it is left."""
    begin(hide_pyarrow)
    try:
        yield
    finally:
        end()


def end() -> None:
    """After `begin`: pyarrow importable again; every object that exists now frozen, collections on."""
    global _paused, _hid_pyarrow
    if _hid_pyarrow:
        if "pyarrow" in sys.modules and sys.modules["pyarrow"] is None:
            del sys.modules["pyarrow"]
        _hid_pyarrow = False
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
