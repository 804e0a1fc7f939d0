"""Which loky nbgroups' process pool runs on, so that joblib keeps working beside it.

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

So when joblib is installed, nbgroups runs its pool on joblib's copy of loky:
one copy of loky in the process, one registry entry, one resource tracker,
one exit hook, exactly the state joblib (and scikit-learn's ``n_jobs=``) has
without nbgroups. The standalone package is the fallback when joblib is
absent. The pool is also given its context object explicitly, so a later
import of the other copy (by user code) cannot change how nbgroups' own
workers are started.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

#: The oldest loky whose executor nbgroups relies on (pyproject: loky>=3.4).
MIN_LOKY = (3, 4)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@functools.cache
def loky() -> ModuleType:
    """The loky package nbgroups' pool uses: joblib's copy if installed and recent enough,
    else the standalone ``loky``."""
    try:
        from joblib.externals import loky as vendored
    except ImportError:
        vendored = None
    if vendored is not None and _version(getattr(vendored, "__version__", "0")) >= MIN_LOKY:
        return vendored
    import loky as standalone

    return standalone


def new_pool(workers: int, initializer: Any) -> Any:
    """A loky ``ProcessPoolExecutor`` of ``workers`` processes, its trackers started first."""
    mod = loky()
    start_resource_trackers()
    return mod.ProcessPoolExecutor(
        max_workers=workers, initializer=initializer,
        context=mod.backend.context.LokyContext(),  # never looked up by name: see above
    )


def pool_errors() -> tuple[type[BaseException], type[BaseException]]:
    """``(BrokenProcessPool, ShutdownExecutorError)`` of the loky the pool runs on."""
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

    importlib.import_module(f"{loky().__name__}.backend.resource_tracker").ensure_running()
    mp_tracker.ensure_running()


__all__ = ["loky", "new_pool", "pool_errors", "start_resource_trackers"]
