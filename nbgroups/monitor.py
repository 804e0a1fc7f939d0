"""The monitor-file protocol between the runner and a worker, in one place.

A batch sent to a process pool carries the path of a small file. Its worker
*stamps* it before each call with ``(batch id, call index, pid, start time)``;
a byte after the stamp is the *cancel flag*. The runner reads the stamp when a
worker dies (which call died with it) or to time a call out, and sets the
flag to cancel the calls of a batch not begun yet. The order makes cancelling
exact: the worker stamps then reads the flag; the runner sets the flag then
reads the stamp, so a call stamped after that read sees the flag.

Files are *reused*: a batch that came back gives its file to the next one (a
stamp names its batch; creating and removing a file per batch cost ~30 us of a
round trip), and the worker keeps each one open. A file is *removed* when its
batch broke or was flagged, so a path names one file for its whole life.

A runner's folder is named after its process (``nbgroups-monitor-<pid>-<start
time>-…``): when that process is gone (killed), the next runner removes the
folder once the workers stamped in it have exited (:func:`clean_orphans`), and
``resume_group`` waits for them first (a worker whose kernel died runs no new
call, see :mod:`nbgroups.worker`, but may be inside one).

Imported by pool workers: only the standard library here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

STAMP = struct.Struct("<qqqd")  # batch id, call index, pid, start time
CANCEL_AT = STAMP.size  # the flag's offset: a byte after the stamp
FLAG = b"\x01"
PROGRESS_AT = 64  # a task's own report (nbgroups.report), after the flag
# batch id, call index, done, total (NaN: none), time, the note's length in bytes
PROGRESS = struct.Struct("<qqdddH")
NOTE_MAX = 160  # bytes of a report's note kept
OPEN_MAX = 64  # monitor files a worker keeps open
# Live output (the ``live_output`` setting, :mod:`nbgroups.forward`): a ring of slots
# after the report, each one chunk of a call's output. A slot is written in one
# pwrite and read while it may be rewritten: its CRC tells a torn read.
LIVE_AT = 4096
LIVE_SLOTS = 8
LIVE_SLOT = 4096
# batch id, chunk number (from 1), call index, characters dropped before it, bytes, crc32
LIVE = struct.Struct("<qqqqII")
LIVE_TEXT_MAX = LIVE_SLOT - LIVE.size  # bytes of text a chunk holds
PREFIX = "nbgroups-monitor-"


class Progress(NamedTuple):
    """A task's own last report (:func:`nbgroups.report`), for call ``call`` of ``batch``."""

    batch: int
    call: int
    done: float
    total: float | None
    at: float
    note: str


class Chunk(NamedTuple):
    """One chunk of a call's live output: call ``call`` of ``batch``, number ``seq``."""

    batch: int
    seq: int
    call: int
    skipped: int  # characters of this call's output dropped just before it (rate limit)
    text: str


class Stamp(NamedTuple):
    """What a monitor file says: the call a worker began last, and when."""

    batch: int
    call: int  # its index in the batch
    pid: int  # the dask backend stores its batch token here
    started: float


# ---------------------------------------------------------------- worker side
_open_fds: dict[str, int] = {}  # monitor files open in this worker, by path


