"""What the dashboard's pages show: the store read into plain values.

No tornado here: each function takes the runner (its store, and its own
queued/running tasks) and returns dicts and lists that a template lays out or
a JSON endpoint sends. A group lives in one of the store's two layers: the
durable store (``ttl`` None) or the cache layer (``cached=``: ``ttl`` its
TTL), which the dashboard reads only where it exists (:func:`cache_ttl`).
Values from the store are turned into *text* here (bounded ``repr``), never
markup: the templates escape every one of them.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import pprint
import reprlib
import time
from typing import Any

from .. import presence
from ..display.formatting import format_duration, meter
from ..records import GroupCounts, State, TaskRecord
from ..timeline import Timeline

PAGE_SIZE = 100  # tasks per group page unless ?limit= says otherwise
MAX_PAGE_SIZE = 1000
FAILURES_PER_KIND = 100  # calls listed under each exception type
INLINE_FAILURES = 20_000  # groups up to this size list their failures on their page
INLINE_PER_KIND = 10
FULL_TEXT = 100_000  # characters of a value shown on the task page
# Groups up to this size get the timeline of all their tasks on their page
# (one bar each: the SVG grows ~150 bytes a task); larger ones that of the page shown.
TIMELINE_TASKS = 5_000

# Fields every record has; anything else a record holds (worker, captured
# output... as records grow) is shown too, as a column when present.
_CORE_FIELDS = {f.name for f in dataclasses.fields(TaskRecord)}
OPTIONAL_COLUMNS = ("worker", "stdout", "stderr")

_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 80
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 8


def preview(value: Any, width: int = 120) -> str:
    """A bounded one-line ``repr`` (never the whole of a large value)."""
    try:
        text = _short.repr(value)
    except Exception as exc:  # a broken __repr__ must not break the page
        text = f"<repr failed: {type(exc).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# A value larger than this (elements and string kilobytes, counted without reading
# it all) is shown through _full, whose work is bounded: pprint formats the whole
# value before it could be cut (a 10-million-element result took seconds and GBs).
FULL_ITEMS = 20_000
_full = reprlib.Repr()
_full.maxlevel = 8
_full.maxlist = _full.maxtuple = _full.maxset = _full.maxfrozenset = _full.maxdeque = 2_000
_full.maxarray = 2_000
_full.maxdict = 1_000
_full.maxstring = _full.maxlong = _full.maxother = FULL_TEXT


def _small(value: Any, budget: int = FULL_ITEMS) -> bool:
    """Whether ``value`` holds at most ``budget`` elements (strings count per 100
    characters); reads at most ``budget`` of them to say so."""
    stack = [value]
    seen = 0
    while stack:
        v = stack.pop()
        seen += 1 + (len(v) // 100 if isinstance(v, str | bytes) else 0)
        if seen > budget:
            return False
        if isinstance(v, dict):
            stack.extend(itertools.islice(itertools.chain.from_iterable(v.items()),
                                          budget - seen + 1))
        elif isinstance(v, list | tuple | set | frozenset):
            stack.extend(itertools.islice(v, budget - seen + 1))
    return True


def full_text(value: Any) -> str:
    """A value as the task page shows it: pretty-printed (a large one as a bounded
    one-line repr), cut at FULL_TEXT characters."""
    try:
        if isinstance(value, str):
            text = value
        elif _small(value):
            text = pprint.pformat(value, width=100)
        else:
            text = _full.repr(value) + "\n… (too large to show whole: shortened)"
    except Exception as exc:
        text = f"<repr failed: {type(exc).__name__}: {exc}>"
    if len(text) > FULL_TEXT:
        text = text[:FULL_TEXT] + f"\n… ({len(text) - FULL_TEXT} more characters)"
    return text


def clock(t: float | None) -> str:
    """A stored time as local ``YYYY-MM-DD HH:MM:SS``, or an empty string."""
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _summary(c: GroupCounts, now: float) -> dict:
    m = meter(c, now)
    return {
        "group": c.group, "submitted": c.submitted, "done": c.done, "failed": c.failed,
        "cancelled": c.cancelled, "reused": c.reused, "running": c.running,
        "queued": c.queued, "percent": m.percent,
        "state": m.state, "elapsed": m.elapsed, "elapsed_text": m.elapsed_text,
        "eta": m.eta, "eta_text": "" if m.settled else m.eta_text,
        "first": c.first_submitted, "last": c.last_finished,
    }


def cache_ttl(runner: Any) -> int | None:
    """The TTL to open the store's cache layer with (the dashboard's own
    ``cache_ttl`` setting: it only matters for what the dashboard writes there),
    or None if the store has no cache layer: it is not made here."""
    base = getattr(runner.store, "directory", None)
    if base is not None and not (base / "cache" / "cache.db").exists():
        return None
    return int(runner.settings.cache_ttl)


def _elsewhere(c: GroupCounts, held: tuple[int, int] | None) -> GroupCounts:
    """``c`` (its unfinished tasks not held here counted as queued) with those
    that other processes say they run now counted as running (see
    :mod:`nbgroups.presence`)."""
    if not held or not held[1] or not c.queued:
        return c
    moved = min(held[1], c.queued)
    return dataclasses.replace(c, queued=c.queued - moved, running=c.running + moved)


def group_summary(runner: Any, group: str, now: float | None = None,
                  ttl: int | None = None) -> dict:
    """One group's counts and meter as a JSON-ready dict (a few key reads), with
    its first and last activity as local times (``first_text``, ``last_text``).
    Tasks other processes run now count as running."""
    others = presence.elsewhere(runner.store_for(ttl), runner.owner)
    summary = _summary(_elsewhere(runner.counts(group, ttl), others.get(group)),
                       time.time() if now is None else now)
    summary.update(first_text=clock(summary["first"]), last_text=clock(summary["last"]),
                   cached=ttl is not None)
    return summary


def group_list(runner: Any) -> list[dict]:
    """Every group of the store, the cache layer's too, with :func:`group_summary`'s
    fields (times as numbers only; the page formats them; ``cached``: of the
    cache layer), in one pass: the store's counters of all groups in one read
    (the cache layer counts its entries, group by group), this process's queued
    and running tasks (a retry the dashboard started) added where it has some,
    and what other processes say they run now (one more read)."""
    runner.flush()
    now = time.time()
    out = []
    cached = cache_ttl(runner)
    for ttl in (None,) if cached is None else (None, cached):
        store = runner.store_for(ttl)
        others = presence.elsewhere(store, runner.owner)
        for c in store.all_counts():
            if runner.busy(c.group, ttl):
                c = runner.counts(c.group, ttl)
            else:  # unfinished tasks of other processes: queued, as runner.counts says
                c = dataclasses.replace(c, queued=max(0, c.submitted - c.finished - c.cancelled))
            summary = _summary(_elsewhere(c, others.get(c.group)), now)
            summary["cached"] = ttl is not None
            out.append(summary)
    return out


def _state(rec: TaskRecord, running: set[str]) -> str:
    if rec.state is State.QUEUED and rec.id in running:
        return State.RUNNING.value
    return rec.state.value


def _outcome_text(rec: TaskRecord) -> str:
    if rec.state is State.SUCCESS:
        return preview(rec.result)
    if rec.state is State.FAILURE:
        return rec.error or "failed"
    return ""


def _duration(rec: TaskRecord) -> str:
    taken = rec.time_taken()
    return "" if taken is None else f"{taken:.3f} s"


def _params(rec: TaskRecord) -> dict[str, str]:
    params = {}
    if rec.args:
        params["args"] = preview(rec.args[0] if len(rec.args) == 1 else rec.args, 60)
    for k, v in (rec.kwargs or {}).items():
        params[str(k)] = preview(v, 60)
    return params


def group_page(runner: Any, group: str, offset: int, limit: int,
               ttl: int | None = None, with_timeline: bool = False) -> dict | None:
    """The group page: its summary and one page of its tasks (``offset``,
    ``limit``), read with :meth:`~nbgroups.store.Store.group_slice`; None if
    the store has no such group. ``with_timeline``: also ``"timeline"``
    (:func:`timeline`), drawn from the page's records when the group is too
    large to draw whole (not read twice)."""
    runner.flush()
    store = runner.store_for(ttl)
    if not store.known(group):
        return None
    summary = group_summary(runner, group, ttl=ttl)
    total = summary["submitted"]
    offset = min(offset, max(0, (math.ceil(total / limit) - 1) * limit))
    records = store.group_slice(group, offset, offset + limit)
    # this process's calls in flight, and those other processes' workers run now
    running = runner.running_ids() | presence.running_elsewhere(store, group, runner.owner)
    rows = []
    columns: dict[str, None] = {}  # parameter names in order of first appearance
    extra: dict[str, None] = {}
    for i, rec in enumerate(records, offset):
        params = _params(rec)
        columns.update(dict.fromkeys(params))
        more = {}
        for name in OPTIONAL_COLUMNS:
            value = getattr(rec, name, None)
            if value is not None:
                more[name] = preview(value, 80)
                extra[name] = None
        rows.append({
            "position": i, "id": rec.id, "name": rec.name, "params": params,
            "state": _state(rec, running), "outcome": _outcome_text(rec),
            "duration": _duration(rec), "attempts": rec.attempt_count, "extra": more,
        })
    pages = max(1, math.ceil(total / limit))
    drawn = {"timeline": timeline(store, group, total, records)} if with_timeline else {}
    return {
        **drawn,
        "summary": summary, "rows": rows, "columns": list(columns), "extra": list(extra),
        "offset": offset, "limit": limit, "total": total, "page": offset // limit + 1,
        "pages": pages,
        "prev": max(0, offset - limit) if offset > 0 else None,
        "next": offset + limit if offset + limit < total else None,
        "last": (pages - 1) * limit,
    }


def timeline(store: Any, group: str, total: int, shown: list) -> dict:
    """The group's timeline (:meth:`TaskList.timeline`'s SVG): of every task if
    the group has at most TIMELINE_TASKS (``total``), else of the records
    ``shown`` (the page's). ``{"svg": markup, "whole": bool}``: the markup is
    laid out as it is, so it must stay Timeline's own (it escapes every text it
    draws: worker names, calls; the rest is numbers and fixed colours)."""
    whole = total <= TIMELINE_TASKS
    ran = (store.group_records(group) or []) if whole else shown
    return {"svg": Timeline(ran).svg, "whole": whole}


def failure_kinds(runner: Any, group: str, per_kind: int = FAILURES_PER_KIND,
                  ttl: int | None = None) -> list[dict]:
    """The group's failed tasks grouped by exception type, largest group first.

    Each: ``{"kind", "count", "calls": [{"id", "name", "params", "error",
    "traceback", "attempts"}]}`` with at most ``per_kind`` calls listed. Reads
    the whole group (a failure can be anywhere in it).
    """
    runner.flush()
    records = runner.store_for(ttl).group_records(group) or []
    kinds: dict[str, dict] = {}
    for rec in records:
        if rec.state is not State.FAILURE:
            continue
        error = rec.error or "failed"
        kind = error.split(":", 1)[0]
        entry = kinds.setdefault(kind, {"kind": kind, "count": 0, "calls": []})
        entry["count"] += 1
        if len(entry["calls"]) < per_kind:
            entry["calls"].append({
                "id": rec.id, "name": rec.name, "params": _params(rec), "error": error,
                "traceback": rec.traceback or "", "attempts": rec.attempt_count,
            })
    return sorted(kinds.values(), key=lambda k: (-k["count"], k["kind"]))


def task_page(runner: Any, task_id: str) -> dict | None:
    """Everything the store holds of one task: every field of its record, its
    runs (a retried task has several), as text; None if the id is unknown."""
    runner.flush()
    cached = cache_ttl(runner)
    for ttl in (None,) if cached is None else (None, cached):
        store = runner.store_for(ttl)
        rec = store.task(task_id)
        if rec is not None:
            break
    else:
        return None
    running = runner.running_ids()
    if rec.group is not None:
        running |= presence.running_elsewhere(store, rec.group, runner.owner)
    state = _state(rec, running)
    fields = []
    for f in dataclasses.fields(rec):
        value = getattr(rec, f.name)
        if f.name in ("submitted", "started", "stopped") and value is not None:
            text = f"{clock(value)} ({value:.6f})"
        elif f.name == "state":
            text = state
        elif f.name == "result":
            text = full_text(value)
        elif isinstance(value, str):
            text = value
        else:
            text = full_text(value)
        fields.append({"name": f.name, "text": text, "core": f.name in _CORE_FIELDS})
    taken = rec.time_taken()
    fields.append({"name": "time_taken()", "core": True,
                   "text": "" if taken is None else f"{taken:.6f} s ({format_duration(taken)})"})
    if rec.error:
        fields.append({"name": "error", "text": rec.error, "core": True})
    runs = []
    for run in store.task_history(task_id) or []:
        runs.append({"attempts": run.attempt_count, "state": run.state.value,
                     "started": clock(run.started), "stopped": clock(run.stopped),
                     "duration": _duration(run), "outcome": _outcome_text(run)})
    return {"id": rec.id, "name": rec.name, "group": rec.group, "state": state,
            "fields": fields, "runs": runs, "cached": ttl is not None}
