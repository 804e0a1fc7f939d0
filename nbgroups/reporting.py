"""``report()``: a task's own progress, from inside it, to its group's view.

A task calls ``nbgroups.report(done, total=None, note=None)`` as often as it
likes: the worker writes at most one report per :data:`EVERY` seconds (and
the last one, ``done >= total``, always), next to its call's stamp in the
batch's monitor file (:func:`nbgroups.monitor.write_progress`); the runner
reads it when a view ticks (:meth:`nbgroups.runner.Runner.task_progress`).
Calls that run in the kernel's own process (``thread`` and ``sync``
backends) have no monitor file: their reports go to :data:`local`. On a Dask
worker they go as events (``send``, rate-limited the same way), which the
client writes to the batch's monitor file
(:mod:`nbgroups.executors.dask`). Outside a task ``report`` does nothing.

A call in a tight loop pays one thread-local lookup and one clock read per
``report`` between two writes (~0.2 us).

Imported by pool workers: only :mod:`nbgroups.monitor` and the standard library.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from . import monitor
from .errors import ArgumentTypeError

EVERY = 0.25  # seconds between two reports a call writes
current = threading.local()  # .where: (fd or None, batch id, calls, send or None);
# .index: the running call's; .last: when it last wrote a report (0: not yet)
local: dict[str, tuple] = {}  # in-process calls: task id -> (done, total, note, time)


def enter(fd: int | None, batch: int, calls: list,
          send: Callable[[dict], None] | None = None) -> None:
    """This thread now runs ``batch`` (the worker, once per batch; then
    ``current.index = i`` before each call: one attribute store per call).
    ``send``: reports go as messages ``{"progress": (call, done, total, note)}``
    (a Dask worker's events) instead of to ``fd`` or :data:`local`."""
    current.where = (fd, batch, calls, send)
    current.index = -1
    current.last = 0.0


def call_ended() -> None:
    """The running call ended (a Dask worker, after each call): if it reported,
    say so, so that its last report is not shown while the next call runs."""
    if current.last:
        current.last = 0.0
        send = current.where[3]
        if send is not None:
            send({"progress": (-1, 0.0, math.nan, "")})


def leave() -> None:
    """This thread runs no batch now; in-process calls' reports are dropped."""
    where = getattr(current, "where", None)
    if where is not None:
        current.where = None
        if where[0] is None and local:
            for call in where[2]:
                local.pop(call[0], None)


def report(done: float, total: float | None = None, note: str | None = None) -> None:
    """Tell the group's progress view how far this task is: ``done`` out of
    ``total`` (a fraction is shown then), with an optional short ``note``.

    Cheap in a tight loop (rate-limited to one write per quarter second); a
    no-op when not called from inside a task.

    >>> import nbgroups
    >>> nbgroups.report(3, 10, note="outside a task: nothing happens") is None
    True
    """
    where = getattr(current, "where", None)
    if where is None:
        return
    now = time.monotonic()
    final = total is not None and done >= total
    if now - current.last < EVERY and not final:
        return
    if isinstance(done, bool) or not isinstance(done, int | float):
        raise ArgumentTypeError(f"report(): done must be a number, got {done!r}")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int | float)):
        raise ArgumentTypeError(f"report(): total must be a number or None, got {total!r}")
    if note is not None and not isinstance(note, str):
        raise ArgumentTypeError(f"report(): note must be a str or None, got {note!r}")
    current.last = now
    fd, batch, calls, send = where
    index = current.index
    if index < 0:
        return
    if send is not None:
        send({"progress": (index, float(done), math.nan if total is None else float(total),
                           note or "")})
    elif fd is None:
        local[calls[index][0]] = (float(done), None if total is None else float(total), note,
                                  time.time())
    else:
        monitor.write_progress(fd, batch, index, float(done),
                               math.nan if total is None else float(total), note or "")
