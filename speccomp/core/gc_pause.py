"""Python's cyclic garbage collector held off while a command imports its libraries.

Importing torch, MLflow and MLflow's SQL store makes about 400 000 objects that live as long as
the process, and as their number grows the collector walks all of them again and again: six full
collections, 0.7–0.9 s of the 2.6 s those imports took on the 2-core machine (2026-12-07). So
the headline command (`speccomp run`) and its figure worker `pause()` collections before their
imports and `resume()` once the libraries are in: `resume` freezes what exists (`gc.freeze`:
later collections skip those objects, as they would have survived them anyway) and turns
collections back on for the work. The price is that the few thousand objects in reference
cycles that the imports dropped (about 9 000, about a megabyte) are frozen with the rest and
never freed, in a process that lives for seconds to minutes.

A caller that never paused (a test calling `tracking.main.run` in its own process) is left as it
is: `resume` acts only after `pause` turned collections off. Importing this module imports
nothing but `gc`.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn automatic collections off until `resume` (nothing if they are off already)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """After `pause`: freeze every object that exists now and turn collections back on."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
