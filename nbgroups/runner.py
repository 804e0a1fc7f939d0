"""The runner: one per kernel, between the api and the executor.

::

    submit ──▶ PageBuffer (open pages, per group) ──flush: PageWriter──▶ store: spec pages
                                   │                                      (before dispatch)
                                   ▼
        LiveTasks (queued → running → final, per group)
                                   │
               Dispatcher: ready queue ──BatchSizer──▶ executor (loky, thread, dask …)
                                   ▲                          │ worker.run_batch
          retries, salvaged calls  │                          ▼
                                   └── Completer ◀── Outbox ◀─ batch done
                                       │   └─ broken pool ─▶ FaultHandler (dead worker, timeout)
                                       ▼
                      store: outcome pages + counters (before a task counts as finished)
                                       └──▶ waiters woken, hooks called, listeners (views)

The :class:`Runner` is a façade over objects it owns, each with one concern
(see ``docs/architecture.md``): :class:`~nbgroups.pages.PageBuffer` and
:class:`~nbgroups.pages.PageWriter` (submission to stored pages),
:class:`~nbgroups.live.LiveTasks` (the tasks held and their counts),
:class:`~nbgroups.dispatch.Dispatcher` (ready queue, batches, executor),
:class:`~nbgroups.completion.Completer` (outcomes stored, jobs settled, hooks),
:class:`~nbgroups.recovery.FaultHandler` (dead workers, timeouts) and
:class:`~nbgroups.control.Control` (cancel, re-run stored tasks) and
:class:`~nbgroups.inline.InlineRunner` (the ``sync`` option). They share
one lock, passed to each. The runner itself keeps the thread loop, the one
waiting primitive (:meth:`Runner.wait`) and notification.

Submission (the caller's thread) only appends calls to an open page and
returns their ids; the runner thread wakes, lets a burst settle, flushes,
collects what came back, dispatches, and checks timeouts. Exit
(:mod:`nbgroups.shutdown`) stops the runners before loky's own exit hook.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from . import forward, monitor, names, reporting, shutdown, snapshot, values
from .cancelling import CACHED, CancelWatcher
from .completion import Completer, Finished, record_of, settled_of
from .config import Settings
from .control import Control, process_id
from .dispatch import Dispatcher, FuncStats
from .errors import RunnerClosed, StoreError
from .executors import Executor
from .inline import InlineRunner
from .jobs import QUEUED, Job, Options, Outbox
from .live import LiveTasks, running_jobs, running_now
from .outcome import Row
from .pages import PageBuffer, PageWriter, Written
from .presence import PresenceReporter
from .records import GroupCounts, TaskRecord
from .recovery import FaultHandler
from .signalsafe import Wake
from .store import DiskStore, Store
from .stores import Stores
from .triage import call_text

log = logging.getLogger("nbgroups")

POLL_SECONDS = 0.25
# How long a stopping runner waits for the batches in flight, told to start no
# further call, to bring back the calls they ran (batches aim at 50 ms of calls;
# a longer call runs in a batch of its own, and is stopped with its pool).
DRAIN_SECONDS = 1.0


def job_call(job: Job) -> str:
    """A running job's call as the views show it: ``simulate(k=0.5, dt=0.01)``."""
    return call_text(job.func[0], job.args if job.items is None else (job.items,), job.kwargs)


class RunnerStats(NamedTuple):
    """What a runner measured and holds now (:meth:`Runner.stats`): for tests,
    diagnostics and benchmarks, read by name."""

    workers: int  # calls that run at once
    in_flight: int  # batches sent, not yet back
    restarts: int  # pools replaced after a worker died
    monitor_directory: str | None  # where this runner's monitor files are, if any
    funcs: dict[str, FuncStats]  # per function name: seconds per call, result bytes
    batch_sizes: dict[str, int]  # per function name: calls in its next batch


