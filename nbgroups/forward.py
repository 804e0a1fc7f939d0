"""Live output: what running tasks print, forwarded to their group's view as it comes.

With the ``live_output`` setting on (default off)::

    task thread: print / logging / warnings ──▶ capture ──▶ sink.write(text)
                      │                             (bounded tail per call: CHUNK)
                      ▼
    worker: flusher thread, at most every INTERVAL s ──▶ the batch's monitor file:
            a ring of LIVE_SLOTS chunks (loky), or a Dask event the client writes there
                      │
                      ▼
    kernel: the view's refresh (renderer, <= 10 a second) ──▶ Hub.poll(batches in flight)
            and each batch as it comes back (Hub.harvest) ──▶ the group's last LINES lines
                      │
                      ▼
    the group's progress view in the cell that submitted: a panel of those lines

Every stage is bounded, so a task printing megabytes never stalls its group or
floods Jupyter's iopub channel (which drops messages past ~1000 a second): a
call's pending text keeps its last :data:`CHUNK` characters (what was dropped
is counted and shown as a marker line), a worker writes at most one chunk per
call every :data:`INTERVAL` seconds and one when the call ends, the kernel
keeps the last :data:`LINES` lines per group, and a view redraws at most ten
times a second, only on change. What a call printed in full (its last 64 KB)
is in ``Task.stdout`` / ``Task.stderr`` as ever; live output is a view of it.

With the setting off nothing here runs: the capture's sink is None.

Calls in the kernel's process (``thread`` backend) hand their text straight
to the hub (:class:`LocalSink`); ``sync`` calls print in the cell as usual.

Worker side imports only the standard library, :mod:`.monitor` and
:mod:`.reporting` (the call index of the running call).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from . import monitor, reporting
from .signalsafe import Wake
from .triage import call_text

INTERVAL = 0.1  # seconds between two chunks a worker writes for one call
CHUNK = 2000  # characters of a call's output kept between two chunks: its last ones
LINES = 40  # lines kept (and shown) per group
LINE_MAX = 400  # characters of one line shown
LABEL_MAX = 60  # characters of the call named in front of its lines (long values cut first)
OPEN_MAX = 8  # unfinished last lines kept per group (those of the tasks writing lately)


def skipped_line(n: int) -> str:
    """The marker shown where ``n`` characters of live output were dropped."""
    return f"[… {n:,} characters not shown live (too fast); Task.stdout keeps the last 64 KB]"


# ---------------------------------------------------------------- worker side
class _Pending:
    """A call's text not yet sent: its tail, and how much was dropped before it."""

    __slots__ = ("parts", "size", "skipped")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.skipped = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > 2 * CHUNK:  # keep the tail: amortized O(1) per character
            joined = "".join(self.parts)
            self.skipped += len(joined) - CHUNK
            self.parts = [joined[-CHUNK:]]
            self.size = CHUNK

    def take(self) -> tuple[int, str]:
        joined = "".join(self.parts)
        skipped = self.skipped + max(0, len(joined) - CHUNK)
        return skipped, joined[-CHUNK:]


class Sink(abc.ABC):
    """Where one batch's live output goes (a worker's; subclasses say how it is sent).

    ``write`` runs in the task's thread: it only appends to the call's pending
    text; the process's flusher thread sends it on (:class:`_Flusher`).
    """

    def __init__(self) -> None:
        self._seq = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        """A piece the running call wrote (from :mod:`nbgroups.capture`)."""
        FLUSHER.add(self, reporting.current.index, text)

    def end_call(self) -> None:
        """The running call ended: send what it wrote last, now."""
        FLUSHER.flush((self, reporting.current.index))

    def send(self, call: int, skipped: int, text: str) -> None:
        with self._lock:
            self._seq += 1
            seq = self._seq
        with contextlib.suppress(OSError):  # live output is best effort; the record keeps all
            self._send(seq, call, skipped, text)

    @abc.abstractmethod
    def _send(self, seq: int, call: int, skipped: int, text: str) -> None:
        """Send chunk ``seq`` of call ``call`` on its way."""


class FileSink(Sink):
    """A pool worker's batch: chunks go to the ring of its monitor file."""

    def __init__(self, fd: int, batch: int) -> None:
        super().__init__()
        self.fd = fd
        self.batch = batch

    def _send(self, seq: int, call: int, skipped: int, text: str) -> None:
        monitor.write_live(self.fd, self.batch, seq, call, skipped, text)


class EventSink(Sink):
    """A Dask worker's batch: chunks go as events (``send_event(msg)``); the client
    writes them to the batch's monitor file (:mod:`nbgroups.executors.dask`)."""

    def __init__(self, send_event: Callable[[dict], None]) -> None:
        super().__init__()
        self.send_event = send_event

    def _send(self, seq: int, call: int, skipped: int, text: str) -> None:
        self.send_event({"live": (seq, call, skipped, text)})


