"""The store's layout: key shapes, counters, the outcome counter, and task
records built from stored values (the key table is in the package docstring)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from .. import names
from ..errors import NbgroupsError
from ..records import (
    Outcome,
    State,
    TaskRecord,
)
from ..serialize import (
    join_chunks,
    loads_exception,
    loads_result,
    unloadable_result,
)
from ..tracebacks import render
from ..values import shown_call

SEP = "\x00"
LARGE_RESULT = 1 << 20  # a result this large gets an entry of its own
CHUNKED = f"{SEP}c"  # ends the key of such an entry holding async_iter chunks
FRAMED = f"{SEP}f"  # ends the key of such an entry holding a framed result (serialize)
COUNTERS = ("n", "ok", "fail", "cancel", "reused")
STATE_COUNTER = {"success": "ok", "failure": "fail", "cancelled": "cancel"}
# In an expiring layer, how much longer than the TTL a task's entries are kept
# while it waits for its result (a task of a killed kernel vanishes after that).
PENDING_GRACE = 7 * 86400


def gkey(kind: str, group: str | None, gen: int) -> str:
    return f"{kind}{SEP}{group or ''}{SEP}{gen}{SEP}"


def value_ref(digest: str, prefix: str) -> str:
    """The entry saying that spec page ``prefix`` takes the stored value ``digest``."""
    return f"v{SEP}{digest}{SEP}{prefix}"


def page_index(prefix: str) -> str:
    """The one index entry of a page: found from a task id and from a derived name."""
    return f"n{SEP}{names.name_family(prefix)}{SEP}{prefix}"


_ctr_lock = threading.Lock()
_ctr_last = [0]


def result_size(blob: Any) -> int:
    """Bytes of a stored result: pickled bytes, or an ``async_iter``'s list of chunks."""
    if type(blob) is bytes:
        return len(blob)
    if type(blob) is list:  # a chunk that failed as a whole (its callable did not load) is None
        return sum(len(chunk) for chunk in blob if chunk is not None)
    return 0


def outcome_ctr() -> str:
    """A key part that sorts after every earlier one, in this and other processes
    (nanosecond clock, made strictly increasing here; the pid breaks ties)."""
    with _ctr_lock:
        now = max(time.time_ns(), _ctr_last[0] + 1)
        _ctr_last[0] = now
    return f"{now:020d}.{os.getpid():08d}"


def build_record(
    tid: str, name: str, func: str, args, kwargs, o: Outcome | None, label: str | None,
    submitted: float | None, cls: type = TaskRecord, items=None, blobs=None,
    saved: bool = True,
) -> TaskRecord:
    """A task record from what was submitted and its latest outcome (or None).

    ``blobs(key)`` loads a large result kept in its own store entry; ``saved``
    is False for a task submitted with ``save=False``.
    """
    state = State(o.state) if o else State.QUEUED
    if o is None or state is State.CANCELLED:
        result = None
    elif state is State.SUCCESS:
        result = result_value(o, blobs)
    else:
        result = failure_value(o, blobs)
    args, kwargs = shown_call(args, kwargs)  # large values stored by digest: loaded, mapped
    if items is not None:  # async_iter: the items are the arguments
        args = (shown_call(items, None)[0],)
    return cls(
        id=tid, name=name, func=func, args=args, kwargs=kwargs, result=result, group=label,
        started=o.started if o else None, stopped=o.stopped if o else None,
        success=None if o is None or state is State.CANCELLED else state is State.SUCCESS,
        attempt_count=o.attempt if o else 0,
        traceback=_traceback(o) if o and state is State.FAILURE else None,
        state=state, submitted=submitted, saved=saved,
        stdout=o.stdout if o else None, stderr=o.stderr if o else None,
        worker=o.worker if o else None, memory=o.memory if o else None,
    )


def _traceback(o: Outcome) -> str | None:
    """The traceback rendered here, from its frames (this kernel knows its cells'
    sources), or the text the worker made (rows of schema 1)."""
    if o.frames:
        try:
            return render(o.frames)
        except Exception:  # malformed frames: the worker's text is still there
            pass
    return o.traceback


def result_value(o: Outcome, blobs: Any = None) -> Any:
    """A success's result; a :func:`~nbgroups.serialize.unloadable_result` error
    in its place if this process cannot unpickle it."""
    if o.result is None:
        return None
    try:
        if isinstance(o.result, list):
            return join_chunks(o.result)
        if isinstance(o.result, str):  # a large result in its own entry
            return blobs(o.result)
        return loads_result(o.result)
    except NbgroupsError:  # a missing or tampered entry: refused, never skipped
        raise
    except Exception as exc:
        return unloadable_result(exc)


def failure_value(o: Outcome, blobs: Any = None) -> Any:
    try:
        if isinstance(o.result, list):  # async_iter: the items' results and exceptions
            if None in o.result:  # a chunk failed as a whole: no per-item results
                return loads_exception(o.error) if o.error is not None else None
            return join_chunks(o.result)
        if isinstance(o.result, str) and o.result.endswith(CHUNKED):  # the same, own entry
            return blobs(o.result)
    except NbgroupsError:
        raise
    except Exception as exc:
        return unloadable_result(exc)
    return loads_exception(o.error) if o.error is not None else None
