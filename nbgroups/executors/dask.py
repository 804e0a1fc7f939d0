"""The Dask backend: the runner's batches run as tasks on a ``distributed`` cluster.

::

    runner ──payload (one batch)──▶ DaskExecutor.submit ──client.submit──▶ Dask worker
       ▲                                 │  (a concurrent.futures.Future)       │ _run_on_worker:
       │                                 │                                     │  "started" event,
       │   outcomes (or split/failed)  ◀─┴── dask future done (callback) ◀─────┘  worker.run_batch
       │
       └── monitor file (written here, on the notebook's disk, from the "started" event)

Nothing else changes: the runner still batches tiny calls (10,000 ``async_task``
calls become a few dozen Dask tasks), writes specs before dispatch and
outcomes before a task counts as finished, so the notebook's store stays the
single source of truth; the workers only compute.

Faults, where Dask's semantics differ from a loky pool:

* *A worker dies* (killed, out of memory, ``os._exit``): Dask itself reruns
  the batch on another worker, so nothing is lost and the group completes.
  A batch whose workers keep dying is given up by the scheduler
  (``KilledWorker``, after ``distributed.scheduler.allowed-failures`` deaths);
  it is then split into one Dask task per call, so that only the call that
  kills its worker fails (with :class:`~nbgroups.errors.WorkerDied`) and the
  others finish. Calls of a batch rerun by Dask may run more than once.
* *Timeout*: a Dask worker thread cannot be stopped. Each batch sends one
  "started" event (``Worker.log_event``) when it begins; this module turns it
  into the runner's monitor file, so the runner's timeout clock works as on
  loky. Past the timeout the task fails at once with
  :class:`~nbgroups.errors.TaskTimeout`; its Dask task is cancelled and its
  worker restarted through its nanny (``Client.restart_workers``), which frees
  the thread; other batches running on that worker are rerun by Dask. A
  worker without a nanny cannot be restarted: the call then runs on to its end
  in the background, its result discarded.
* *Stored values* (large arguments, :mod:`nbgroups.values`): Dask workers may
  not share the notebook's filesystem, so each value is read from the store
  and sent to the cluster once (``client.scatter``); its future is kept for
  the executor's life and passed to every batch that takes the value, which
  Dask resolves on the worker (fetched once per worker, kept in its memory).
* Any other error from Dask (the task could not be unpickled on the worker,
  the scheduler cancelled it, ...) fails the calls of that batch with a
  message that says so, instead of re-queuing them forever.

Batch sizing: the runner sizes batches and the number in flight from the
cluster's current thread count (``Client.nthreads()``, refreshed every few
seconds, so an adaptive cluster that grows gets more), not from the
``workers`` setting, which is used only while the cluster has no worker yet.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from typing import Any

from .. import forward, monitor, outcome, reporting, values, worker
from ..errors import ArgumentTypeError, ConfigurationError, TaskError, WorkerDied
from ..serialize import dumps, loads
from .base import Executor

log = logging.getLogger("nbgroups")

INSTALL_HINT = "backend='dask' needs the dask extra: pip install 'nbgroups[dask]'"
CONNECT_TIMEOUT = "30s"
NTHREADS_REFRESH = 2.0
PART_TRIES = 4
CONFIRM_SECONDS = 0.1
ORPHAN_POLL_SECONDS = 0.1  # how often a resume asks the cluster what a gone kernel left running
ASK_SECONDS = 10  # the longest a Client.run of a resume may take

_clients: dict[str, Any] = {}  # address -> Client opened by prepare(), not yet taken
_in_use: dict[str, Any] = {}  # address -> Client of a live executor
_clients_lock = threading.Lock()


def require_distributed() -> Any:
    """Import ``distributed``, or raise a :class:`ConfigurationError` saying what to install."""
    try:
        import distributed
    except ImportError:
        raise ConfigurationError(INSTALL_HINT) from None
    return distributed


def prepare(settings: Any) -> None:
    """Check a dask configuration at ``configure()`` time: fail there, not in the runner.

    Imports ``distributed`` and, for ``address=``, connects to the scheduler
    (the client is kept for the executor), so a wrong address fails at the call.
    """
    distributed = require_distributed()
    if settings.client is not None:
        if not isinstance(settings.client, distributed.Client):
            raise ArgumentTypeError(
                f"client must be a distributed.Client, got {settings.client!r}")
        return
    with _clients_lock:
        if settings.address in _clients or settings.address in _in_use:
            return
    try:
        client = distributed.Client(settings.address, set_as_default=False,
                                    timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot reach the Dask scheduler at {settings.address!r}: {exc}") from None
    with _clients_lock:
        _clients[settings.address] = client


def _take_client(address: str) -> Any:
    with _clients_lock:
        client = _clients.pop(address, None)
    if client is None:
        distributed = require_distributed()
        client = distributed.Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
    with _clients_lock:
        _in_use[address] = client
    return client


# ---------------------------------------------------------------- worker side
def _run_on_worker(payload: bytes, topic: str | None, token: int,
                   confirm: bool = False, stored: dict | None = None) -> list[tuple]:
    """The Dask task: :func:`nbgroups.worker.run_batch`'s loop, saying "started" once.

    The runner sends a call with a timeout alone or last in its batch, so one
    event, just before the last call, is all its timeout clock needs (an event
    per call would cost more than the tiny calls themselves).
    """
    batch_id, funcs, calls, *options = loads(payload)
    opts = options[0] if options else None
    src = values.source(stored) if stored else None  # {digest: bytes}, from the scatter
    tee = worker.start_capture(opts, own_process=True)
    send = _events(topic, token, batch_id)
    # nbgroups.report() and live output go as events too (rate-limited where made)
    live = forward.EventSink(send) if send is not None and worker.live_wanted(opts, tee) \
        else None
    reporting.enter(None, batch_id, calls, send)
    where = reporting.current
    loaded: dict[int, Any] = {}
    out = []
    last = len(calls) - 1
    released = _released_check()
    me = threading.get_ident()
    try:
        for i, call in enumerate(calls):
            if released():  # its client (the kernel) is gone: start no new call
                now = time.time()
                out += [outcome.cancelled(c[0], c[-1], now, now) for c in calls[i:]]
                break
            if i == last and topic is not None:
                _say_started(topic, token, batch_id, i)
                if confirm:  # fault recovery only: let the event leave before a crash
                    time.sleep(CONFIRM_SECONDS)
            where.index = i
            _RUNNING[me] = call[0]
            try:
                out.append(worker.run_one(call, funcs, loaded, tee=tee, live=live, src=src))
            finally:
                _RUNNING.pop(me, None)
            if send is not None:
                reporting.call_ended()
    finally:
        reporting.leave()
    return out


#: thread -> id of the nbgroups call it runs now, in a Dask worker process (read
#: by :func:`_calls_running` through ``Client.run``: see DaskExecutor.end_orphans)
_RUNNING: dict[int, str] = {}


def _calls_running() -> list[str]:
    """The ids of the nbgroups calls this Dask worker runs now."""
    return list(_RUNNING.values())


def _exit_now() -> None:
    """Run on a Dask worker by ``Client.run``: end its process at once, whatever
    its threads run (its nanny starts a fresh one)."""
    os._exit(1)


def _released_check() -> Any:
    """A function telling whether the scheduler let go of the Dask task running
    in this thread (its client, the kernel, left: killed or restarted).

    The scheduler forgets a client's tasks when the client goes, and the worker
    marks a task it is running "cancelled", but cannot stop its thread: a batch
    went on running its remaining calls for nobody, and a ``resume_group`` from
    the next kernel ran them a second time. Checked before each call (a dict
    lookup); outside a Dask task it is never true."""
    try:
        from distributed import get_worker

        w = get_worker()
        key = w.get_current_task()
    except Exception:
        return lambda: False

    def released() -> bool:
        ts = w.state.tasks.get(key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")

    return released


def _events(topic: str | None, token: int, batch_id: int) -> Any:
    """A function sending messages about this batch to the client (``Worker.log_event``,
    which may be called from any thread), or None outside a Dask worker."""
    if topic is None:
        return None
    try:
        from distributed import get_worker

        w = get_worker()
    except Exception:
        return None

    def send(msg: dict) -> None:
        with contextlib.suppress(Exception):  # the worker closing: the message is lost
            w.log_event(topic, {"token": token, "batch": batch_id, **msg})

    return send


def _say_started(topic: str, token: int, batch_id: int, index: int) -> None:
    try:
        from distributed import get_worker

        w = get_worker()
        w.log_event(topic, {"token": token, "batch": batch_id, "index": index,
                            "address": w.address})
    except Exception:  # no event: only the timeout clock misses a start
        pass


# ---------------------------------------------------------------- client side
def _failed_outcomes(payload: bytes, err: BaseException) -> list[tuple]:
    """Every call of the batch failed with ``err`` (outcome tuples as from run_batch)."""
    _, _, calls, *_ = loads(payload)
    failed = outcome.failure("", 0, None, err)  # pickled once, for every call
    return [outcome.with_id(failed, key, attempts) for key, _, _, _, _, attempts in calls]


class _TimedOut(Exception):
    """The runner stopped this batch (its timeout); the runner records the cause."""


class _Batch:
    __slots__ = ("address", "dfut", "future", "monitor", "payload", "starts", "stored", "token",
                 "tries")

    def __init__(self, token: int, payload: bytes, monitor: str | None,
                 future: cf.Future) -> None:
        self.token = token
        self.payload = payload
        self.monitor = monitor
        self.future = future
        self.dfut: Any = None  # the distributed.Future, while on the cluster
        self.address: str | None = None
        self.starts = 0  # "started" events seen
        self.tries = 0
        self.stored: dict | None = None  # {digest: scattered future} the calls take


class DaskExecutor(Executor):
    """Runs the runner's batches on a Dask cluster (``distributed.Client``).

    ``settings.client`` is used as given (and left open at shutdown);
    ``settings.address`` opens a client owned, and closed, by this executor.
    """

    name = "dask"
    #: The runner's monitor files work: they are written here from worker events.
    monitored = True
    #: Stored values go to the cluster by ``client.scatter``, once each.
    ships_values = True

    @classmethod
    def from_settings(cls, settings: Any) -> DaskExecutor:
        """The executor for ``settings.client`` or ``settings.address``."""
        return cls(settings)

    def __init__(self, settings: Any) -> None:
        require_distributed()
        super().__init__(settings.workers)  # used while the cluster has no worker yet
        self._address = settings.address
        if settings.client is not None:
            self.client, self._owned = settings.client, False
        else:
            self.client, self._owned = _take_client(settings.address), True
        self._lock = threading.Lock()
        self._batches: dict[int, _Batch] = {}  # token -> batch in flight (keeps dask futures)
        self._tokens = itertools.count(1)
        #: the event topic the batches' "started" events go to
        self.topic = f"nbgroups-started-{uuid.uuid4().hex}"
        self._nthreads = (0, 0.0)  # (count, when read)
        self._scattered: dict[str, Any] = {}  # digest -> the future of its bytes on the cluster
        self.client.subscribe_topic(self.topic, self._on_event)

    # -------------------------------------------------------------- sizing
    @property
    def workers(self) -> int:
        """Threads of the cluster now (refreshed every few seconds); the runner sizes
        batches with it."""
        count, when = self._nthreads
        now = time.monotonic()
        if now - when > NTHREADS_REFRESH:
            with contextlib.suppress(Exception):  # scheduler busy or gone: keep the last count
                count = sum(self.client.nthreads().values())
            self._nthreads = (count, now)
        return count or self._workers

    # -------------------------------------------------------------- submit
    def submit(self, payload: bytes, monitor: str | None) -> cf.Future:
        return self._submit(payload, monitor, None)

    def submit_values(self, payload: bytes, monitor: str | None,
                      values: tuple[str, set[str]]) -> cf.Future:
        """:meth:`submit`, the stored values the calls take scattered first (once each)."""
        return self._submit(payload, monitor, self._scatter(*values))

    def _submit(self, payload: bytes, monitor: str | None, stored: dict | None) -> cf.Future:
        future: cf.Future = cf.Future()
        token = next(self._tokens)
        batch = _Batch(token, payload, monitor, future)
        batch.stored = stored
        with self._lock:
            self._batches[token] = batch
        self._send(batch)
        return future

    def _scatter(self, directory: str, digests: set[str]) -> dict[str, Any]:
        """The futures of these stored values on the cluster, each sent once. A
        value whose file cannot be read is left out: its calls then fail with
        :class:`~nbgroups.errors.ValueMissing` on the worker."""
        out = {}
        for digest in digests:
            fut = self._scattered.get(digest)
            if fut is None:
                try:
                    with open(os.path.join(directory, digest), "rb") as f:
                        data = f.read()
                    fut = self._scattered[digest] = self.client.scatter(data, hash=False)
                except OSError:
                    continue
                except Exception:  # a closed client: the batch fails when sent
                    continue
            out[digest] = fut
        return out

    def _send(self, batch: _Batch) -> None:
        try:
            batch.dfut = self.client.submit(
                _run_on_worker, batch.payload, self.topic, batch.token, False, batch.stored,
                key=f"nbgroups-batch-{uuid.uuid4().hex}", pure=False)
        except Exception as exc:  # a closed client: fail the calls, clearly
            self._resolve(batch, _failed_outcomes(batch.payload, self._dask_error(exc)))
            return
        batch.dfut.add_done_callback(lambda f, b=batch: self._on_done(b, f))

    def _on_event(self, event: tuple[float, dict]) -> None:
        """Scheduler event (client's loop): the batch began on a worker -> monitor
        stamp; or one of its calls reported progress or wrote output -> there too."""
        _, msg = event
        with self._lock:
            batch = self._batches.get(msg.get("token", 0))
            if batch is None or batch.future.done():
                return
            if "progress" in msg or "live" in msg:
                self._write_report(batch, msg)
                return
            batch.address = msg.get("address")
            batch.starts += 1
            if batch.monitor:
                # The runner's clock, not the worker's: timeouts are measured here.
                # The "pid" field holds the token: kill_worker gets it back.
                try:
                    monitor.write(batch.monitor, msg["batch"], msg["index"], batch.token,
                                  time.time())
                except OSError:
                    log.warning("nbgroups: cannot write monitor file %s", batch.monitor)

    @staticmethod
    def _write_report(batch: _Batch, msg: dict) -> None:
        """A call's report (:func:`nbgroups.report`) or live output, into the batch's
        monitor file, where the runner reads those of loky's workers."""
        if not batch.monitor:
            return
        try:
            if "progress" in msg:
                call, done, total, note = msg["progress"]
                monitor.write_progress_at(batch.monitor, msg["batch"], call, done, total, note)
            else:
                seq, call, skipped, text = msg["live"]
                monitor.write_live_at(batch.monitor, msg["batch"], seq, call, skipped, text)
        except OSError:
            log.debug("nbgroups: cannot write monitor file %s", batch.monitor)

    def _on_done(self, batch: _Batch, dfut: Any) -> None:
        """Dask's callback thread: hand the outcomes (or the failure) to the runner."""
        if batch.future.done():  # stopped by the runner (timeout)
            return
        try:
            outs = dfut.result()
        except BaseException as exc:
            self._on_error(batch, exc)
            return
        self._resolve(batch, outs)

    def _resolve(self, batch: _Batch, outs: list[tuple]) -> None:
        with self._lock:
            self._batches.pop(batch.token, None)
            if batch.future.done():
                return
            batch.future.set_result(outs)
        batch.dfut = None  # release the result on the cluster

    def _on_error(self, batch: _Batch, exc: BaseException) -> None:
        from distributed.scheduler import KilledWorker

        if isinstance(exc, KilledWorker):
            _, funcs, calls, *_ = loads(batch.payload)
            self._split(batch, funcs, calls)
            return
        self._resolve(batch, _failed_outcomes(batch.payload, self._dask_error(exc)))

    def _dask_error(self, exc: BaseException) -> TaskError:
        return TaskError(
            "DaskError",
            f"the Dask cluster could not run this task ({type(exc).__name__}: {exc})")

    def _split(self, batch: _Batch, funcs: list, calls: list) -> None:
        """A batch Dask gave up on: one Dask task per call, so only the culprit fails.

        Dask also counts the deaths of workers a task was merely *queued* on, so a
        call given up again fails only if it is known to have started (its
        "started" event, which a part waits a moment to deliver); otherwise it
        is sent again, up to :data:`PART_TRIES` times.
        """
        bid = loads(batch.payload)[0]
        results: list = [None] * len(calls)
        left = [len(calls)]
        lock = threading.Lock()

        def part_done(i: int, part: _Batch, dfut: Any) -> None:
            try:
                outs = dfut.result()
            except BaseException as exc:
                from distributed.scheduler import KilledWorker

                if not isinstance(exc, KilledWorker):
                    outs = _failed_outcomes(part.payload, self._dask_error(exc))
                elif part.starts == 0 and part.tries < PART_TRIES:
                    send(i, part)
                    return
                else:
                    err = WorkerDied(
                        "WorkerDied", f"the Dask worker running this task died, repeatedly "
                        f"(the scheduler gave up: {exc})")
                    outs = _failed_outcomes(part.payload, err)
            with self._lock:
                self._batches.pop(part.token, None)
            with lock:
                results[i] = outs
                left[0] -= 1
                last = left[0] == 0
            if last:
                self._resolve(batch, [o for r in results for o in r])

        def send(i: int, part: _Batch) -> None:
            part.tries += 1
            part.dfut = self.client.submit(
                _run_on_worker, part.payload, self.topic, part.token, True, part.stored,
                key=f"nbgroups-call-{uuid.uuid4().hex}", pure=False)
            part.dfut.add_done_callback(lambda f: part_done(i, part, f))

        for i, call in enumerate(calls):
            payload = dumps((bid, funcs, [call]))  # cloudpickle: args may be notebook objects
            part = _Batch(next(self._tokens), payload, None, batch.future)
            part.stored = batch.stored
            with self._lock:
                self._batches[part.token] = part
            send(i, part)

    # -------------------------------------------------------------- faults
    def is_broken(self, exc: BaseException) -> bool:
        return False  # the cluster heals itself; a failed batch never means "restart"

    def restart(self) -> None:
        """Nothing to replace: Dask's nannies restart dead workers."""

    def kill_worker(self, pid: int) -> None:
        """Stop the batch stamped with token ``pid`` (its timeout): fail it now,
        cancel its Dask task and restart its worker, off the runner's thread."""
        with self._lock:
            batch = self._batches.pop(pid, None)
        if batch is None or batch.future.done():
            return
        batch.future.set_exception(_TimedOut(f"batch stopped on worker {batch.address}"))
        dfut, batch.dfut = batch.dfut, None
        threading.Thread(target=self._free_worker, args=(dfut, batch.address),
                         name="nbgroups-dask-restart", daemon=True).start()

    def end_orphans(self, ids: set[str], wait: float) -> set[str]:
        """Let the calls of ``ids`` that the cluster still runs end first (a killed
        kernel's: their results are lost with it) so that a resume does not run
        them a second time alongside. They get ``wait`` seconds; the workers still
        running one then are restarted through their nannies, which stops them,
        as a dead kernel's loky workers stop. Returns the ids still running
        after that (a worker without a nanny cannot be restarted)."""
        deadline = time.monotonic() + wait
        running = self._running(ids)
        while running and time.monotonic() < deadline:
            time.sleep(ORPHAN_POLL_SECONDS)
            running = self._running(ids)
        if not running:
            return set()
        # Only workers with a nanny, which starts them again: one without would be
        # gone for good (a --no-nanny worker, or a LocalCluster's in-process
        # worker, whose process is the client's own).
        try:
            nannies = {a for a, info in self.client.scheduler_info()["workers"].items()
                       if info.get("nanny")}
        except Exception:
            nannies = set()
        ending = sorted(a for a in running if a in nannies)
        log.warning("nbgroups: %d call(s) a gone kernel started still run on Dask "
                    "workers %s after %g s; ending %s (their nannies start them again)",
                    sum(map(len, running.values())), sorted(running), wait,
                    ending or "none of them: no nanny")
        if ending:
            # Not restart_workers: a nanny's restart closes its worker gracefully,
            # which waits for the running thread, i.e. for the very call to end.
            with contextlib.suppress(Exception):
                self.client.run(_exit_now, workers=ending, on_error="ignore",
                                callback_timeout=ASK_SECONDS)
        deadline = time.monotonic() + wait
        running = self._running(ids)
        while running and time.monotonic() < deadline:
            time.sleep(ORPHAN_POLL_SECONDS)
            running = self._running(ids)
        return set().union(*running.values()) if running else set()

    def _running(self, ids: set[str]) -> dict[str, set[str]]:
        """``{worker address: ids among ids it runs now}``, for the workers running some."""
        try:
            now = self.client.run(_calls_running, on_error="return",
                                  callback_timeout=ASK_SECONDS)
        except Exception as exc:  # the scheduler did not answer: nothing known to wait for
            log.warning("nbgroups: could not ask the Dask workers what they run (%s)", exc)
            return {}
        # a worker that could not answer (closing, restarting) runs none of them any more
        return {a: hit for a, calls in now.items()
                if isinstance(calls, list) and (hit := ids.intersection(calls))}

    def _free_worker(self, dfut: Any, address: str | None) -> None:
        try:
            if dfut is not None:
                self.client.cancel(dfut, force=True)
            if address:
                self.client.restart_workers([address], raise_for_error=False)
        except Exception as exc:
            log.warning("nbgroups: could not restart Dask worker %s after a timeout (%s); "
                        "the task runs on to its end, its result discarded", address, exc)

    def shutdown(self) -> None:
        """Cancel what is still queued on the cluster; close the client if it is ours."""
        with self._lock:
            batches = list(self._batches.values())
            self._batches.clear()
        dfuts = [b.dfut for b in batches if b.dfut is not None]
        self._scattered.clear()  # their data leaves the cluster with the futures
        try:
            self.client.unsubscribe_topic(self.topic)
            if dfuts:
                self.client.cancel(dfuts, force=True)
        except Exception:  # already closed
            pass
        if self._owned:
            with _clients_lock:
                if _in_use.get(self._address) is self.client:
                    del _in_use[self._address]
            with contextlib.suppress(Exception):
                self.client.close()
