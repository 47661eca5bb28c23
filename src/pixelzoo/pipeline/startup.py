"""Stage start-up: the fixed cost every stage process pays before its real work (benchmarks/startup.py).

Setting up a model stage imports torch, mlflow and sqlalchemy and opens the tracking store: ~420,000
objects the garbage collector tracks, all alive until the process ends. The cyclic collector runs again
and again while they are created, traverses all of them each time, and once more when the interpreter
exits: about a fifth of a small stage's CPU time. So a stage pauses the collector for its set-up and,
when its real work starts, freezes what set-up created (``gc.freeze``: never traversed again) and
resumes it. The work itself runs with the collector on, as usual.
"""

from __future__ import annotations

import gc


def pause_gc() -> None:
    """Pause the cyclic garbage collector for the stage's set-up (imports, params, store, inputs)."""
    gc.disable()


def resume_gc() -> None:
    """Set-up done: freeze the objects it created and resume the collector. No-op unless paused."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