class Runner:
    """Owns the executor, the in-memory task state and the two store layers."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self._stores = Stores(store if store is not None else DiskStore(settings.store))
        self.owner = process_id()  # recorded with every page: resume_group elsewhere asks
        lock = self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        # entered through its lock, never `with self._changed` (see nbgroups.signalsafe)
        self._changed_lock = threading.RLock()
        self._changed = threading.Condition(self._changed_lock)
        self._version = 0
        self._wake = Wake()  # set from the kernel's main thread: Ctrl-C safe
        self._live = LiveTasks(lock)
        # a notebook function's large captured values are stored like arguments (18)
        self._pages = PageBuffer(
            lock, lambda options: self._value_writer() if options.ttl is None else None)
        self._writer = PageWriter(self._stores, self.owner)
        outbox = Outbox(self._wake)
        self._dispatcher = Dispatcher(settings, lock, self._live, outbox)
        self._faults = FaultHandler(lock, self._dispatcher)
        self._completer = Completer(lock, self._live, self._stores, self._dispatcher,
                                    self._faults, outbox, self._notify)
        self._control = Control(lock, self._live, self._dispatcher, self._completer,
                                self._stores, self._writer, self._notify)
        self._inline = InlineRunner(self._live, self._completer, self._control,
                                    settings.worker_options())
        # other processes' cancel requests (the dashboard), read by the thread's loop
        self._cancels = CancelWatcher(self._stores, self.owner, self.unfinished, self.cancel)
        # what this runner runs now, for other processes (the dashboard)
        self._presence = PresenceReporter(self._stores, self.owner, self.held_counts, self.idle)
        # where workers read stored values from (large_value): the durable store's
        self._dispatcher.value_dir = self._inline.value_dir = self.value_dir
        self._writer_memo: tuple[Any, int | None, values.Writer | None] = (None, None, None)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        self._finish_listeners: list[Callable[[list[Finished]], None]] = []
        self.page_error: BaseException | None = None  # the last flush failed: pages kept
        self._flush_asked = 0  # flushes other threads asked the runner thread for
        self._flush_done = 0  # the last of them that a flush answered
        self._turns = 0  # turns of the runner thread's loop (see _turn_now)
        self._turn_waiters = 0

    @property
    def settings(self) -> Settings:
        """The settings in force; ``configure()`` may set new ones on a running runner
        (capture, log level, live output, defaults): its parts follow them."""
        return self._settings

    @settings.setter
    def settings(self, new: Settings) -> None:
        self._settings = new
        if hasattr(self, "_dispatcher"):  # set again later: the parts read it from here on
            self._dispatcher.settings = new
            self._inline.options = new.worker_options()

    # ------------------------------------------------------------------ stores
    @property
    def store(self) -> Store:
        """The durable store."""
        return self._stores.store

    def task_progress(self, group: str) -> list[tuple[str, str, float, float | None, str]]:
        """What the running tasks of ``group`` last reported of themselves
        (:func:`nbgroups.report`): ``(task id, its call, done, total, note)``."""
        out = []
        for batch in self._dispatcher.in_flight():
            if batch.monitor is not None:
                p = monitor.read_progress(batch.monitor)
                if p is None or p.batch != batch.id or not 0 <= p.call < len(batch.jobs):
                    continue
                # a later call began (stamped): this report's call ended. Dask stamps
                # only a batch's last call; its workers say when a reporting call ends.
                stamp = monitor.read(batch.monitor)
                if stamp is not None and stamp.batch == batch.id and stamp.call > p.call:
                    continue
                job = batch.jobs[p.call]
                if job.options.group == group:
                    out.append((job.id, job_call(job), p.done, p.total, p.note))
            else:  # in this process: the thread backend
                for job in batch.jobs:
                    mine = reporting.local.get(job.id)
                    if mine is not None and job.options.group == group:
                        out.append((job.id, job_call(job), mine[0], mine[1], mine[2] or ""))
        return out

    def value_dir(self) -> str | None:
        """The directory of the durable store's values, or None (it keeps none)."""
        files = self._stores.store.values
        return None if files is None else files.directory

    def values_held(self) -> set[str]:
        """Digests of the stored values the tasks this runner holds (queued,
        running) take: a collection must spare them whatever the store says."""
        jobs = self._live.jobs()
        return values.digests_of_calls((j.args if j.items is None else j.items, j.kwargs)
                                       for j in jobs) | values.digests_of_funcs(
                                           {j.func for j in jobs})

    def take(self, calls: Sequence[tuple[Any, dict | None]], options: Options,
             iterable: bool = False) -> Sequence[tuple[Any, dict | None]]:
        """``calls`` with their arguments as they are now (:mod:`nbgroups.snapshot`):
        the large ones stored by digest (``large_value``), for tasks of the durable
        layer; :meth:`submit` does it, unless told the calls were taken already."""
        # the writer is looked up only if an argument is not an atom (tiny tasks: never)
        return snapshot.take(calls, iterable, self._value_writer if options.ttl is None else None)

    def _value_writer(self) -> values.Writer | None:
        """The value writer of the durable store and the ``large_value`` now, or None."""
        files, threshold = self._stores.store.values, self.settings.large_value
        memo = self._writer_memo
        if memo[0] is files and memo[1] == threshold:
            return memo[2]
        writer = None
        if files is not None and threshold is not None:
            writer = values.Writer(files, threshold)
        self._writer_memo = (files, threshold, writer)
        return writer

    def live_output(self, group: str) -> forward.Lines:
        """The last lines the tasks of ``group`` wrote, read from
        the batches in flight (the ``live_output`` setting, :mod:`nbgroups.forward`)."""
        forward.HUB.poll(self._dispatcher.in_flight(), every=forward.INTERVAL / 2)
        return forward.HUB.lines(group)

    def store_for(self, ttl: int | None) -> Store:
        """The store of a layer: the durable one (``ttl`` None) or the cache layer."""
        return self._stores.layer(ttl)

    @property
    def store_error(self) -> BaseException | None:
        """Why finished tasks could not be stored (retried), or None."""
        return self._completer.store_error

    @property
    def record_class(self) -> type:
        """The class of the records handed to hooks (the api sets its Task)."""
        return self._completer.record_class

    @record_class.setter
    def record_class(self, cls: type) -> None:
        self._completer.record_class = cls

    @property
    def executor(self) -> Executor | None:
        """The executor, once the first batch started it (else None)."""
        return self._dispatcher.executor

    @property
    def restarts(self) -> int:
        """How many times a pool was replaced after a worker died."""
        return self._faults.restarts

    # ------------------------------------------------------------------ submit
    def submit(
        self, func: Any, calls: Sequence[tuple[Any, dict | None]], options: Options,
        *, iterable: bool = False, inline: bool = False, raise_errors: bool = False,
        taken: bool = False,
    ) -> list[str]:
        """Queue calls of ``func``; returns their task ids (no I/O on this path).

        With ``iterable`` each element of ``calls`` is ``(items, None)``: one
        task whose arguments are a list of items. ``inline`` runs the calls
        here and now (the ``sync`` option and backend). ``taken``: the calls
        come from :meth:`take` already.
        """
        if self._closed:
            raise RunnerClosed("this nbgroups runner was closed; call nbgroups.configure()")
        inline = inline or self.settings.backend == "sync"
        if not taken:  # the arguments as they are now (issue 20), large ones stored (18)
            calls = snapshot.take(calls, iterable,
                                  self._value_writer if options.ttl is None else None)
        # counted from its page until stored (PageBuffer.queued), then by LiveTasks
        jobs = self._pages.add(func, calls, options, iterable, running=inline)
        if inline:
            self.flush()
            self._inline.run(jobs, raise_errors)
        else:
            if self._thread is None:
                self._ensure_thread()
            if not self._wake.is_set():
                self._wake.set()
        return [j.id for j in jobs]

    def flush(self) -> None:
        """Write every open page to the store, then queue its calls.

        Called by the runner thread after a burst of submissions, and by
        readers so that a task is visible as soon as its id was returned.
        Every page write happens on the runner thread: another thread only
        asks for it and waits (interruptibly), so a Ctrl-C in the caller can
        never land in the middle of a write (pages taken but neither stored
        nor put back: ids returned, then lost). Raises :class:`StoreError`
        if the pages could not be written (they are kept and retried).
        """
        if self._pages.idle():
            return  # nothing open, nothing being written: no hand-over needed
        if self._writes_here():
            self._flush_now()
            return
        with self._changed_lock:
            self._flush_asked += 1
            ticket = self._flush_asked
        self._wake.set()
        with self._changed_lock:
            while self._flush_done < ticket:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    break  # the runner thread ended (exit): nobody else will write
                self._changed.wait(POLL_SECONDS)  # Ctrl-C here: the write goes on
        if self._flush_done < ticket:
            self._flush_now()
        elif self.page_error is not None:
            raise StoreError(
                f"submitted tasks could not be written to the store "
                f"({_describe(self.page_error)}); nbgroups keeps them in memory, unsent, "
                "and retries every second") from self.page_error

    def _writes_here(self) -> bool:
        """Whether this thread writes pages itself: the runner thread does; so
        does any thread once the runner thread is gone or cannot start."""
        thread = self._thread
        if thread is threading.current_thread():
            return True
        if thread is None and not self._closed:
            self._ensure_thread()
            thread = self._thread
        return thread is None or not thread.is_alive()

    def _flush_now(self) -> None:
        """The write itself (on the runner thread, or at exit)."""
        with self._changed_lock:
            asked = self._flush_asked
        with self._flush_lock:
            pages = self._pages.take()
            try:
                if pages:
                    self._writer.write(pages, self._pages.put_back, self._stored)
            except Exception as exc:  # (the pages were put back: see PageWriter.write)
                if self.page_error is None:
                    log.error("nbgroups: submitted tasks could not be written to the "
                              "store (%s); kept in memory, retried every second",
                              _describe(exc))
                self.page_error = exc
                raise
            else:
                if not self._pages.unwritten():  # nothing put back: no error left
                    self.page_error = None
            finally:
                self._pages.written()
                with self._changed_lock:
                    # Waiters are woken only when one can be answered: a flush
                    # asked for, or a write error (they raise). A page stored
                    # finishes nothing, and a waiter woken for nothing takes the
                    # GIL from this thread just as it sends (~50 us a round trip).
                    wake = asked > self._flush_done or self.page_error is not None
                    self._flush_done = max(self._flush_done, asked)
                if wake or pages:
                    self._notify(wake=wake)  # listeners: the counts moved

    @contextlib.contextmanager
    def flushes_held(self) -> Iterator[None]:
        """Hold every flush meanwhile (tests, diagnostics): calls submitted in the
        block stay in their open pages, unstored and unsent."""
        with self._flush_lock:
            yield

    def _stored(self, written: Written) -> None:
        """A layer's pages are stored: their jobs are tracked and queued."""
        with self._lock:  # tracked and out of the pages at once: counted once
            self._live.track(written.jobs)
            self._pages.stored(written.pages)
        unsent = {job.id for job, _ in written.failed}
        self._dispatcher.enqueue(
            j for j in written.jobs if j.state is QUEUED and j.id not in unsent)
        if written.failed:
            self._completer.finish(written.failed)

    # ------------------------------------------------------------------ control
    def cancel(self, group: str | None, ttl: int | None = None,
               ids: Collection[str] | None = None) -> int:
        """Cancel this process's tasks of ``group`` that have not started: those
        waiting here, and batches the pool has not yet passed to a worker.
        ``ids``: instead, the tasks of these ids, whatever their group (a
        future's ``cancel()``)."""
        self.flush()
        return self._control.cancel(group, ttl is not None, ids)

    def end_orphans(self, ids: set[str], wait: float) -> set[str]:
        """Let the calls of ``ids`` that a gone kernel left running on this
        runner's workers end first (a Dask cluster outlives the kernel); see
        :meth:`nbgroups.executors.Executor.end_orphans`. Returns those still running."""
        if not ids or self.settings.backend == "sync":
            return set()
        return self._dispatcher.ensure_executor().end_orphans(ids, wait)

    def resubmit(self, entries: list, ttl: int | None = None,
                 options: Options | None = None) -> int:
        """Run stored tasks again, same ids: ``(SpecPage, Call, previous state[,
        runs so far])`` (runs so far: ``attempt_count`` goes on counting).

        With the options they were submitted with (hook included), or with
        ``options`` (a re-submission by ``reuse``: the current call's timeout,
        retries, hook). Skips tasks this runner is still running (so a resume
        runs each once).
        """
        jobs = self._control.rerun_jobs(entries, options)
        if not jobs:
            return 0
        if self.settings.backend == "sync":
            self._live.start(jobs)
            self._inline.run(jobs, False)
            return len(jobs)
        self._dispatcher.enqueue(jobs)
        self._ensure_thread()
        self._wake.set()
        return len(jobs)

    @property
    def store_failed(self) -> bool:
        """Whether writes to the store fail now (kept in memory, retried), or would
        fail: its database was removed and no write has found out yet."""
        return (self.store_error is not None or self.page_error is not None
                or self._stores.store.lost())

    def reopen(self, store: Store) -> int:
        """Carry on in ``store`` (the old one failed: removed, or ``configure``
        named another): the pages of every task this runner holds unfinished
        -- queued, running, or finished with its result kept in memory -- are
        written there under the same ids first, then the kept results and
        everything after them. Returns how many tasks moved."""
        with self._lock:
            held = [j for j in self._live.jobs() if j.options.ttl is None]
        old_values, taken = self._stores.store.values, self.values_held()
        if old_values is not None and store.values is not None and taken:
            with contextlib.suppress(OSError):  # their large arguments go with them
                store.values.copy_from(old_values, taken)
        by_prefix: dict[str, list[Job]] = {}
        for job in sorted(held, key=lambda j: j.submitted or 0.0):  # stable: page order kept
            by_prefix.setdefault(job.prefix, []).append(job)
        drafts, pages = [], []
        for prefix, jobs in by_prefix.items():
            jobs.sort(key=lambda j: int(j.id[names.PREFIX_LEN:], 16))
            funcs = list(dict.fromkeys(j.func for j in jobs))
            index = {f: i for i, f in enumerate(funcs)}
            opts = jobs[0].options
            drafts.append(dict(
                prefix=prefix, group=opts.group, created=jobs[0].submitted or time.time(),
                funcs=tuple(funcs),
                calls=tuple((int(j.id[names.PREFIX_LEN:], 16), index[j.func],
                             j.args if j.items is None else j.items, j.kwargs, j.task_name,
                             j.items is not None) for j in jobs),
                options={"timeout": opts.timeout, "retries": opts.retries, "save": opts.save,
                         "ttl": None, "hook": None, "owner": self.owner}))
            pages.append(jobs)
        if drafts:
            specs = store.write_pages(drafts)  # raises if this store fails too
            with self._lock:  # the kept results are grouped by these when written
                for jobs, spec in zip(pages, specs, strict=True):
                    for j in jobs:
                        j.gen = spec.gen
                        j.submitted = spec.created
        # Only now do flushes go to the new store: a page still waiting for one
        # (submitted after the failure) is numbered after the pages moved above,
        # as it was submitted after them.
        self._stores.replace(store)
        self._turn_now()  # kept results and pages written now
        return len(held)

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
                    shutdown.hook_kernel()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._next_deadline())
            self._wake.clear()
            try:
                with self._changed_lock:
                    asked = self._flush_asked > self._flush_done
                if not asked:  # a reader waits: no lingering
                    self._pages.linger()
                with contextlib.suppress(Exception):  # kept in page_error, retried
                    self._flush_now()
                self._completer.collect()
                self._dispatcher.dispatch()
                self._faults.check_timeouts()
                self._cancels.poll()
                self._presence.poll()
            except BaseException:  # the runner thread must survive anything
                if shutdown.exiting():  # what was not sent stays queued in the store, resumable
                    break
                log.exception("nbgroups runner error")
                time.sleep(0.1)
            self._turns += 1
            if self._turn_waiters:  # only then: every waiter re-checks when woken
                with self._changed_lock:
                    self._changed.notify_all()
        with contextlib.suppress(Exception):  # store what finished meanwhile
            self._completer.collect()

    def _next_deadline(self) -> float | None:
        if self._completer.unstored() or (self.page_error is not None and self._pages):
            return 1.0  # retry the failed outcome write
        if self._dispatcher.timing():
            return 0.1
        return 0.5 if self._dispatcher.busy() else None

    # ------------------------------------------------------------------ reading
    def record_of(self, job: Job, o: Row | None, cls: type = TaskRecord) -> TaskRecord:
        """The record of a finished job from its outcome row, without a store read."""
        return record_of(job, o, cls)

    def recent(self, task_id: str, ttl: int | None, cls: type = TaskRecord,
               light: bool = False) -> Any:
        """The record of a task this runner finished lately, or None (then read the
        store); ``light``: only its :class:`~nbgroups.completion.Settled` (id,
        state, result), for :func:`nbgroups.result`."""
        hit: Finished | None = self._completer.recent(task_id)
        if hit is None or ttl is not None or hit[0].options.ttl is not None:
            return None  # the cache layer's entries expire: only the store knows
        job, o = hit
        if job.options.group and self.store_for(ttl).gen(job.options.group) != job.gen:
            return None  # the label was deleted since: the store knows the truth
        return settled_of(job, o) if light else record_of(job, o, cls)

    def live_counts(self, group: str | None, ttl: int | None = None) -> tuple[int, int]:
        """``(queued, running)`` of this process's tasks of ``group``."""
        where = (ttl is not None, group)
        with self._lock:
            queued, running = self._live.counts(where)
            return queued + self._pages.queued(where), running

    def counts(self, group: str, ttl: int | None = None) -> GroupCounts:
        """Stored counts of ``group`` plus this process's queued/running."""
        c, queued, running, unseen = self._counts(group, ttl)
        # Unfinished tasks this process does not hold: queued elsewhere (another
        # kernel) or orphaned by a dead one; both show as queued.
        return replace(c, queued=queued + unseen, running=running)

    def unseen(self, group: str, ttl: int | None = None) -> int:
        """How many unfinished tasks of ``group`` this process does not hold: another
        kernel's, or a gone kernel's (cancelled ones of its own not yet settled
        are held, so they are not counted)."""
        return self._counts(group, ttl)[3]

    def _counts(self, group: str, ttl: int | None) -> tuple[GroupCounts, int, int, int]:
        """The store's counts, this process's queued and running, and the rest
        unfinished (:meth:`unseen`)."""
        self.flush()
        c = self.store_for(ttl).counts(group)
        queued, running = self.live_counts(group, ttl)
        # running: the calls workers run now, not every call sent in a batch
        now = running_now(self._dispatcher.in_flight(), (ttl is not None, group))
        if now is not None and now < running:
            queued, running = queued + running - now, now
        # re-runs (retry_group, reuse) count as unfinished until they end
        again = self._live.reruns((ttl is not None, group))
        c = replace(c, done=max(0, c.done - again["success"]),
                    failed=max(0, c.failed - again["failure"]),
                    cancelled=max(0, c.cancelled - again["cancelled"]))
        left = max(0, c.submitted - c.finished - c.cancelled)
        # The store is read before the live counts: a call whose outcome was
        # stored in between is still counted live until the runner settles it.
        # It has finished: it is neither queued nor running.
        over = queued + running - left
        if over > 0:
            cut = min(queued, over)
            queued, running = queued - cut, running - (over - cut)
        return c, queued, running, left - queued - running

    def held_counts(self) -> dict[tuple[bool, str | None], tuple[int, int, list[str]]]:
        """``(queued, running, ids)`` of every (layer, group) this runner holds
        unfinished, running as in :meth:`counts`: the calls workers run now,
        ``ids`` theirs when the monitor files tell (not on the thread backend)."""
        out = {}
        in_flight = self._dispatcher.in_flight()
        for where in self.unfinished():
            queued, running = self.live_counts(where[1], CACHED if where[0] else None)
            jobs = running_jobs(in_flight, where)
            if jobs is not None and len(jobs) < running:
                queued, running = queued + running - len(jobs), len(jobs)
            out[where] = (queued, running, [j.id for j in jobs or ()])
        return out

    def pending(self, task_id: str) -> bool:
        """Whether this runner has the task queued or running (not yet finished),
        whether or not its page was written to the store yet."""
        # tracked, or in a page not stored yet; tracked again: a flush may have
        # moved it from one to the other meanwhile
        return self._live.holds(task_id) or self._pages.holds(
            task_id[:names.PREFIX_LEN]) or self._live.holds(task_id)

    def pending_ids(self) -> set[str]:
        """The ids of every task this runner has queued or running, now."""
        return self._live.ids()

    def running_ids(self) -> set[str]:
        """The ids of the tasks this runner has handed to its executor."""
        return self._live.running_ids()

    def busy(self, group: str, ttl: int | None = None) -> bool:
        """Whether this process still has queued or running tasks of ``group``."""
        return any(self.live_counts(group, ttl))

    def unfinished(self) -> dict[tuple[bool, str | None], int]:
        """Tasks this runner holds unfinished (queued or running), per (layer, group)."""
        with self._lock:
            held = {where: q + r for where, (q, r) in self._live.all_counts().items()}
            for where in self._pages.places():
                held[where] = held.get(where, 0) + self._pages.queued(where)
        return {where: n for where, n in held.items() if n}

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    def idle(self) -> bool:
        """Whether nothing is left to store, send, run or record."""
        return not (self._pages or self._dispatcher.busy() or self._live or
                    self._completer.unstored())

    def stats(self) -> RunnerStats:
        """What this runner measured and holds now, by name (read-only)."""
        d = self._dispatcher
        workers = d.workers()
        funcs = d.sizer.measured()
        return RunnerStats(
            workers=workers, in_flight=len(d.in_flight()), restarts=self._faults.restarts,
            monitor_directory=d.monitors.directory, funcs=funcs,
            batch_sizes={name: d.sizer.size(s, 0, workers) for name, s in funcs.items()})

    # ------------------------------------------------------------------ waiting
    def wait(self, predicate: Callable[[], bool], timeout: float | None,
             poll: float = POLL_SECONDS) -> bool:
        """Block until ``predicate()`` is true or ``timeout`` seconds passed.

        The one waiting primitive: woken by completion notifications, with a
        slow poll for work fed by other processes. Ctrl-C / kernel interrupt
        raises KeyboardInterrupt at once; the tasks go on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        retried = False
        while True:
            with self._changed_lock:
                seen = self._version
            if predicate():
                return True
            if not retried and (self.store_error is not None or self.page_error is not None):
                retried = True  # the store may be fixed since the last retry: try now
                self._turn_now()
                continue
            if self.store_error is not None:
                raise StoreError(
                    f"finished tasks could not be written to the store "
                    f"({_describe(self.store_error)}); "
                    "nbgroups keeps them in memory and retries. Fix the store (disk full? "
                    "directory removed?) and wait again.")
            if self.page_error is not None:
                raise StoreError(
                    f"submitted tasks could not be written to the store "
                    f"({_describe(self.page_error)}); "
                    "nbgroups keeps them in memory, unsent, and retries. Fix the store "
                    "(disk full? directory removed?) and wait again.")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            with self._changed_lock:
                if self._version == seen:
                    self._changed.wait(poll if remaining is None else min(poll, remaining))

    def _turn_now(self) -> None:
        """Have the runner thread retry its writes now, and wait for that turn."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return
        with self._changed_lock:
            target = self._turns + 2  # a turn that began after this call
            self._turn_waiters += 1
        try:
            self._wake.set()
            with self._changed_lock:
                while self._turns < target and thread.is_alive():
                    self._changed.wait(POLL_SECONDS)
                    self._wake.set()
        finally:
            with self._changed_lock:
                self._turn_waiters -= 1

    def _notify(self, finished: list[Finished] | None = None, wake: bool = True) -> None:
        """Wake waiters and listeners; ``finished``: the ``(job, outcome)`` pairs
        that just took a final state, already in the store, for the finish listeners.
        ``wake=False``: the listeners only (nothing a waiter waits for changed)."""
        if wake:
            with self._changed_lock:
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

    def add_finish_listener(self, listener: Callable[[list[Finished]], None]) -> None:
        """Call ``listener(pairs)`` whenever tasks take a final state (success,
        failure, cancelled), once their outcome is in the store: ``pairs`` are
        ``(job, outcome row)`` (:meth:`record_of` makes the record). Called from
        the thread that finished them (the runner thread; the caller's, inline),
        so it must be quick and must not keep ``pairs`` (large results are
        released after). The futures and asyncio adapters (:mod:`nbgroups.futures`,
        :mod:`nbgroups.completed`) learn of finished tasks here without reading
        the store."""
        self._finish_listeners.append(listener)

    def remove_finish_listener(self, listener: Callable[[list[Finished]], None]) -> None:
        """Stop calling ``listener``."""
        with contextlib.suppress(ValueError):
            self._finish_listeners.remove(listener)

    # ------------------------------------------------------------------ close
    @property
    def in_flight(self) -> bool:
        """Whether batches are running in the executor (:mod:`nbgroups.shutdown` asks)."""
        return bool(self._dispatcher.in_flight())

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
            self.wait(self.idle, None)
        elif pool:
            self._drain()
        self._closed = True
        # Sending stops and a pool to stop stops now, before the thread's last
        # collect: results that came back meanwhile are still stored, and none
        # finishes unseen between that collect and the pool's end (it would run
        # again on resume). Batches cut short record no failure (stopping).
        self._dispatcher.close(pool)
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._dispatcher.close(False)  # the monitor folder goes, if nothing is in flight
        if pool:
            self._stores.close()

    def _drain(self) -> None:
        """Before the pool stops (Kernel > Restart, an interactive exit): calls that
        ended inside a batch still running come back only with the whole batch,
        and would be lost with it, to run again on resume. So sending stops, each
        batch in flight is flagged to start no further call (its monitor file),
        and the batches are waited for, up to DRAIN_SECONDS, their results
        stored; the calls they skipped stay unfinished, resumable. A call still
        running after that is stopped with its pool, as before."""
        d = self._dispatcher
        thread = self._thread
        flagged = [b for b in d.in_flight() if b.monitor is not None and b.future is not None]
        if not flagged or thread is None or not thread.is_alive():
            return
        d.stopped = True  # send nothing more
        for batch in flagged:
            batch.stopping = batch.flagged = True  # (its monitor file is not reused)
            monitor.flag_cancel(batch.monitor)  # type: ignore[arg-type]
        self._wake.set()
        # a store error: the results are kept anyway; Ctrl-C: stop waiting, close
        with contextlib.suppress(Exception, KeyboardInterrupt):
            ids = {id(b) for b in flagged}
            self.wait(lambda: not any(id(b) in ids for b in d.in_flight())
                      and not self._completer.unstored(), DRAIN_SECONDS)


def _describe(exc: BaseException) -> str:
    """``'OSError: [Errno 28] No space left on device'``: the type is kept (a bare
    ``str()`` of some errors is empty)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
