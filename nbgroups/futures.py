"""``concurrent.futures`` on nbgroups tasks: :class:`Executor` and :class:`TaskFuture`.

::

    Executor.submit ──async_task──▶ runner ──▶ pool ──▶ store (outcome written)
          │                                               │
          └─ TaskFuture, registered by task id ◀── finish listener (runner thread)
                                                   resolves it: result / exception / cancelled

    as_completed(group or ids) ◀── the same listener: Task records (nbgroups.completed)

Every call submitted here is a task of its group exactly as :func:`nbgroups.async_task`
makes one (persisted before it runs, in the progress view and ``fetch_group``,
resumable); the :class:`TaskFuture` is only a view of it for code written for
``concurrent.futures`` (``as_completed``, ``wait``, ``asyncio.wrap_future``,
``loop.run_in_executor``). Futures learn of their task's end from the runner's
finish listener (:meth:`~nbgroups.runner.Runner.add_finish_listener`): no store
polling, no thread per future. A failed call's exception carries the worker's
traceback as its ``__cause__``, as ``ProcessPoolExecutor``'s does.

``Executor.map`` sends its calls in chunks, each an ``async_iter`` task (one row of
the group per chunk; ``chunksize=1``: one task per call), and keeps only a
window of chunks in flight, so a million-call ``map`` holds a few futures, not a
million.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import api
from .arguments import build_options, check_group
from .completed import read_record, remaining
from .errors import (
    ArgumentTypeError,
    ConfigurationError,
    ExecutorShutdown,
    RunnerClosed,
    TaskError,
)
from .jobs import Job
from .outcome import error_of, result_of, state_of, traceback_of
from .runner import Runner
from .serialize import loads_exception, loads_result

__all__ = ["Executor", "TaskFuture", "cancel_tasks"]

MAP_FIRST_CHUNK = 4  # map's automatic chunks start at this many calls per worker (first
MAP_MAX_CHUNK = 16_384  # results come soon when calls are slow), doubling up to this many
MAP_CHUNKS_IN_FLIGHT = 3  # chunks submitted ahead of the one being read
MAP_CALLS_IN_FLIGHT = 1_024  # chunksize=1: single-call tasks submitted ahead


# ---------------------------------------------------------------- finish listener
class _Ended:
    """How a task ended, as a future is told: its state and value from the outcome
    the runner hands over, the full record only when asked (building a ``Task``
    costs ~15 us, a third of a future's whole cost, measured)."""

    __slots__ = ("_job", "_outcome", "_record", "_runner")

    def __init__(self, runner: Runner, job: Any = None, outcome: Any = None,
                 record: Any = None) -> None:
        # (job, outcome) from the finish listener, or the record read from the store
        self._runner = runner
        self._job = job
        self._outcome = outcome
        self._record = record

    @property
    def state(self) -> str:
        """``'success'``, ``'failure'`` or ``'cancelled'``."""
        return self._record.state.value if self._record is not None else state_of(self._outcome)

    def record(self) -> Any:
        """The task's :class:`~nbgroups.Task` record."""
        if self._record is None:
            self._record = self._runner.record_of(self._job, self._outcome, api.Task)
        return self._record

    @property
    def traceback(self) -> str | None:
        """A failed task's traceback text, from the worker."""
        return self._record.traceback if self._record is not None else traceback_of(self._outcome)

    def value(self) -> Any:
        """The result, or the exception of a failed task."""
        o = self._outcome
        if self._record is None:
            # the common shapes straight from the worker's outcome (records.Outcome):
            # one pickled result, or one pickled exception; the rest via the record
            blob, state, error = result_of(o), state_of(o), error_of(o)
            if state == "success" and (blob is None or type(blob) is bytes):
                return None if blob is None else loads_result(blob)
            if state == "failure" and blob is None and error is not None:
                return loads_exception(error)
        return self.record().result


class _Registry:
    """One per runner: task id -> what to call with its record when it finishes.

    A task can end before its future is registered: inline (the sync backend)
    inside the submitting call itself, or on a fast pool in the microseconds
    between. While a submission is under way (:meth:`begin` .. :meth:`end`) the finish
    listener keeps what it finds unclaimed, and :meth:`watch` takes it from
    there; the rest of the time nothing is kept. (Asking the runner whether
    each new task is still pending costs more than the submission itself.)
    """

    def __init__(self, runner: Runner) -> None:
        # weakly: the runner holds this registry (its listener), and the module's
        # WeakKeyDictionary must let a replaced runner go
        self._runner = weakref.ref(runner)
        self.lock = threading.Lock()
        # a list per id: with reuse=True two submissions of one call share its id
        self.waiting: dict[str, list[Callable[[Any], None]]] = {}
        self.busy = 0  # submissions under way
        self.unclaimed: dict[str, tuple[Job, tuple]] = {}  # ended while busy, not watched
        runner.add_finish_listener(self._finished)

    @property
    def runner(self) -> Runner:
        runner = self._runner()
        if runner is None:  # only a live runner calls its listener or makes futures
            raise RunnerClosed("the runner of these futures is gone (nbgroups was reset)")
        return runner

    def _finished(self, pairs: list[tuple[Job, tuple]]) -> None:
        waiting = self.waiting
        if not waiting and not self.busy:
            return
        hits = []
        with self.lock:
            busy = self.busy
            for job, o in pairs:
                resolves = waiting.pop(job.id, None)
                if resolves is not None:
                    hits.append((resolves, job, o))
                elif busy:
                    self.unclaimed[job.id] = (job, o)
        runner = self.runner
        for resolves, job, o in hits:
            ended = _Ended(runner, job, o)
            for resolve in resolves:
                resolve(ended)

    def begin(self) -> None:
        """A submission starts: then :meth:`watch` its id (which ends it), or
        :meth:`end` if it failed."""
        with self.lock:
            self.busy += 1

    def end(self) -> None:
        with self.lock:
            self._ended()

    def _ended(self) -> None:
        self.busy -= 1
        if not self.busy:
            self.unclaimed.clear()

    def watch(self, task_id: str, resolve: Callable[[Any], None], reused: bool = False) -> None:
        """Call ``resolve(ended)`` once the task has a final state (at once if it
        has), and end the submission :meth:`begin` started.

        ``reused``: the id may be of a task that ended long ago (``reuse=True``):
        the runner and the store are asked.
        """
        with self.lock:  # one lock turn: this runs once per submitted call
            pair = self.unclaimed.pop(task_id, None)
            if pair is None:
                self.waiting.setdefault(task_id, []).append(resolve)
            self._ended()
        if pair is not None:
            resolve(_Ended(self.runner, *pair))
        elif reused and not self.runner.pending(task_id):
            self.settle(task_id)

    def settle(self, task_id: str) -> None:
        """Resolve a watched task from the store, if it is final there."""
        record = read_record(self.runner, task_id)
        if record is None or not record.state.final:
            return
        with self.lock:
            resolves = self.waiting.pop(task_id, None)
        if resolves is not None:
            ended = _Ended(self.runner, record=record)
            for resolve in resolves:
                resolve(ended)


_registries: weakref.WeakKeyDictionary[Runner, _Registry] = weakref.WeakKeyDictionary()
_registries_lock = threading.Lock()


def _registry(runner: Runner) -> _Registry:
    reg = _registries.get(runner)
    if reg is None:
        with _registries_lock:
            reg = _registries.get(runner)
            if reg is None:
                reg = _registries[runner] = _Registry(runner)
    return reg


# ---------------------------------------------------------------- futures
class TaskFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` of one nbgroups task.

    ``task_id`` names the task (``nbgroups.fetch(f.task_id)`` reads its record).
    ``cancel()`` cancels the task if it has not started, and then returns True;
    a running or finished task is not stopped (False), as ``concurrent.futures``
    does. The future never reports ``running()``: the pool does not say when a
    task starts. Done-callbacks run on the thread that learns of the end (the
    runner's own, inline: the submitting one): keep them short, never blocking.
    """

    def __init__(self, task_id: str, runner: Runner, owner: Executor | None = None,
                 as_record: bool = False) -> None:
        super().__init__()
        self.task_id = task_id
        self._runner = runner
        self._owner = owner  # the executor that counts it as pending
        self._as_record = as_record  # a map chunk: resolved with the task's record

    def cancel(self) -> bool:
        """Cancel the task if it has not started; True if it is (now) cancelled."""
        if not self.done():
            cancel_tasks([self])
        return self.cancelled()

    def _resolve(self, ended: _Ended) -> None:
        """Take the task's final state (called once, by the registry)."""
        if self._owner is not None:
            self._owner._discard(self)
        state = ended.state
        if self._as_record and state != "cancelled":
            self.set_result(ended.record())
        elif state == "cancelled":
            concurrent.futures.Future.cancel(self)
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
        elif state == "success":
            self.set_result(ended.value())
        else:
            exc = _exception_of(ended.value(), ended)
            tb = ended.traceback
            if tb and exc.__cause__ is None:
                exc.__cause__ = RemoteTraceback(tb)
            self.set_exception(exc)

    def __repr__(self) -> str:
        return f"<TaskFuture {self.task_id} {self._state.lower()}>"


class RemoteTraceback(Exception):
    """The ``__cause__`` of a failed call's exception: the traceback in the worker."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def cancel_tasks(futures: Iterable[TaskFuture]) -> int:
    """Cancel the tasks of these futures that have not started, in one pass per
    runner; returns how many were cancelled. Their futures are marked cancelled
    before this returns (the runner's cancel tells the finish listeners)."""
    by_runner: dict[Runner, set[str]] = {}
    for f in futures:
        if not f.done():
            by_runner.setdefault(f._runner, set()).add(f.task_id)
    n = 0
    for runner, ids in by_runner.items():
        n += runner.cancel(None, None, ids=ids)
    return n


def _exception_of(exc: Any, ended: _Ended) -> BaseException:
    """A failed task's exception (``exc``: its result), for a future to raise."""
    if isinstance(exc, list):  # async_iter: the first failed item's exception
        exc = next((e for e in exc if isinstance(e, BaseException)), None)
    if isinstance(exc, BaseException):
        return exc
    return TaskError("TaskFailed", ended.record().error or "the task failed")


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose every call is an nbgroups task.

    The backend is the kernel's (``configure(backend=...)``: loky, thread, sync,
    dask); the executor owns no pool, so ``shutdown()`` only stops it taking
    calls (and waits for, or cancels, its own). ``submit`` returns a real
    ``concurrent.futures.Future`` (a failed task raises its exception from
    ``result()``); ``map`` yields results in input order, sending the calls in
    chunks.

    Args:
        group: the group of every call (``None``: no group).
        **options: the submission options of :func:`async_task` (``timeout``,
            ``retries``, ``cached``, ``hook``, ``save``, ``task_name``,
            ``reuse``); not ``sync``.

    Raises:
        ArgumentTypeError: an option of the wrong type.
        ConfigurationError: an option out of range, or ``sync=True``.

    Example:
        >>> from nbgroups import Executor
        >>> with Executor(group='doc-executor') as ex:
        ...     ex.submit(pow, 2, 10).result()
        ...     list(ex.map(abs, [-1, -2, 3]))
        1024
        [1, 2, 3]
    """

    def __init__(self, group: str | None = None, **options: Any) -> None:
        if group is not None:
            check_group(group)
            options["group"] = group
        if options.get("sync"):
            raise ConfigurationError(
                "Executor(sync=True) is not supported: a failed call would raise at submit() "
                "instead of in its future; use nbgroups.configure(backend='sync')")
        build_options(options, api.settings(), {}, None)  # a bad option fails here
        self.group = group
        self._options = options
        self._futures: set[TaskFuture] = set()  # not done yet
        self._lock = threading.Lock()
        self._shutdown = False
        self._cancelled = False  # shutdown(cancel_futures=True)

    # -- submitting
    def submit(self, fn: Callable | str, /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Run ``fn(*args, **kwargs)`` as a task of the group; returns its future.

        Every keyword goes to ``fn`` (the executor's options were given to it).
        """
        self._check_open()  # before a task is made; _track checks again under the lock
        return self._submit(fn, args, kwargs, check_open=True)

    def _submit(self, fn: Callable | str, args: tuple, kwargs: dict,
                check_open: bool = False) -> TaskFuture:
        runner = api.runner()
        reg = _registry(runner)
        reg.begin()
        try:
            # options as keywords when fn has none: async_task's memoized fast path
            tid = api.async_task(fn, *args, q_options=self._options, **kwargs) if kwargs \
                else api.async_task(fn, *args, **self._options)
        except BaseException:
            reg.end()
            raise
        return self._track(tid, runner, reg, check_open=check_open)

    def _track(self, tid: str, runner: Runner, reg: _Registry, as_record: bool = False,
               check_open: bool = False) -> TaskFuture:
        """The future of a task just submitted (ends the submission begun).

        ``check_open``: refuse it if ``shutdown()`` came first, checked under the
        lock that adds it, so a ``shutdown(wait=True)`` running meanwhile either
        refused it or waits for it; a refused task is cancelled if not started.
        """
        fut = TaskFuture(tid, runner, self, as_record)
        with self._lock:
            refused = check_open and self._shutdown
            if not refused:
                self._futures.add(fut)
        if refused:
            reg.end()
            runner.cancel(None, None, ids={tid})
            self._raise_shutdown()
        reg.watch(tid, fut._resolve, reused=bool(self._options.get("reuse", api.settings().reuse)))
        return fut

    def _discard(self, fut: TaskFuture) -> None:
        with self._lock:
            self._futures.discard(fut)

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` was called (it takes no more calls)."""
        return self._shutdown

    def _check_open(self) -> None:
        with self._lock:
            shut = self._shutdown
        if shut:
            self._raise_shutdown()

    @staticmethod
    def _raise_shutdown() -> None:
        raise ExecutorShutdown("cannot schedule new futures after shutdown")

    def _refill_allowed(self) -> bool:
        # map() reads its iterables as results are read: after shutdown() it goes
        # on (its calls were accepted), unless shutdown cancelled the futures
        return not self._cancelled

    def map(self, fn: Callable | str, *iterables: Iterable, timeout: float | None = None,
            chunksize: int | None = None) -> Iterator:
        """``fn`` over the iterables' items (zipped), results in input order.

        The calls go in chunks, each one ``async_iter`` task of the group:
        ``chunksize=None`` grows them from 4 calls per worker to ~16k;
        ``chunksize=1`` makes every call its own task (as :meth:`submit`). Only a
        few chunks are in flight: the iterables are read as results are, so a
        million calls never make a million futures. ``timeout`` (seconds, from
        this call) raises ``TimeoutError`` when a result is not there in time;
        the first failed call's exception is raised where its result would be.
        Leaving the loop early cancels what has not started.
        """
        if timeout is not None and (isinstance(timeout, bool) or
                                    not isinstance(timeout, int | float) or timeout < 0):
            raise ArgumentTypeError(f"timeout must be None or seconds >= 0, got {timeout!r}")
        if chunksize is not None and (isinstance(chunksize, bool) or
                                      not isinstance(chunksize, int) or chunksize < 1):
            raise ArgumentTypeError(f"chunksize must be None or an int >= 1, got {chunksize!r}")
        if not iterables:
            raise ArgumentTypeError("map() needs at least one iterable")
        self._check_open()
        end = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables, strict=False)  # the shortest ends it, as map() does
        if chunksize == 1:
            return self._map_calls(fn, calls, end)
        return self._map_chunks(fn, calls, end, chunksize)

    def _map_calls(self, fn, calls: Iterator[tuple], end: float | None) -> Iterator:
        window: collections.deque[TaskFuture] = collections.deque(
            self._submit(fn, args, {}) for args in itertools.islice(calls, MAP_CALLS_IN_FLIGHT))

        def results() -> Iterator:
            try:
                while window:
                    fut = window.popleft()
                    if self._refill_allowed():
                        for args in itertools.islice(calls, 1):
                            window.append(self._submit(fn, args, {}))
                    yield fut.result(remaining(end))
            finally:
                cancel_tasks(window)
        return results()

    def _map_chunks(self, fn, calls: Iterator[tuple], end: float | None,
                    chunksize: int | None) -> Iterator:
        sizes = itertools.repeat(chunksize) if chunksize else _growing()
        window: collections.deque[TaskFuture] = collections.deque()

        def more() -> bool:
            if not self._refill_allowed():
                return False
            items = list(itertools.islice(calls, next(sizes)))
            if not items:
                return False
            runner = api.runner()
            reg = _registry(runner)
            reg.begin()
            try:
                # tuples: async_iter unpacks each into fn's positional arguments
                tid = api.async_iter(fn, items, **self._options)
            except BaseException:
                reg.end()
                raise
            window.append(self._track(tid, runner, reg, as_record=True))
            return True

        for _ in range(MAP_CHUNKS_IN_FLIGHT):
            if not more():
                break

        def results() -> Iterator:
            try:
                while window:
                    fut = window.popleft()
                    more()
                    record = fut.result(remaining(end))
                    values = record.result
                    if record.success is False and not isinstance(values, list):
                        raise _exception_of(values, _Ended(api.runner(), record=record))
                    for value in values:
                        if record.success is False and isinstance(value, BaseException):
                            raise value
                        yield value
            finally:
                cancel_tasks(window)
        return results()

    # -- stopping
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; ``cancel_futures``: cancel this executor's tasks
        not yet started; ``wait``: return once every task it submitted ended.
        The kernel's pool goes on (other executors and groups use it)."""
        with self._lock:
            self._shutdown = True
            self._cancelled = self._cancelled or cancel_futures
            pending = list(self._futures)
        if cancel_futures:
            cancel_tasks(pending)
        if wait:
            concurrent.futures.wait(pending)


def _growing() -> Iterator[int]:
    size = MAP_FIRST_CHUNK * max(1, api.settings().workers)
    while True:
        yield size
        size = min(size * 2, MAP_MAX_CHUNK)