def worker_fd(path: str) -> int:
    """The monitor file open for writing in this worker, kept open: the runner
    hands the same few files to batch after batch (opening and closing one per
    batch cost two system calls of ~10 us each in a round trip)."""
    fd = _open_fds.get(path)
    if fd is None:
        if len(_open_fds) >= OPEN_MAX:
            for old in _open_fds.values():
                os.close(old)
            _open_fds.clear()
        fd = _open_fds[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    return fd


def stamp_and_check(fd: int, batch: int, index: int, pid: int) -> bool:
    """Stamp the call about to run; True if the batch's calls from here on are
    cancelled (stamped first, then the flag read: see the module docstring)."""
    os.pwrite(fd, STAMP.pack(batch, index, pid, time.time()), 0)
    return os.pread(fd, 1, CANCEL_AT) == FLAG


def write_progress(fd: int, batch: int, index: int, done: float, total: float,
                   note: str) -> None:
    """Write a call's report (``total`` NaN: none) after the flag, in one write."""
    data = note.encode("utf-8", "replace")[:NOTE_MAX]
    os.pwrite(fd, PROGRESS.pack(batch, index, done, total, time.time(), len(data)) + data,
              PROGRESS_AT)


def write_live(fd: int, batch: int, seq: int, call: int, skipped: int, text: str) -> None:
    """Write chunk ``seq`` of the batch's live output into its slot of the ring, in one
    write (its tail, if longer than a slot holds: the cut is counted in ``skipped``)."""
    data = text.encode("utf-8", "replace")
    if len(data) > LIVE_TEXT_MAX:
        cut = data[:len(data) - LIVE_TEXT_MAX]
        skipped += len(cut.decode("utf-8", "ignore"))
        data = data[-LIVE_TEXT_MAX:]
    os.pwrite(fd, LIVE.pack(batch, seq, call, skipped, len(data), zlib.crc32(data)) + data,
              LIVE_AT + (seq % LIVE_SLOTS) * LIVE_SLOT)


def write_live_at(path: str, batch: int, seq: int, call: int, skipped: int,
                  text: str) -> None:
    """:func:`write_live` on a worker's behalf (the dask backend, from its events)."""
    _write_at(path, write_live, batch, seq, call, skipped, text)


def write_progress_at(path: str, batch: int, index: int, done: float, total: float,
                      note: str) -> None:
    """:func:`write_progress` on a worker's behalf (the dask backend, from its events)."""
    _write_at(path, write_progress, batch, index, done, total, note)


def _write_at(path: str, write: Callable[..., None], *args: Any) -> None:
    """``write(fd, *args)`` on the monitor file ``path``, opened for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        write(fd, *args)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- runner side
def read_live(path: str, batch: int, after: int) -> list[Chunk]:
    """The chunks of ``batch``'s live output numbered above ``after``, in order; a
    torn slot (being rewritten) and every chunk after it are left for the next read."""
    try:
        with open(path, "rb") as f:
            f.seek(LIVE_AT)
            ring = f.read(LIVE_SLOTS * LIVE_SLOT)
    except OSError:
        return []
    found = []
    for at in range(0, len(ring) - LIVE.size + 1, LIVE_SLOT):
        b, seq, call, skipped, n, crc = LIVE.unpack_from(ring, at)
        if b != batch or seq <= after:
            continue
        data = ring[at + LIVE.size:at + LIVE.size + n]
        if len(data) != n or zlib.crc32(data) != crc:
            found.append(Chunk(b, seq, -1, 0, ""))  # torn: marks where to stop
            continue
        found.append(Chunk(b, seq, call, skipped, data.decode("utf-8", "replace")))
    found.sort()
    torn = next((i for i, c in enumerate(found) if c.call < 0), len(found))
    return found[:torn]


def read_progress(path: str) -> Progress | None:
    """The last report written to ``path``, or None (none, or the file is gone)."""
    try:
        with open(path, "rb") as f:
            f.seek(PROGRESS_AT)
            data = f.read(PROGRESS.size + NOTE_MAX)
    except OSError:
        return None
    if len(data) < PROGRESS.size:
        return None
    batch, call, done, total, at, n = PROGRESS.unpack_from(data)
    note = data[PROGRESS.size:PROGRESS.size + n].decode("utf-8", "replace")
    return Progress(batch, call, done, None if total != total else total, at, note)


def read(path: str) -> Stamp | None:
    """The stamp last written to ``path``, or None (not stamped yet, or gone)."""
    try:
        with open(path, "rb") as f:
            data = f.read(STAMP.size)
    except OSError:
        return None
    return Stamp._make(STAMP.unpack(data)) if len(data) == STAMP.size else None


def write(path: str, batch: int, index: int, pid: int, started: float) -> None:
    """Stamp ``path`` on a worker's behalf (the dask backend, from its events)."""
    with open(path, "wb") as f:
        f.write(STAMP.pack(batch, index, pid, started))


def flag_cancel(path: str) -> bool:
    """Set the cancel flag; False if the file cannot be written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, FLAG, CANCEL_AT)
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


class MonitorFiles:
    """The runner's monitor files: a private directory, made on first use, and
    the files free for the next batches."""

    def __init__(self) -> None:
        self.directory: str | None = None
        self._free: list[str] = []

    def take(self, batch_id: int) -> str:
        """A file for batch ``batch_id``: a free one, or a new name."""
        if self._free:
            return self._free.pop()
        if self.directory is None:
            clean_orphans()  # folders of killed kernels whose workers are gone
            pid = os.getpid()
            self.directory = tempfile.mkdtemp(prefix=f"{PREFIX}{pid}-{process_start(pid)}-")
        return os.path.join(self.directory, f"{batch_id}")

    def give_back(self, path: str) -> None:
        """The batch came back whole: its worker is done with the file."""
        self._free.append(path)

    @staticmethod
    def drop(path: str | None) -> None:
        """Remove a file that must not be reused (its batch broke, or was flagged)."""
        if path is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(path)

    def remove_all(self) -> None:
        """Remove the directory (nothing may be in flight)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            self._free = []


# ---------------------------------------------------------------- processes
def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or '' if unknown:
    with the pid it names a process, not a pid that was reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def running(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (started at ``start``, if given) runs: a zombie
    (dead, not yet reaped) does not."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        try:  # no /proc: ask the kernel
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return not start or fields[19] == start


def _orphan_folders() -> list[tuple[str, int, str]]:
    """``(folder, owner pid, owner start)`` of the monitor folders whose runner's
    process is gone."""
    base = tempfile.gettempdir()
    found = []
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            if not name.startswith(PREFIX):
                continue
            pid_text, _, rest = name[len(PREFIX):].partition("-")
            start, _, _ = rest.partition("-")
            if not pid_text.isdigit() or not start.isdigit():
                continue  # an older layout: its owner cannot be told
            if not running(int(pid_text), start):
                found.append((os.path.join(base, name), int(pid_text), start))
    return found


def _workers_of(folder: str, owner_start: str) -> set[int]:
    """Worker pids stamped in a dead runner's folder that still run (started
    after their runner: a pid reused by an older process is not one)."""
    pids = set()
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            stamp = read(os.path.join(folder, name))
            if stamp is None or stamp.pid <= 0 or not running(stamp.pid):
                continue
            started = process_start(stamp.pid)
            if started and owner_start and int(started) < int(owner_start):
                continue
            pids.add(stamp.pid)
    return pids


def clean_orphans(wait: float = 0.0, kill: bool = False) -> int:
    """Remove the monitor folders of runners whose process is gone (a killed
    kernel), once the workers stamped in them have exited; those workers exit
    on their own within a second (:func:`nbgroups.worker.init_worker`).

    ``wait``: seconds to wait for them; ``kill``: then SIGKILL those still
    running a call (``resume_group`` is about to run those calls again).
    Returns how many such workers still run.
    """
    deadline = time.monotonic() + wait
    left: dict[str, set[int]] = {}
    for folder, _pid, start in _orphan_folders():
        left[folder] = _workers_of(folder, start)
    while True:
        for folder in [f for f, pids in left.items() if not any(map(running, pids))]:
            shutil.rmtree(folder, ignore_errors=True)
            del left[folder]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)  # another process's children: no event to wait on
    if kill:
        for pids in left.values():
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
    return sum(len([p for p in pids if running(p)]) for pids in left.values())
