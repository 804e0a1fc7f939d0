"""The joblib backend ``'nbgroups'``: every call of a ``Parallel`` is a task of a group.

Importing this module registers it (``joblib.register_parallel_backend``), as
``ray.util.joblib.register_ray`` and ipyparallel's ``register_joblib_backend``
do for theirs::

    import nbgroups.joblib_backend  # noqa: F401 - registers 'nbgroups'
    with joblib.parallel_config(backend='nbgroups', group='cv'):
        GridSearchCV(model, grid, n_jobs=-1).fit(X, y)

Keywords of ``parallel_config`` other than joblib's own (``group``,
``timeout``, ``retries``, ``cached``, ``save``, ``reuse``...) are the submission
options of :func:`nbgroups.async_task`. joblib's batches are unpacked into one
task per call, as dask's backend does, so each fit is a row of the group with
its arguments, result and duration; nbgroups batches them again on the way to
the workers. ``n_jobs=-1`` means the configured workers (``configure(workers=)``);
a ``Parallel`` inside a task runs sequentially; when a call fails joblib aborts
and the calls not yet started are cancelled (recorded as cancelled in the group).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Any

import joblib
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase, SequentialBackend

from . import api
from .futures import Executor, TaskFuture

__all__ = ["NbgroupsBackend", "register"]


class _Sequential:
    """One call of a joblib batch, run with nested ``Parallel`` calls sequential
    (the pool's workers are busy already) and, in a worker process, native
    thread pools (BLAS, OpenMP) limited to ``threads``, as joblib's loky backend
    limits them: two workers each running BLAS on every core oversubscribe the
    machine (measured: GridSearchCV of 40 LogisticRegression fits on 2 cores,
    4.5 x slower than loky without the limit, 1.1 x with it). In the kernel's
    own process (thread and sync backends) the limit would be process-wide and
    race between tasks, so it is left alone there, as joblib's threading
    backend does. Named after the function it wraps."""

    def __init__(self, func: Any, threads: int | None) -> None:
        self.func = func
        self.threads = threads
        self.kernel_pid = os.getpid()
        inner = getattr(func, "function", func)  # scikit-learn's delayed() wrapper
        self.__module__ = getattr(inner, "__module__", None) or __name__
        self.__qualname__ = getattr(inner, "__qualname__", None) or type(inner).__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with joblib.parallel_config(backend="sequential"), self._limits():
            return self.func(*args, **kwargs)

    def _limits(self) -> Any:
        if self.threads is None or os.getpid() == self.kernel_pid:
            return contextlib.nullcontext()
        controller = _controller()
        return contextlib.nullcontext() if controller is None else \
            controller.limit(limits=self.threads)


_CONTROLLER: list = []


def _controller() -> Any:
    """A worker's threadpoolctl controller (made once: it scans the loaded
    libraries), or None without threadpoolctl (scikit-learn depends on it)."""
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _CONTROLLER.append(None)
        else:
            _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


class _Callbacks:
    """joblib's completion callbacks, called on one thread of their own.

    A callback dispatches joblib's next batch, i.e. submits: from the runner
    thread that would run submissions inside its completion step, and with the
    inline (sync) backend each call would start the next one inside itself, a
    recursion as deep as the number of calls.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, callback: Any, out: Any) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="nbgroups-joblib-callbacks")
                    self._thread.start()
        self._queue.put((callback, out))

    def _run(self) -> None:
        while True:
            callback, out = self._queue.get()
            try:
                callback(out)
            except BaseException:  # joblib records errors itself; never stop this thread
                import logging

                logging.getLogger("nbgroups").exception("nbgroups: joblib callback failed")


_CALLBACKS = _Callbacks()


class _BatchFuture:
    """A joblib batch: done when all its calls' tasks are, result in order."""

    def __init__(self, futures: list[TaskFuture], callback: Any) -> None:
        self.futures = futures
        self._left = len(futures)
        self._lock = threading.Lock()
        self._callback = callback
        for f in futures:
            f.add_done_callback(self._one_done)

    def _one_done(self, _f: Any) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last and self._callback is not None:
            _CALLBACKS.put(self._callback, self)

    def result(self, timeout: float | None = None) -> list:
        return [f.result(timeout) for f in self.futures]

    get = result  # joblib's AsyncResult name


class NbgroupsBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ``Parallel`` on nbgroups: one task of the group per call.

    ``group`` and ``options`` are the submission options of
    :func:`nbgroups.async_task`, checked when the backend is made.
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True  # parallel_config(inner_max_num_threads=)
    supports_sharedmem = False  # require='sharedmem' makes joblib pick threads instead
    uses_threads = False
    default_n_jobs = -1

    def __init__(self, group: str | None = None, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **options: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        self.group = group
        self.options = options
        self._executor = Executor(group, **options)  # bad options fail here

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` as joblib counts it; negative counts from the configured workers."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        workers = api.settings().workers
        if n_jobs is None:
            return workers
        if n_jobs < 0:
            return max(workers + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_args: Any) -> int:
        self.parallel = parallel
        if self._executor._shutdown:
            self._executor = Executor(self.group, **self.options)
        n = self.effective_n_jobs(n_jobs)
        # n_jobs=1 would make joblib run the calls itself, outside any group
        return max(n, 2)

    def submit(self, func: Any, callback: Any = None) -> _BatchFuture:
        """One task per call of joblib's batch ``func`` (a ``BatchedCalls``)."""
        ex = self._executor
        threads = self.inner_max_num_threads or max(os.cpu_count() or 1, 1) // max(
            api.settings().workers, 1) or 1
        futures = [ex.submit(_Sequential(f, threads), *args, **kwargs)
                   for f, args, kwargs in func.items]
        return _BatchFuture(futures, callback)

    def retrieve_result_callback(self, out: _BatchFuture) -> list:
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: cancel the calls not yet started (recorded as cancelled)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if ensure_ready:
            self._executor = Executor(self.group, **self.options)

    def get_nested_backend(self) -> tuple[Any, None]:
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None


def register() -> None:
    """Register the ``'nbgroups'`` joblib backend (done when this module is imported)."""
    joblib.register_parallel_backend("nbgroups", NbgroupsBackend)


register()