class _Flusher:
    """Sends the pending text of every call of this process, at most every INTERVAL s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._pending: dict[tuple[Sink, int], _Pending] = {}
        self._wake = Wake()  # set by inline tasks in the kernel's main thread too
        self._thread: threading.Thread | None = None

    def add(self, sink: Sink, call: int, text: str) -> None:
        with self._lock:
            p = self._pending.get((sink, call))
            if p is None:
                p = self._pending[(sink, call)] = _Pending()
            p.add(text)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nbgroups-live-output",
                                                daemon=True)
                self._thread.start()
        if not self._wake.is_set():
            self._wake.set()

    def flush(self, key: tuple[Sink, int] | None = None) -> None:
        """Send the pending text of ``key`` (a sink's call), or of every call. One
        flush at a time, so that a call's chunks go in the order they were written."""
        with self._sending:
            with self._lock:
                if key is None:
                    taken, self._pending = self._pending, {}
                else:
                    p = self._pending.pop(key, None)
                    taken = {key: p} if p is not None else {}
            for (sink, call), p in taken.items():
                skipped, text = p.take()
                sink.send(call, skipped, text)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.flush()
            time.sleep(INTERVAL)  # the rate limit itself: text written meanwhile waits


FLUSHER = _Flusher()


class LocalSink:
    """Calls run in the kernel's process (``thread`` backend): text goes to the hub."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def write(self, text: str) -> None:
        HUB.add_local(self.calls[reporting.current.index][0], text)

    def end_call(self) -> None:
        """Nothing is held here."""


# ---------------------------------------------------------------- kernel side
class Lines(NamedTuple):
    """A group's live output now: its last complete ``lines`` (``total``: how many
    complete lines came in all), the unfinished last line of each task writing
    (``open``), and ``version``, changed by anything new."""

    version: int
    total: int
    lines: tuple[str, ...]
    open: tuple[str, ...]


NO_LINES = Lines(0, 0, (), ())


class _GroupLines:
    """The last LINES lines of a group's live output, and its change count."""

    __slots__ = ("lines", "open", "total", "version")

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=LINES)
        self.open: dict[str, str] = {}  # label -> its unfinished last line
        self.version = 0
        self.total = 0

    def line(self, text: str) -> None:
        self.lines.append(text)
        self.total += 1
        self.version += 1

    def add(self, label: str, skipped: int, text: str) -> None:
        if skipped:
            self.line(f"{label} │ {skipped_line(skipped)}")
        pieces = (self.open.pop(label, "") + text).split("\n")
        for line in pieces[:-1]:
            self.line(f"{label} │ {_cut(line.rsplit(chr(13), 1)[-1])}")  # \r: redraws
        if pieces[-1]:
            self.open[label] = pieces[-1][-LINE_MAX:]  # the newest last: the dict's order
            if len(self.open) > OPEN_MAX:  # e.g. ended tasks whose last line had no \n
                oldest = next(iter(self.open))
                self.line(f"{oldest} │ {_cut(self.open.pop(oldest).rsplit(chr(13), 1)[-1])}")
        self.version += 1

    def now(self) -> Lines:
        return Lines(self.version, self.total, tuple(self.lines),
                     tuple(f"{k} │ {_cut(v.rsplit(chr(13), 1)[-1])}"
                           for k, v in self.open.items()))


def label(job: Any) -> str:
    """What names a task in front of its lines: its call, ``simulate(k=0.5, dt=0.01)``,
    at most :data:`LABEL_MAX` characters, long values cut first (every argument
    stays in sight: it is what tells the group's calls apart)."""
    return call_text(job.func[0], job.args if job.items is None else (job.items,), job.kwargs,
                     width=LABEL_MAX)


def _cut(line: str) -> str:
    return line if len(line) <= LINE_MAX else line[:LINE_MAX] + "…"


class Hub:
    """The kernel's side: reads the chunks of batches in flight, keeps each group's
    last lines, each named by its task's :func:`label`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, int] = {}  # batch id -> the last chunk read
        self._groups: dict[str | None, _GroupLines] = {}
        self._local: dict[str, _Pending] = {}  # task id -> text of an in-process call
        self._polled = 0.0

    def add_local(self, task_id: str, text: str) -> None:
        """Text of a call running in this process (:class:`LocalSink`)."""
        with self._lock:
            p = self._local.get(task_id)
            if p is None:
                p = self._local[task_id] = _Pending()
            p.add(text)

    def poll(self, batches: Iterable[Any], every: float = 0.0) -> None:
        """Read what the batches' calls wrote since the last poll (at most once per
        ``every`` seconds, whichever view asks)."""
        now = time.monotonic()
        with self._lock:
            if now - self._polled < every:
                return
            self._polled = now
            for batch in batches:
                self._read(batch)

    def harvest(self, batch: Any) -> None:
        """``batch`` came back: read its last chunks, before its monitor file is reused."""
        with self._lock:
            self._read(batch)
            self._seen.pop(batch.id, None)

    def _read(self, batch: Any) -> None:
        if batch.monitor is None:
            for job in batch.jobs:
                p = self._local.pop(job.id, None) if self._local else None
                if p is not None:
                    skipped, text = p.take()
                    self._lines(job.options.group).add(label(job), skipped, text)
            return
        last = self._seen.get(batch.id, 0)
        for chunk in monitor.read_live(batch.monitor, batch.id, last):
            if not 0 <= chunk.call < len(batch.jobs):
                continue
            job = batch.jobs[chunk.call]
            skipped = chunk.skipped
            lines = self._lines(job.options.group)
            if chunk.seq > last + 1:  # chunks overwritten in the ring before they were read
                lines.line(f"{label(job)} │ [… {chunk.seq - last - 1} chunk(s) of output not "
                           "shown live (too fast); Task.stdout keeps the last 64 KB]")
            lines.add(label(job), skipped, chunk.text)
            last = chunk.seq
        self._seen[batch.id] = last

    def _lines(self, group: str | None) -> _GroupLines:
        g = self._groups.get(group)
        if g is None:
            g = self._groups[group] = _GroupLines()
        return g

    def lines(self, group: str | None) -> Lines:
        """``group``'s live output now: its last LINES lines, and more (:class:`Lines`)."""
        with self._lock:
            g = self._groups.get(group)
            return NO_LINES if g is None else g.now()

    def clear(self) -> None:
        """Forget everything (a new runner)."""
        with self._lock:
            self._seen.clear()
            self._groups.clear()
            self._local.clear()


HUB = Hub()
