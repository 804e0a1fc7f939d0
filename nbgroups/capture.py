"""A task's output, captured where it runs: stdout, stderr, logging, warnings.

Worker side, standard library only. :func:`install` puts a router in place of
``sys.stdout`` and ``sys.stderr`` once per process, a handler on the root
logger and a hook on :func:`warnings.showwarning`. While a call runs in a
thread (:func:`start` ... :func:`take`), what that thread writes goes to the
call's :class:`Capture`; writes of other threads (the kernel's own, with the
``thread`` backend) go on to the stream the router replaced. Routing by thread
is what lets one process run several tasks at once (threads, Dask workers)
and still keep each task's output apart.

Where things go: ``print`` and ``sys.stdout`` to the task's *stdout*;
``sys.stderr``, logging records (from :data:`DEFAULT_LOG_LEVEL` or the
``log_level`` setting up, formatted ``LEVEL name: message``) and warnings
(``path:line: Category: message``) to its *stderr*, in the order they
happened. Each is bounded: the last :data:`LIMIT` characters are kept, and a
line saying how much was cut starts what is left. Not captured: output
written straight to the file descriptors (C extensions, subprocesses) or to
``sys.stdout.buffer``, and what threads a task starts itself write (they go
to the worker's own streams). In the kernel (``thread`` and ``sync``
backends) the root logger's level is left as it is, so records below it are
not captured there; ``sync`` runs also show their output in the cell as usual.

With the ``live_output`` setting, each piece is also handed to the call's
live sink (:mod:`nbgroups.forward`), which sends it on, rate-limited, to the
group's view in the notebook; with the setting off that costs nothing.

Cost when nothing is printed: two thread-local stores per call and a check
of one counter (see ``benchmarks/run.py --only capture``).
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from typing import Any, TextIO

LIMIT = 64 * 1024  # characters kept per stream and task: the last ones
DEFAULT_LOG_LEVEL = logging.INFO
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

_local = threading.local()  # .cap: the Capture of the call this thread runs, or None


def cut_marker(cut: int) -> str:
    """The line that starts a stream of which ``cut`` earlier characters were dropped."""
    return f"[nbgroups: {cut:,} earlier characters cut, the last {LIMIT:,} kept]\n"


class _Buffer:
    """The tail of one stream: at most ~2 x LIMIT characters held, LIMIT kept."""

    __slots__ = ("cut", "parts", "size")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.cut = 0

    def write(self, text: str) -> None:
        n = len(text)
        if n >= LIMIT:  # one huge write: keep its tail only, drop everything before
            self.cut += self.size + n - LIMIT
            self.parts = [text[-LIMIT:]]
            self.size = LIMIT
            return
        self.parts.append(text)
        self.size += n
        if self.size > 2 * LIMIT:  # compact: amortized O(1) per character written
            joined = "".join(self.parts)
            self.cut += len(joined) - LIMIT
            self.parts = [joined[-LIMIT:]]
            self.size = LIMIT

    def text(self) -> str | None:
        if not self.size:
            return None
        joined = "".join(self.parts)
        cut = self.cut + max(0, len(joined) - LIMIT)
        joined = joined[-LIMIT:]
        return cut_marker(cut) + joined if cut else joined


class Capture:
    """What one call wrote: a bounded stdout and stderr (logging and warnings in
    order with stderr)."""

    __slots__ = ("dirty", "err", "live", "out", "tee")

    def __init__(self, tee: bool = False, live: Any = None) -> None:
        self.out = _Buffer()
        self.err = _Buffer()
        self.dirty = False  # anything written: checked once per call
        self.tee = tee  # also write to the replaced streams (inline runs in the kernel)
        self.live = live  # the ``live_output`` sink (nbgroups.forward), or None: off


class _Router:
    """Stands in for ``sys.stdout`` / ``sys.stderr``: a capturing thread's writes go
    to its :class:`Capture`, everyone else's to the stream it replaced."""

    def __init__(self, stream: TextIO, which: str) -> None:
        self._stream = stream
        self._which = which  # 'out' or 'err'

    def write(self, text: str) -> int:
        cap = getattr(_local, "cap", None)
        if cap is None:
            return self._stream.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        cap.dirty = True
        getattr(cap, self._which).write(text)
        if cap.live is not None:
            cap.live.write(text)
        if cap.tee:
            self._stream.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(_local, "cap", None) is None or _local.cap.tee:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty...: the real stream's
        return getattr(self._stream, name)


class _LogHandler(logging.Handler):
    """Formats a capturing thread's log records into its stderr; others' pass by."""

    def emit(self, record: logging.LogRecord) -> None:
        cap = getattr(_local, "cap", None)
        if cap is None:
            # not a task's record: what logging does without handlers of the root's own
            last = logging.lastResort
            if last is not None and record.levelno >= last.level \
                    and len(logging.getLogger().handlers) == 1:
                last.handle(record)
            return
        try:
            text = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        cap.dirty = True
        cap.err.write(text)
        if cap.live is not None:
            cap.live.write(text)


_installed: dict[str, Any] = {}
_install_lock = threading.Lock()


def install(level: int | None = None, own_process: bool = False) -> None:
    """Route this process's stdout, stderr, logging and warnings (idempotent; a
    new ``level`` is applied). Cheap when already installed: one dict lookup.

    ``own_process``: a pool worker, where the root logger's level may be
    lowered to ``level``; in the kernel (``thread`` and ``sync`` backends) it
    is left alone, and so records below its level are not captured there.
    """
    level = DEFAULT_LOG_LEVEL if level is None else level
    if _installed.get("level") == level and isinstance(sys.stdout, _Router) \
            and isinstance(sys.stderr, _Router):
        return
    with _install_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout, "out")
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr, "err")
        handler = _installed.get("handler")
        root = logging.getLogger()
        if handler is None:
            handler = _installed["handler"] = _LogHandler()
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            root.addHandler(handler)
            _installed["showwarning"] = warnings.showwarning
            warnings.showwarning = _showwarning
        handler.setLevel(level)
        if own_process and (root.level > level or root.level == logging.NOTSET):
            # the root logger drops records below its own level before any handler
            # sees them; in a pool worker nobody else relies on it (WARNING by default)
            root.setLevel(level)
        _installed["level"] = level


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    cap = getattr(_local, "cap", None)
    if cap is None or file is not None:
        _installed["showwarning"](message, category, filename, lineno, file, line)
        return
    cap.dirty = True
    text = warnings.formatwarning(message, category, filename, lineno, line)
    cap.err.write(text)
    if cap.live is not None:
        cap.live.write(text)


def start(tee: bool = False, live: Any = None) -> Capture:
    """Capture this thread's output from now on (until :func:`take`). A call
    that wrote nothing leaves its :class:`Capture` to the next one. ``live``:
    an object whose ``write(text)`` also gets every piece written (the
    ``live_output`` setting, :mod:`nbgroups.forward`)."""
    cap = getattr(_local, "spare", None)
    if cap is None or cap.dirty or cap.tee is not tee or cap.live is not live:
        cap = _local.spare = Capture(tee, live)
    _local.cap = cap
    return cap


def take(cap: Capture) -> tuple[str | None, str | None]:
    """Stop capturing this thread; ``(stdout, stderr)`` of the call, None when empty."""
    _local.cap = None
    if not cap.dirty:
        return None, None
    return cap.out.text(), cap.err.text()


def active() -> bool:
    """Whether this thread is running a call whose output is captured."""
    return getattr(_local, "cap", None) is not None
