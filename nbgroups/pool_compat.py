"""How nbgroups imports loky and makes its pool, so that joblib keeps working beside it.

joblib vendors its own copy of loky (``joblib.externals.loky``); nbgroups
depends on the standalone ``loky`` package. The two copies are the same code,
and both register their start method under the one name ``'loky'`` in the
standard library's registry of multiprocessing contexts
(``multiprocessing.context._concrete_contexts``), the last one imported
winning. Each copy's executor finds its context by that name
(``get_context()`` → ``multiprocessing.get_context('loky')``). So once
nbgroups imported the standalone loky, ``joblib.Parallel`` spawned its workers
through the *standalone* copy's spawn code, which hands them the standalone
copy's resource tracker and leaves joblib's unset. A joblib worker that
unpickles an auto-memmapped array then registers the file with joblib's
tracker, finds no connection, and starts a tracker of its own, one per
worker: decrements reach a tracker that never saw the increment (``KeyError``
tracebacks), files are unlinked while another worker still maps them
(``FileNotFoundError``, ``BrokenProcessPool``), the rest is reported leaked
at exit, and every call pays a tracker process start.

So nbgroups undoes that one side effect of its own import: if the name
``'loky'`` (and ``'loky_init_main'``) denoted another copy's context (joblib's)
before nbgroups imported the standalone package, it denotes it again right
after. If joblib's copy is imported later, it registers itself, as it would
without nbgroups. nbgroups' own pool never looks its context up by name: it
is given its copy's context object, so whatever the registry says, its
workers start the standalone way.

Why not simply run nbgroups' pool on joblib's copy (one loky in the
process)? The copy joblib vendors lags behind the package: joblib 1.6
carries loky 3.6, whose manager thread dies on a ``KeyError`` when a pool
breaks with work ids still queued (3.7 drains them first); nbgroups breaks
and replaces pools on purpose (worker deaths, timeouts), and its full test
suite hit exactly that on joblib's copy. A registry entry is a much smaller
thing to share than an executor implementation.
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType
from typing import Any

#: The names loky registers its start methods under, in multiprocessing's registry.
_NAMES = ("loky", "loky_init_main")


@functools.cache
def loky() -> ModuleType:
    """The standalone ``loky`` package, imported without taking the name ``'loky'``
    away from a copy that had it (joblib's)."""
    import multiprocessing.context as mp_context

    registry = mp_context._concrete_contexts  # type: ignore[attr-defined]  # loky registers here
    first = "loky" not in sys.modules
    before = {name: registry.get(name) for name in _NAMES}
    import loky as standalone

    if first:
        for name, ctx in before.items():
            if ctx is not None:
                registry[name] = ctx
    return standalone


def new_pool(workers: int, initializer: Any, initargs: tuple = ()) -> Any:
    """A loky ``ProcessPoolExecutor`` of ``workers`` processes, its trackers started first."""
    mod = loky()
    start_resource_trackers()
    return mod.ProcessPoolExecutor(
        max_workers=workers, initializer=initializer, initargs=initargs,
        context=mod.backend.context.LokyContext(),  # never looked up by name: see above
    )


def pool_errors() -> tuple[type[BaseException], type[BaseException]]:
    """loky's ``(BrokenProcessPool, ShutdownExecutorError)``."""
    executor = loky().process_executor
    return executor.BrokenProcessPool, executor.ShutdownExecutorError


def start_resource_trackers() -> None:
    """Start loky's and multiprocessing's resource trackers now, in the runner thread,
    before it blocks SIGINT and submits (see ``dispatch._block_sigint``).

    Started lazily inside the first ``submit``, CPython's tracker unblocks SIGINT in
    the calling thread once it has spawned, and the workers that same ``submit``
    spawns next inherit that mask: a Jupyter interrupt then killed a worker still
    importing, with a traceback (the interrupt test failed 5 times in 8).
    """
    import multiprocessing.resource_tracker as mp_tracker

    loky()  # first, the way that leaves joblib its name
    from loky.backend import resource_tracker

    resource_tracker.ensure_running()
    mp_tracker.ensure_running()


__all__ = ["loky", "new_pool", "pool_errors", "start_resource_trackers"]
