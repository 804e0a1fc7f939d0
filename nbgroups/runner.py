"""The runner: one per kernel, between the api and the executor.

::

    async_task / async_iter ──▶ open pages (per group) ──flush──▶ store: spec pages
                                       │                          (before dispatch)
                                       ▼
                                ready queue ──adaptive batches──▶ executor (loky …)
                                                                     │ run_batch
                                       ┌─────────── outcomes ◀───────┘
                                       ▼
         retries re-queued ◀── complete ──▶ store: outcome pages + counters
                                       │        (before a task counts as finished)
                                       └──▶ waiters woken, hooks called, progress views

Submission (the caller's thread) only appends the call to an *open page* of
its group and returns the id: ids and names are derived from the page, so
nothing is written per task. The runner thread wakes, lets a burst of
submissions settle for a moment, then *flushes*: every open page goes to the
store in one transaction, and its calls join the ready queue.

Dispatch (:mod:`nbgroups.dispatch`) cuts the ready queue into batches sized
from the measured duration of recent calls (like joblib's auto-batching, but
per task tracking stays), keeps a couple of batches per worker in flight, and
stamps each batch with a monitor file so that a dead worker can be traced to
the call it ran. Exit (:mod:`nbgroups.shutdown`) stops the runners before
loky's own exit hook.

Completion (:mod:`nbgroups.completion`) writes the outcomes of everything
that finished since the last look in one transaction, re-queues failed runs
that have retries left, wakes waiters (one condition: every wait in nbgroups
goes through :meth:`wait`), and calls hooks.

Faults (:mod:`nbgroups.recovery`): a broken pool (a worker died) fails only
the call that was running in the dead worker; the rest of its batch and of
the other in-flight batches go back to the queue and run on a fresh pool. A
call past its ``timeout`` has its worker killed, and fails with
:class:`TaskTimeout`. Cancelling and running stored tasks again are in
:mod:`nbgroups.control`; the in-memory values (jobs, pages, batches) in
:mod:`nbgroups.jobs`.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from . import names, shutdown
from .completion import Completion
from .config import Settings
from .control import Control, process_id
from .dispatch import Dispatch
from .errors import RunnerClosed, SerializationError, StoreError
from .executors import Executor, SyncExecutor
from .jobs import (
    FINAL,
    QUEUED,
    STORED_STATES,
    Batch,
    Job,
    OpenPage,
    Options,
    outcome_of,
)
from .records import GroupCounts, Outcome, State, TaskRecord
from .recovery import Recovery
from .serialize import (
    callable_name,
    dumps,
    dumps_exception,
    format_exception,
    loads_exception,
)
from .store import DiskStore, Store, build_record

log = logging.getLogger("nbgroups")

LINGER_SECONDS = 0.02
LINGER_CALLS = 4096
POLL_SECONDS = 0.25


class Runner(Dispatch, Completion, Recovery, Control):
    """Owns the executor, the in-memory task state and the two store layers."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else DiskStore(settings.store)
        self._cache_store: Store | None = None
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._changed = threading.Condition()
        self._version = 0
        self._wake = threading.Event()
        self._open: dict[tuple, OpenPage] = {}
        self._last_page: dict[tuple, int] = {}  # (layer, group) -> key of its open page
        self._sealed: list[OpenPage] = []
        self._writing: list[OpenPage] = []  # taken from the above by the flush writing them
        self._pending = 0
        self._ready: collections.deque[Job] = collections.deque()
        self._inflight: dict[int, Batch] = {}
        self._done: collections.deque = collections.deque()
        self._live: dict[tuple, list[int]] = {}  # (layer, group) -> [queued, running]
        self._active: dict[str, Job] = {}  # task id -> job, until it finishes
        self._reruns: dict[tuple, int] = {}  # (layer, group, previous state) -> re-runs
        self._page_hooks: dict[str, Any] = {}  # page prefix -> hook, for pages made here
        # The last finished jobs with their outcomes (already in the store):
        # result(id) right after a task finished needs no store read.
        self._recent: collections.OrderedDict[str, tuple[Job, tuple]] = collections.OrderedDict()
        self._batch_ids = itertools.count(1)
        # per function name: [seconds per call, pickled result bytes], measured
        self._stats: dict[str, list] = {}
        self.owner = process_id()  # recorded with every page: resume_group elsewhere asks
        self._unstored: list[tuple[Job, tuple]] = []  # finished, their write failed
        self.store_error: BaseException | None = None
        self.page_error: BaseException | None = None  # the last flush failed: pages kept
        self._executor: Executor | None = None
        self._inline = SyncExecutor(1)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._monitor_dir: str | None = None
        self._monitors: list[str] = []  # monitor files free for the next batches
        self._listeners: list[Callable[[], None]] = []
        self._finish_listeners: list[Callable[[list[tuple[Job, tuple]]], None]] = []
        self.restarts = 0
        #: the class of the records handed to hooks (the api sets its Task)
        self.record_class: type = TaskRecord

    # ------------------------------------------------------------------ stores
    def store_for(self, ttl: int | None) -> Store:
        """The store of a layer: the durable one (``ttl`` None) or the cache layer."""
        if ttl is None:
            return self.store
        if self._cache_store is None:
            with self._lock:
                if self._cache_store is None:
                    base = getattr(self.store, "directory", None)
                    if base is None:
                        from .store import MemoryStore

                        self._cache_store = MemoryStore(keep_args=False, ttl=ttl)
                    else:
                        self._cache_store = DiskStore(base / "cache", keep_args=False, ttl=ttl)
        return self._cache_store

    # ------------------------------------------------------------------ submit
    def submit(
        self, func: Any, calls: list[tuple[tuple, dict | None]], options: Options,
        *, iterable: bool = False, inline: bool = False, raise_errors: bool = False,
    ) -> list[str]:
        """Queue calls of ``func``; returns their task ids (no I/O on this path).

        With ``iterable`` each element of ``calls`` is ``(items, None)``: one
        task whose arguments are a list of items. ``inline`` runs the calls
        here and now (the ``sync`` option and backend).
        """
        if self._closed:
            raise RunnerClosed("this nbgroups runner was closed; call nbgroups.configure()")
        inline = inline or self.settings.backend == "sync"
        n = len(calls)
        blob = self._pickled_func(func, options)  # raises before anything is registered
        where = (options.ttl is not None, options.group)  # layer and group
        with self._lock:
            key = id(options)  # api memoizes Options; the open page keeps it alive
            page = self._open.get(key)
            if page is None:
                # One open page per group and layer: other options (task_name=,
                # timeout=...) seal the group's open page first, or a later page
                # would be numbered before earlier calls (submission order lost).
                last = self._last_page.get(where)
                if last is not None and last in self._open:
                    self._seal(last)
                self._last_page[where] = key
            if page is None or len(page.jobs) + n > names.PAGE_CAPACITY:
                if page is not None:
                    self._seal(key)
                page = self._open[key] = OpenPage(names.new_prefix(), options, time.time())
            fref = self._func_ref(page, func, blob)
            jobs = page.jobs
            base = len(jobs)
            prefix = page.prefix
            task_name = options.task_name
            ids = []
            for i, (args, kwargs) in enumerate(calls, base):
                tid = f"{prefix}{i:08x}"
                job = Job(tid, fref, args, kwargs, options, prefix, task_name)
                if iterable:
                    job.items = args
                jobs.append(job)
                ids.append(tid)
            self._pending += n
            live = self._live.get(where)
            if live is None:
                live = self._live[where] = [0, 0]
            if inline:
                mine = jobs[base:]
                for j in mine:  # runs here: the flush must not queue it for the pool
                    j.state = State.RUNNING
                live[1] += n
            else:
                live[0] += n
        if inline:
            self.flush()
            self._run_inline(mine, raise_errors)
        else:
            if self._thread is None:
                self._ensure_thread()
            if not self._wake.is_set():
                self._wake.set()
        return ids

    def _pickled_func(self, func: Any, options: Options) -> bytes | None:
        """The callable pickled for its page: once per page, not per call, and not
        cached across pages (a notebook function's globals may change between
        cells). None for a dotted path, or when the open page has it already."""
        if isinstance(func, str):
            return None
        page = self._open.get(id(options))
        if page is not None and id(func) in page.func_index:
            return None
        try:
            return dumps(func)
        except Exception as exc:
            raise SerializationError(
                f"func {callable_name(func)} cannot be pickled to be sent to a worker "
                f"({type(exc).__name__}: {exc}); it may hold a lock, a file or a "
                "connection: create those inside the function") from None

    def _func_ref(self, page: OpenPage, func: Any, blob: bytes | None) -> tuple:
        key = func if isinstance(func, str) else id(func)
        ref = page.func_index.get(key)
        if ref is None:
            ref = (func, None) if isinstance(func, str) else \
                (callable_name(func), blob if blob is not None else dumps(func))
            page.func_index[key] = ref
            page.funcs.append(func)  # keeps id(func) valid while the page is open
        return ref

    def _seal(self, key: tuple) -> None:
        """Close an open page so that new calls start a new one (flushed later)."""
        page = self._open.pop(key)
        self._sealed.append(page)

    def flush(self) -> None:
        """Write every open page to the store, then queue its calls.

        Called by the runner thread after a burst of submissions, and by
        readers so that a task is visible as soon as its id was returned.
        """
        with self._flush_lock:
            with self._lock:
                pages = [*self._sealed, *self._open.values()]
                self._open = {}
                self._sealed = []
                self._pending = 0
                self._writing = pages
            if not pages:
                return
            try:
                self._write_pages(pages)
            except BaseException as exc:
                self.page_error = exc
                self._notify()  # waiters raise at once (see wait)
                raise
            else:
                self.page_error = None
            finally:
                with self._lock:
                    self._writing = []

    def _write_pages(self, pages: list[OpenPage]) -> None:
        """Write pages to their layers' stores, then queue their calls."""
        by_layer: dict[int | None, list[OpenPage]] = {}
        for p in pages:
            by_layer.setdefault(p.options.ttl, []).append(p)
        unwritten = list(pages)
        for ttl, layer_pages in by_layer.items():
            drafts = [self._draft(p) for p in layer_pages]
            failed: list = []
            try:
                try:
                    written = self.store_for(ttl).write_pages(drafts, ttl=ttl)
                except Exception:
                    written, failed = self._write_salvaging(layer_pages, drafts, ttl)
            except Exception:
                with self._lock:  # nothing is dropped: the next flush tries again
                    self._sealed[:0] = unwritten
                raise
            unwritten = [p for p in unwritten if all(p is not q for q in layer_pages)]
            unsent = {job.id for job, _ in failed}
            with self._lock:
                active, ready = self._active, self._ready
                for p, sp in zip(layer_pages, written, strict=True):
                    gen, created = sp.gen, sp.created
                    for j in p.jobs:
                        j.gen = gen
                        j.submitted = created
                        active[j.id] = j
                        if j.state is QUEUED and j.id not in unsent:
                            if j.items is None:
                                ready.append(j)
                            else:
                                self._enqueue(j)
            if failed:
                self._finish(failed)

    def _draft(self, p: OpenPage) -> dict:
        """An open page as the store's ``write_pages`` takes it."""
        funcs = list(p.func_index.values())  # in order of first use, as the jobs name them
        index = {f: i for i, f in enumerate(funcs)}
        calls = tuple(  # plain tuples in Call's layout: fast to pickle
            (i, index[j.func], j.args if j.items is None else j.items,
             j.kwargs, j.task_name, j.items is not None)
            for i, j in enumerate(p.jobs)
        )
        opts = p.options
        if opts.hook is not None:
            self._page_hooks[p.prefix] = opts.hook
        return dict(
            prefix=p.prefix, group=opts.group, created=p.created, funcs=tuple(funcs),
            calls=calls, options={"timeout": opts.timeout, "retries": opts.retries,
                                  "save": opts.save, "ttl": opts.ttl, "hook": opts.hook,
                                  "owner": self.owner},
        )

    def _write_salvaging(self, layer_pages: list[OpenPage], drafts: list[dict],
                         ttl: int | None) -> tuple[list, list]:
        """A page write failed. If calls whose arguments cannot be pickled are the
        cause, their pages are stored with those calls' arguments left out and
        those calls fail (returned as finished runs); the rest goes on. If not
        (the store itself failed), the error is raised again."""
        bad: dict[str, str] = {}
        for d in drafts:
            calls = []
            for c in d["calls"]:
                try:
                    dumps((c[2], c[3]))
                    calls.append(c)
                except Exception as exc:
                    bad[names.task_id(d["prefix"], c[0])] = f"{type(exc).__name__}: {exc}"
                    calls.append((*c[:2], None, None, *c[4:]))
            d["calls"] = tuple(calls)
            try:
                dumps(d["options"]["hook"])
            except Exception:  # kept for this kernel's re-runs only (_page_hooks)
                d["options"] = {**d["options"], "hook": None}
        written = self.store_for(ttl).write_pages(drafts, ttl=ttl)  # may raise: store error
        now = time.time()
        failed = []
        for p in layer_pages:
            for j in p.jobs:
                if j.id in bad:
                    err = SerializationError(
                        f"an argument of this task cannot be pickled to be sent to a worker "
                        f"({bad[j.id]}); it was not run")
                    tb = format_exception(err)
                    failed.append((j, outcome_of(j, "failure", now, now, None,
                                                 dumps_exception(err, tb), tb)))
        return written, failed

    # ------------------------------------------------------------------ inline
    def _run_inline(self, jobs: list[Job], raise_errors: bool) -> None:
        with self._lock:
            for j in jobs:
                if j.state not in FINAL:
                    self._active[j.id] = j
        for n, job in enumerate(jobs):
            if job.state in FINAL:  # failed already (an argument that does not pickle)
                if raise_errors:
                    raise SerializationError(
                        "an argument of this call cannot be pickled; it was not run")
                continue
            try:
                while True:
                    job.attempt += 1
                    call = (job.id, 0, job.items if job.items is not None else job.args,
                            job.kwargs, job.items is not None, job.attempt + job.runs_before)
                    payload = dumps((0, [job.func], [call]))
                    (out,) = self._inline.submit(payload, None).result()
                    if out[1] == "failure" and job.attempt <= job.options.retries:
                        continue
                    break
            except KeyboardInterrupt:
                # Ctrl-C / kernel interrupt inside an inline task stops the cell:
                # this task failed, the ones after it are cancelled (resumable).
                self._interrupted(job, jobs[n + 1:])
                raise
            if job.items is not None and out[5] is not None:
                # same shape as a pooled async_iter (a list of chunks): a failed
                # iter task's result is then the items' list, not its first error
                out = (*out[:5], [out[5]], *out[6:])
            self._finish([(job, out)])
            if raise_errors and out[1] == "failure":
                exc = loads_exception(out[6])
                raise exc

    # ------------------------------------------------------------------ thread
    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="nbgroups-runner", daemon=True
                    )
                    self._thread.start()
                    shutdown.RUNNERS.add(self)
                    if not shutdown.hooks_registered():
                        shutdown.hook_exit()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._next_deadline())
            self._wake.clear()
            try:
                self._linger()
                self.flush()
                self._collect()
                if self._unstored and not self._done:
                    self._finish([])
                self._dispatch()
                self._check_timeouts()
            except BaseException:  # the runner thread must survive anything
                if shutdown.exiting():  # what was not sent stays queued in the store, resumable
                    break
                log.exception("nbgroups runner error")
                time.sleep(0.1)
        with contextlib.suppress(Exception):  # store what finished meanwhile
            self._collect()

    def _linger(self) -> None:
        """Let a burst of submissions settle, so that pages hold many calls.

        A page write costs ~0.2 ms whatever its size: a loop of ``async_task``
        calls should make a few large pages, not one per call. A lone call is
        flushed at once (latency); a burst until it pauses for a millisecond,
        reaches LINGER_CALLS, or has waited LINGER_SECONDS.
        """
        seen = self._pending
        if seen <= 1:
            return
        deadline = time.monotonic() + LINGER_SECONDS
        while seen < LINGER_CALLS and time.monotonic() < deadline:
            time.sleep(0.001)
            if self._pending == seen:
                return
            seen = self._pending

    def _next_deadline(self) -> float | None:
        if self._unstored:
            return 1.0  # retry the failed outcome write
        if any(b.jobs[0].options.timeout or b.jobs[-1].options.timeout
               for b in self._inflight.values()):
            return 0.1
        return None if not self._inflight and not self._ready else 0.5

    def record_of(self, job: Job, o: tuple | None, cls: type = TaskRecord) -> TaskRecord:
        """The record of a finished job from its outcome tuple, without a store read."""
        o = None if o is None else Outcome._make(o)
        return build_record(
            job.id, job.task_name or names.name_of(job.id), job.func[0],
            None if job.items is not None or job.options.ttl is not None else job.args,
            None if job.options.ttl is not None else job.kwargs, o, job.options.group,
            job.submitted, cls,
            items=job.items,
        )

    def recent(self, task_id: str, ttl: int | None, cls: type = TaskRecord) -> TaskRecord | None:
        """The record of a task this runner finished lately, or None (then read the store)."""
        hit = self._recent.get(task_id)
        if hit is None or ttl is not None or hit[0].options.ttl is not None:
            return None  # the cache layer's entries expire: only the store knows
        job, o = hit
        if job.options.group and self.store_for(ttl).gen(job.options.group) != job.gen:
            return None  # the label was deleted since: the store knows the truth
        return self.record_of(job, o, cls)

    # ------------------------------------------------------------------ waiting
    def live_counts(self, group: str | None, ttl: int | None = None) -> tuple[int, int]:
        """``(queued, running)`` of this process's tasks of ``group``."""
        with self._lock:
            q, r = self._live.get((ttl is not None, group), (0, 0))
            return max(q, 0), max(r, 0)

    def counts(self, group: str, ttl: int | None = None) -> GroupCounts:
        """Stored counts of ``group`` plus this process's queued/running."""
        self.flush()
        c = self.store_for(ttl).counts(group)
        queued, running = self.live_counts(group, ttl)
        with self._lock:  # re-runs (retry_group, reuse) count as unfinished until they end
            again = {p: self._reruns.get((ttl is not None, group, p), 0) for p in STORED_STATES}
        c = replace(c, done=max(0, c.done - again["success"]),
                    failed=max(0, c.failed - again["failure"]),
                    cancelled=max(0, c.cancelled - again["cancelled"]))
        unseen = max(0, c.submitted - c.finished - c.cancelled - queued - running)
        # Unfinished tasks this process does not hold: queued elsewhere (another
        # kernel) or orphaned by a dead one; both show as queued.
        return replace(c, queued=queued + unseen, running=running)

    def pending(self, task_id: str) -> bool:
        """Whether this runner has the task queued or running (not yet finished),
        whether or not its page was written to the store yet."""
        if task_id in self._active:
            return True
        prefix = task_id[:names.PREFIX_LEN]
        with self._lock:
            return task_id in self._active or any(
                p.prefix == prefix
                for p in itertools.chain(self._open.values(), self._sealed, self._writing))

    def pending_ids(self) -> set[str]:
        """The ids of every task this runner has queued or running, now."""
        with self._lock:
            return set(self._active)

    def running_ids(self) -> set[str]:
        """The ids of the tasks this runner has handed to its executor."""
        with self._lock:
            return {tid for tid, j in self._active.items() if j.state is State.RUNNING}

    def busy(self, group: str, ttl: int | None = None) -> bool:
        """Whether this process still has queued or running tasks of ``group``."""
        return any(self.live_counts(group, ttl))

    def wait(self, predicate: Callable[[], bool], timeout: float | None,
             poll: float = POLL_SECONDS) -> bool:
        """Block until ``predicate()`` is true or ``timeout`` seconds passed.

        The one waiting primitive: woken by completion notifications, with a
        slow poll for work fed by other processes. Ctrl-C / kernel interrupt
        raises KeyboardInterrupt at once; the tasks go on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._version
            if predicate():
                return True
            if self.store_error is not None:
                raise StoreError(
                    f"finished tasks could not be written to the store ({self.store_error}); "
                    "nbgroups keeps them in memory and retries. Fix the store (disk full? "
                    "directory removed?) and wait again.")
            if self.page_error is not None:
                raise StoreError(
                    f"submitted tasks could not be written to the store ({self.page_error}); "
                    "nbgroups keeps them in memory, unsent, and retries. Fix the store "
                    "(disk full? directory removed?) and wait again.")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            with self._changed:
                if self._version == seen:
                    self._changed.wait(poll if remaining is None else min(poll, remaining))

    def _notify(self, finished: list[tuple[Job, tuple]] | None = None) -> None:
        """Wake waiters and listeners; ``finished``: the ``(job, outcome)`` pairs
        (outcomes in :class:`~nbgroups.records.Outcome`'s layout) that just took a
        final state, already in the store, for the finish listeners."""
        with self._changed:
            self._version += 1
            self._changed.notify_all()
        if finished:
            for on_finish in list(self._finish_listeners):
                try:
                    on_finish(finished)
                except BaseException:
                    log.exception("nbgroups: finish listener failed")
        for listener in list(self._listeners):
            try:
                listener()
            except BaseException:
                log.exception("nbgroups: progress listener failed")

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the runner thread) after every state change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def add_finish_listener(self, listener: Callable[[list[tuple[Job, tuple]]], None]) -> None:
        """Call ``listener(pairs)`` whenever tasks take a final state (success,
        failure, cancelled), once their outcome is in the store: ``pairs`` are
        ``(job, outcome)``, the outcome in :class:`~nbgroups.records.Outcome`'s
        layout (:meth:`record_of` makes the record). Called from the thread that
        finished them (the runner thread; the caller's, inline), so it must be
        quick and must not keep ``pairs`` (large results are released after).
        The futures and asyncio adapters (:mod:`nbgroups.futures`) learn of
        finished tasks here without reading the store."""
        self._finish_listeners.append(listener)

    def remove_finish_listener(self, listener: Callable[[list[tuple[Job, tuple]]], None]
                               ) -> None:
        """Stop calling ``listener``."""
        with contextlib.suppress(ValueError):
            self._finish_listeners.remove(listener)

    # ------------------------------------------------------------------ close
    def close(self, wait: bool = False, pool: bool = True) -> None:
        """Stop the runner. Every submitted task is in the store first (flushed),
        so unfinished ones stay resumable; ``wait``: let every task finish;
        ``pool=False``: leave the executor to whoever shuts it down (at exit)."""
        if not self._closed:
            try:
                self.flush()
            except Exception:
                log.exception("nbgroups: could not store submitted tasks while closing")
        if wait:
            self.wait(lambda: not (self._open or self._sealed or self._ready or
                                   self._inflight or self._active or self._unstored), None)
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if not pool:
            self._remove_monitors()  # nothing in flight (see shutdown.stop_all)
            return
        if self._executor is not None:
            self._executor.shutdown()
        self._remove_monitors()
        with contextlib.suppress(Exception):
            self.store.close()
            if self._cache_store is not None:
                self._cache_store.close()

    def _remove_monitors(self) -> None:
        if self._monitor_dir is not None and not self._inflight:
            shutil.rmtree(self._monitor_dir, ignore_errors=True)
            self._monitor_dir = None
            self._monitors = []
