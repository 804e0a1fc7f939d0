"""The store: every task, result and count, behind one small interface.

Nothing outside this module touches diskcache. :class:`Store` holds the
layout and the logic once (template methods); :class:`DiskStore` (diskcache,
the default) and :class:`MemoryStore` (a dict, for tests and ``save=False``
experiments) implement seven primitives: get, set, add, incr, scan, delete and
a transaction.

Layout: tasks are written in *pages*, one signed entry per submission batch of
a group, never one entry per task (a diskcache ``set`` costs ~25 µs; ten
thousand of them would cost more than running ten thousand tiny tasks). Keys
are ``str`` with NUL separators, so a group's pages are one key range::

    g\\0GROUP                       int    label generation (delete_group bumps it)
    c\\0GROUP\\0GEN\\0NAME            int    counters: n (submitted), ok, fail, cancel,
                                          reused; t0/t1 float times
    s\\0GROUP\\0GEN\\0SEQ             bytes  signed SpecPage: the calls, in submission order
    o\\0GROUP\\0GEN\\0CTR             bytes  signed list of Outcome: how runs ended
                                          (CTR: time_ns.pid, so later runs sort last)
    n\\0FAMILY\\0PREFIX              str    page index: task id or derived name -> spec page key
                                          (FAMILY: the page's first two name words)
    q\\0PREFIX\\0CTR                 str    outcome index: id -> outcome page keys
    N\\0NAME\\0TIME                  str    task_name= overrides -> task id
    k\\0GROUP\\0GEN\\0KEY             str    reuse=True: call key -> task id (nbgroups.reuse)

Values handed to diskcache are only ``str``, ``int``, ``float`` and ``bytes``;
every pickle is ours and signed (:mod:`nbgroups.serialize`). Reads go through
SQL on diskcache's table and refuse rows diskcache would unpickle
(CVE-2025-69872), so a planted entry is never loaded.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from . import names
from .errors import SignatureError, StoreError
from .records import (
    SCHEMA_VERSION,
    Call,
    GroupCounts,
    Outcome,
    SpecPage,
    State,
    TaskList,
    TaskRecord,
)
from .serialize import (
    Signer,
    dumps,
    dumps_plain,
    join_chunks,
    join_stream,
    load_secret,
    loads,
    loads_exception,
)

SEP = "\x00"
LARGE_RESULT = 1 << 20  # a result this large gets an entry of its own
_CHUNKED = f"{SEP}c"  # ends the key of such an entry holding async_iter chunks
_COUNTERS = ("n", "ok", "fail", "cancel", "reused")
_STATE_COUNTER = {"success": "ok", "failure": "fail", "cancelled": "cancel"}


def _gkey(kind: str, group: str | None, gen: int) -> str:
    return f"{kind}{SEP}{group or ''}{SEP}{gen}{SEP}"


def _page_index(prefix: str) -> str:
    """The one index entry of a page: found from a task id and from a derived name."""
    return f"n{SEP}{names.name_family(prefix)}{SEP}{prefix}"


_ctr_lock = threading.Lock()
_ctr_last = [0]


_ID = itemgetter(0)  # an outcome row's task id


def _size(blob: Any) -> int:
    """Bytes of a stored result: pickled bytes, or an ``async_iter``'s list of chunks."""
    if type(blob) is bytes:
        return len(blob)
    return sum(map(len, blob)) if type(blob) is list else 0


def _outcome_ctr() -> str:
    """A key part that sorts after every earlier one, in this and other processes
    (nanosecond clock, made strictly increasing here; the pid breaks ties)."""
    with _ctr_lock:
        now = max(time.time_ns(), _ctr_last[0] + 1)
        _ctr_last[0] = now
    return f"{now:020d}.{os.getpid():08d}"


class Store:
    """Durable task records and counters (template; see the module docstring).

    ``ttl`` makes every entry expire (the ``cached`` layer); ``keep_args=False``
    drops call arguments from the records.
    """

    def __init__(self, signer: Signer, *, ttl: int | None = None, keep_args: bool = True):
        self._signer = signer
        self.ttl = ttl
        self.keep_args = keep_args
        self._seen: set[tuple[str | None, int]] = set()

    # ----------------------------------------------------------------- primitives
    def _get(self, key: str) -> Any: ...
    def _set(self, key: str, value: Any, expire: float | None = None) -> None: ...
    def _add(self, key: str, value: Any, expire: float | None = None) -> None: ...
    def _incr(self, key: str, delta: int, expire: float | None = None) -> int: ...
    def _scan(self, prefix: str) -> list[tuple[str, Any]]: ...
    def _delete(self, keys: Iterable[str]) -> None: ...
    def _scan_keys(self, prefix: str) -> list[str]:
        return [k for k, _ in self._scan(prefix)]

    def _set_many(self, items: list[tuple[str, Any]], expire: float | None = None) -> None:
        """Set several keys (inside a transaction); a store may do it in one statement."""
        for key, value in items:
            self._set(key, value, expire)

    def _transaction(self) -> contextlib.AbstractContextManager: ...
    def close(self) -> None:
        """Release the store's resources."""

    # ----------------------------------------------------------------- helpers
    def _signed(self, key: str, obj: Any) -> bytes:
        """``obj`` pickled (cloudpickle: arguments may be notebook objects), signed for ``key``."""
        return self._signer.sign(dumps(obj), key)

    def _signed_plain(self, key: str, obj: Any) -> bytes:
        """Plain data (tuples of str/bytes/numbers) pickled by the C pickler and signed."""
        return self._signer.sign(dumps_plain(obj), key)

    def _put_stream(self, key: str, parts: list[bytes], expire: float | None) -> None:
        """Store the signed concatenation of ``parts``; the disk store streams it
        to its file without ever building the concatenation."""
        self._set(key, self._signer.mac_parts(parts, key) + b"".join(parts), expire)

    def _blob(self, key: str) -> Any:
        """The value of a large result stored by :meth:`_put_stream`."""
        data = self._get(key)
        if data is None:
            raise StoreError(f"the result entry {key.replace(SEP, '/')!r} is missing from the "
                             "store (deleted outside nbgroups, or expired)")
        payload = self._signer.verify(data, key, f"entry {key.replace(SEP, '/')!r}")
        return join_stream(payload) if key.endswith(_CHUNKED) else loads(payload)

    def _outcome_rows(self, key: str, data: Any) -> list[tuple]:
        """The rows of an outcome page: ``(schema version, [Outcome-layout tuples])``."""
        version, rows = self._load(key, data)
        if version > SCHEMA_VERSION:
            raise StoreError(f"store entry {key.replace(SEP, '/')!r} was written by a newer "
                             f"nbgroups (schema {version}); upgrade nbgroups to read it")
        return rows

    def _load(self, key: str, data: Any) -> Any:
        if not isinstance(data, bytes | memoryview):
            raise SignatureError(f"store entry {key!r} is not a signed nbgroups entry")
        return loads(self._signer.verify(data, key, f"entry {key.replace(SEP, '/')!r}"))

    def _expire(self, ttl: int | None) -> float | None:
        ttl = ttl or self.ttl
        return None if ttl is None else float(ttl)

    def gen(self, group: str | None) -> int:
        """The current label generation of ``group`` (0 if never deleted)."""
        if not group:
            return 0
        value = self._get(f"g{SEP}{group}")
        return value if isinstance(value, int) else 0

    # ----------------------------------------------------------------- writes
    def write_pages(self, drafts: list[dict], ttl: int | None = None) -> list[SpecPage]:
        """Write submitted tasks, one entry per draft page, in one transaction.

        A draft is a dict with ``prefix, group, created, funcs, calls, options``;
        the store assigns the label generation and the submission sequence.
        """
        expire = self._expire(ttl)
        pages = []
        with self._transaction():
            sets: list[tuple[str, Any]] = []
            for d in drafts:
                group = d["group"]
                gen = self.gen(group)
                base = _gkey("c", group, gen)
                seq = self._incr(base + "n", len(d["calls"]), expire) - len(d["calls"])
                if (group, gen) not in self._seen:  # once per label generation
                    if group:
                        self._add(f"g{SEP}{group}", gen, expire)
                    self._add(base + "t0", d["created"], expire)
                    if expire is None:
                        self._seen.add((group, gen))
                calls = d["calls"] if self.keep_args else tuple(
                    (c[0], c[1], None, None, *c[4:]) for c in d["calls"]
                )
                page = SpecPage(
                    prefix=d["prefix"], group=group, gen=gen, seq=seq, created=d["created"],
                    funcs=d["funcs"], calls=tuple(calls), options=d["options"],
                )
                key = _gkey("s", group, gen) + f"{seq:012d}"
                sets += ((key, self._signed(key, page)), (_page_index(page.prefix), key))
                for c in calls:
                    if c[4]:  # a task_name= override gets its own name index entry
                        tid = names.task_id(page.prefix, c[0])
                        sets.append((f"N{SEP}{c[4]}{SEP}{time.time_ns():020d}", tid))
                pages.append(page)
            self._set_many(sets, expire)
        return pages

    def write_outcomes(
        self, groups: list[tuple[str | None, int, list[tuple], list[str]]],
        ttl: int | None = None,
    ) -> None:
        """Record how runs ended: ``(group, gen, outcome rows, previous states)``.

        Rows are in :class:`Outcome`'s layout (tuples, stored as they are).
        One outcome page per group is written, and the group's counters move
        to the new final states, from ``previous states`` (the final states
        that re-runs of a retried or re-submitted task replace).
        """
        expire = self._expire(ttl)
        now = time.time()
        with self._transaction():
            sets: list[tuple[str, Any]] = []
            for group, gen, rows, prevs in groups:
                base = _gkey("c", group, gen)
                ctr = _outcome_ctr()
                key = _gkey("o", group, gen) + ctr
                large = [i for i, o in enumerate(rows)
                         if o[5] is not None and _size(o[5]) >= LARGE_RESULT]
                if large:
                    rows = list(rows)
                    for i in large:
                        rows[i] = self._put_large(group, gen, ctr, rows[i], expire)
                sets.append((key, self._signed_plain(key, (SCHEMA_VERSION, rows))))
                sets += ((f"q{SEP}{prefix}{SEP}{ctr}", key)
                         for prefix in {o[0][:names.PREFIX_LEN] for o in rows})
                sets.append((base + "t1", now))
                deltas = Counter(map(itemgetter(1), rows))
                deltas.subtract(prevs)
                for state, delta in deltas.items():
                    name = _STATE_COUNTER.get(state)
                    if name and delta:
                        self._incr(base + name, delta, expire)
            self._set_many(sets, expire)

    def _put_large(self, group: str | None, gen: int, ctr: str, o: tuple,
                   expire: float | None) -> tuple:
        """A result of LARGE_RESULT bytes or more (or an ``async_iter``'s chunks)
        goes to its own entry, streamed to a file and signed without a copy; the
        outcome row keeps the entry's key (a str)."""
        blob = o[5]
        chunked = type(blob) is list  # async_iter: pickled chunks
        bkey = f"{_gkey('b', group, gen)}{o[0]}{SEP}{ctr}" + (_CHUNKED if chunked else "")
        self._put_stream(bkey, blob if chunked else [blob], expire)
        return (*o[:5], bkey, *o[6:])

    # ----------------------------------------------------------------- reuse index
    # k\0GROUP\0GEN\0KEY -> "TASK_ID", or "TASK_ID\0r" once a re-submission found it
    # done (then it is known to have succeeded: success is final). See nbgroups.reuse.
    def reuse_lookup(self, group: str | None, keys: list[str]) -> dict[str, tuple]:
        """The tasks recorded for call keys of ``group``: ``key -> (id, state, page, call)``.

        ``state`` is the task's latest stored state (``'success'``,
        ``'failure'``, ``'cancelled'``) or None if it never finished; ``page``
        and ``call`` (its :class:`SpecPage` and :class:`Call`) are None for a
        key already reused (known done) and for a task not written yet (its
        id was recorded, its page not). Unrecorded keys are left out. Reads
        each spec page and outcome page involved once, whatever the key count.
        """
        gen = self.gen(group)
        base = _gkey("k", group, gen)
        if len(keys) > 64:  # one range scan instead of many reads
            wanted = set(keys)
            rows = [(k[len(base):], v) for k, v in self._scan(base) if k[len(base):] in wanted]
        else:
            rows = [(k, v) for k in dict.fromkeys(keys) if (v := self._get(base + k)) is not None]
        found: dict[str, tuple] = {}
        by_prefix: dict[str, list[tuple[str, str]]] = {}
        for key, value in rows:
            if not isinstance(value, str):
                continue
            tid, _, mark = value.partition(SEP)
            if mark:
                found[key] = (tid, "success", None, None)
            elif names.looks_like_id(tid):
                by_prefix.setdefault(names.split_id(tid)[0], []).append((key, tid))
        outcome_pages: dict[str, dict[str, str]] = {}  # page key -> {task id: state}
        for prefix, items in by_prefix.items():
            page_key = self._get(_page_index(prefix))
            data = self._get(page_key) if isinstance(page_key, str) else None
            if data is None:
                for key, tid in items:
                    found[key] = (tid, None, None, None)
                continue
            page: SpecPage = self._load(page_key, data)
            calls = {c[0]: c for c in page.calls}
            refs = [okey for _, okey in self._scan(f"q{SEP}{prefix}{SEP}")]
            for okey in refs:
                if okey not in outcome_pages:
                    value = self._get(okey)
                    outcome_pages[okey] = {} if value is None else {
                        o[0]: o[1] for o in self._outcome_rows(okey, value)}
            for key, tid in items:
                call = calls.get(names.split_id(tid)[1])
                if call is None:
                    continue
                state = None
                for okey in refs:  # in counter order: the latest run wins
                    state = outcome_pages[okey].get(tid, state)
                found[key] = (tid, state, page, Call._make(call))
        return found

    def reuse_record(self, group: str | None, entries: dict[str, str],
                     ttl: int | None = None) -> None:
        """Record which task runs each call key of ``group`` (one transaction)."""
        if not entries:
            return
        expire = self._expire(ttl)
        base = _gkey("k", group, self.gen(group))
        with self._transaction():
            self._set_many([(base + key, tid) for key, tid in entries.items()], expire)

    def reuse_mark(self, group: str | None, keys: list[str], ttl: int | None = None) -> int:
        """Mark keys whose successful task a re-submission reused; returns how many were
        reused for the first time, which the group's ``reused`` counter adds: so
        ``GroupCounts.reused`` is how many of its tasks re-submissions found done."""
        expire = self._expire(ttl)
        gen = self.gen(group)
        base = _gkey("k", group, gen)
        fresh = 0
        with self._transaction():
            for key in keys:
                value = self._get(base + key)
                if isinstance(value, str) and SEP not in value:
                    self._set(base + key, value + SEP + "r", expire)
                    fresh += 1
            if fresh:
                self._incr(_gkey("c", group, gen) + "reused", fresh, expire)
        return fresh

    def task_history(self, task_id: str, cls: type = TaskRecord) -> TaskList | None:
        """Every stored run of a task, oldest first: one record per outcome.

        A task run again under its id (``retry_group``, ``resume_group``, a
        failed call re-submitted with ``reuse=True``) keeps its earlier
        outcomes here; :meth:`task` gives the latest. None if the id is unknown.
        """
        found = self._locate(task_id)
        if found is None:
            return None
        page, call, label = found
        runs = TaskList()
        for o in self._task_outcomes(task_id):
            runs.append(self._record(page, call, Outcome._make(o), label, cls))
        return runs

    # ----------------------------------------------------------------- reads
    def counts(self, group: str) -> GroupCounts:
        """Stored counts of ``group``: a few key reads, whatever the group's size.

        In an expiring layer (``ttl``) counters cannot expire with each entry, so
        the counts come from the entries still there (a scan of the group).
        """
        if self.ttl is not None:
            return self._live_counts(group)
        base = _gkey("c", group, self.gen(group))
        cut = len(base)
        values = {k[cut:]: v for k, v in self._scan(base)}  # one range read: every counter
        n, ok, fail, cancel, reused = (values.get(k) or 0 for k in _COUNTERS)
        return GroupCounts(
            group=group, submitted=n, done=ok, failed=fail, cancelled=cancel, reused=reused,
            first_submitted=values.get("t0"), last_finished=values.get("t1"),
        )

    def _live_counts(self, group: str) -> GroupCounts:
        found = self._group_pages(group)
        if found is None:
            return GroupCounts(group=group)
        pages, latest = found
        states: dict[str, int] = {}
        stopped = []
        for p in pages:
            for c in p.calls:
                o = latest.get(f"{p.prefix}{c[0]:08x}")
                if o is not None:
                    states[o[1]] = states.get(o[1], 0) + 1
                    stopped.append(o[4] or 0.0)
        reused = self._get(_gkey("c", group, self.gen(group)) + "reused") or 0
        return GroupCounts(
            group=group, submitted=sum(len(p.calls) for p in pages),
            done=states.get("success", 0), failed=states.get("failure", 0),
            cancelled=states.get("cancelled", 0), reused=reused,
            first_submitted=min(p.created for p in pages),
            last_finished=max(stopped) if stopped else None,
        )

    def known(self, group: str) -> bool:
        """Whether ``group`` has tasks under its current label."""
        return bool(self._get(_gkey("c", group, self.gen(group)) + "n"))

    def groups(self) -> list[str]:
        """Names of the groups that have tasks under their current label."""
        out = []
        for key, gen in self._scan(f"g{SEP}"):
            group = key[2:]
            if self._get(_gkey("c", group, gen) + "n"):
                out.append(group)
        return out

    def _pages(self, group: str | None, gen: int) -> list[SpecPage]:
        return [self._load(k, v) for k, v in self._scan(_gkey("s", group, gen))]

    def _latest(self, outcome_pages: Iterable[tuple[str, Any]]) -> dict[str, tuple]:
        """Task id -> its latest outcome tuple (layout of :class:`Outcome`)."""
        latest: dict[str, tuple] = {}
        for key, data in outcome_pages:  # in counter order: later runs win
            rows = self._outcome_rows(key, data)
            latest.update(zip(map(_ID, rows), rows, strict=True))
        return latest

    def _group_pages(self, group: str) -> tuple[list[SpecPage], dict[str, tuple]] | None:
        """The group's spec pages (submission order) and latest outcome per task id."""
        gen = self.gen(group)
        pages = self._pages(group, gen)
        if not pages:
            return None
        return pages, self._latest(self._scan(_gkey("o", group, gen)))

    def group_entries(self, group: str) -> list[tuple[SpecPage, Call, Outcome | None]] | None:
        """Every task of ``group`` in submission order with its latest outcome."""
        found = self._group_pages(group)
        if found is None:
            return None
        pages, latest = found
        out = []
        for p in pages:
            for c in p.calls:
                o = latest.get(names.task_id(p.prefix, c[0]))
                out.append((p, Call._make(c), None if o is None else Outcome._make(o)))
        return out

    def group_records(self, group: str, cls: type = TaskRecord) -> TaskList | None:
        """The group's task records in submission order; None if unknown."""
        entries = self.group_entries(group)
        if entries is None:
            return None
        return TaskList(self._record(p, c, o, group, cls) for p, c, o in entries)

    def group_results(self, group: str, failures: bool) -> list | None:
        """Results in submission order, without building task records (the hot path)."""
        found = self._group_pages(group)
        if found is None:
            return None
        pages, latest = found
        out = []
        append = out.append
        get = latest.get
        for p in pages:
            prefix = p.prefix
            for o in map(get, [f"{prefix}{c[0]:08x}" for c in p.calls]):
                if o is None:
                    continue
                state = o[1]
                if state == "success":
                    blob = o[5]
                    append(loads(blob) if type(blob) is bytes
                           else _result_value(Outcome._make(o), self._blob))
                elif failures and state == "failure":
                    append(_failure_value(Outcome._make(o), self._blob))
        return out

    def _locate(self, task_id: str) -> tuple[SpecPage, Call, str | None] | None:
        """A task's spec page, its call and its group label (None if deleted)."""
        if not names.looks_like_id(task_id):
            return None
        prefix, index = names.split_id(task_id)
        page_key = self._get(_page_index(prefix))
        data = self._get(page_key) if isinstance(page_key, str) else None
        if data is None:
            return None
        page: SpecPage = self._load(page_key, data)
        call = next((Call._make(c) for c in page.calls if c[0] == index), None)
        if call is None:
            return None
        label = page.group if page.group and self.gen(page.group) == page.gen else None
        return page, call, label

    def _task_outcomes(self, task_id: str) -> list[tuple]:
        """Every stored outcome of a task, oldest first (through its page's outcome index)."""
        runs = []
        for _, okey in self._scan(f"q{SEP}{task_id[:24]}{SEP}"):
            value = self._get(okey)
            if value is not None:
                runs += [o for o in self._outcome_rows(okey, value) if o[0] == task_id]
        return runs

    def task(self, task_id: str, cls: type = TaskRecord) -> TaskRecord | None:
        """The record of one task, by id: its page and its latest outcome."""
        found = self._locate(task_id)
        if found is None:
            return None
        page, call, label = found
        runs = self._task_outcomes(task_id)
        return self._record(page, call, Outcome._make(runs[-1]) if runs else None, label, cls)

    def task_by_name(self, name: str, cls: type = TaskRecord) -> TaskRecord | None:
        """The newest task called ``name`` (a derived name or a ``task_name=``)."""
        candidates: list[tuple[float, str]] = [
            (float(key.rsplit(SEP, 1)[1]) / 1e9, tid)
            for key, tid in self._scan(f"N{SEP}{name}{SEP}")
        ]
        parsed = names.parse_name(name)
        if parsed:
            family, w2, w3 = parsed
            for _, page_key in self._scan(f"n{SEP}{family}{SEP}"):
                data = self._get(page_key)
                if data is None:
                    continue
                page: SpecPage = self._load(page_key, data)
                index = names.index_in_page(page.prefix, w2, w3)
                if any(c[0] == index and not c[4] for c in page.calls):
                    candidates.append((page.created, names.task_id(page.prefix, index)))
        for _, tid in sorted(candidates, reverse=True):  # newest first, still stored
            task = self.task(tid, cls)
            if task is not None:
                return task
        return None

    def _record(self, page: SpecPage, call: Call, o: Outcome | None, label, cls) -> TaskRecord:
        tid = names.task_id(page.prefix, call.index)
        return build_record(
            tid, call.task_name or names.name_of(tid), page.funcs[call.func][0],
            None if call.iterable else call.args, call.kwargs, o, label, page.created, cls,
            items=call.args if call.iterable else None, blobs=self._blob,
        )

    # ----------------------------------------------------------------- deletes
    def delete_group(self, group: str, tasks: bool) -> int:
        """Remove the label (tasks stay, with ``group=None``), or the tasks too.

        Returns how many tasks were affected.
        """
        gen = self.gen(group)
        with self._transaction():
            count = self._get(_gkey("c", group, gen) + "n") or 0
            if tasks:
                keys = []
                for key, data in self._scan(_gkey("s", group, gen)):
                    page: SpecPage = self._load(key, data)
                    keys += [key, _page_index(page.prefix)]
                    keys += self._scan_keys(f"q{SEP}{page.prefix}{SEP}")
                for kind in "ocbk":  # outcomes, counters, large results, reuse keys
                    keys += self._scan_keys(_gkey(kind, group, gen))
                self._delete(keys)
            self._set(f"g{SEP}{group}", gen + 1)
        return int(count)


def build_record(
    tid: str, name: str, func: str, args, kwargs, o: Outcome | None, label: str | None,
    submitted: float | None, cls: type = TaskRecord, items=None, blobs=None,
) -> TaskRecord:
    """A task record from what was submitted and its latest outcome (or None).

    ``blobs(key)`` loads a large result kept in its own store entry.
    """
    state = State(o.state) if o else State.QUEUED
    if o is None or state is State.CANCELLED:
        result = None
    elif state is State.SUCCESS:
        result = _result_value(o, blobs)
    else:
        result = _failure_value(o, blobs)
    if items is not None:  # async_iter: the items are the arguments
        args = (items,)
    return cls(
        id=tid, name=name, func=func, args=args, kwargs=kwargs, result=result, group=label,
        started=o.started if o else None, stopped=o.stopped if o else None,
        success=None if o is None or state is State.CANCELLED else state is State.SUCCESS,
        attempt_count=o.attempt if o else 0,
        traceback=o.traceback if o and state is State.FAILURE else None,
        state=state, submitted=submitted,
    )


def _result_value(o: Outcome, blobs: Any = None) -> Any:
    if o.result is None:
        return None
    if isinstance(o.result, list):
        return join_chunks(o.result)
    if isinstance(o.result, str):  # a large result in its own entry
        return blobs(o.result)
    return loads(o.result)


def _failure_value(o: Outcome, blobs: Any = None) -> Any:
    if isinstance(o.result, list):  # async_iter: the items' results and exceptions
        return join_chunks(o.result)
    if isinstance(o.result, str) and o.result.endswith(_CHUNKED):  # the same, in its own entry
        return blobs(o.result)
    return loads_exception(o.error) if o.error is not None else None


class _SignedReader:
    """A file-like view of ``mac + payload`` that never concatenates them."""

    def __init__(self, mac: bytes, *parts: bytes) -> None:
        self._parts = [memoryview(mac), *map(memoryview, parts)]

    def read(self, size: int = -1) -> bytes | memoryview:
        while self._parts and not len(self._parts[0]):
            self._parts.pop(0)
        if not self._parts:
            return b""
        head = self._parts[0]
        n = len(head) if size < 0 else min(size, len(head))
        self._parts[0] = head[n:]
        return head[:n]


class MemoryStore(Store):
    """The store contract over a dict: fast tests, nothing on disk."""

    def __init__(self, signer: Signer | None = None, **kw: Any) -> None:
        super().__init__(signer or Signer(os.urandom(32)), **kw)
        self._data: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.RLock()

    def _live(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        value, deadline = item
        if deadline is not None and deadline <= time.time():
            del self._data[key]
            return None
        return value

    def _get(self, key):
        with self._lock:
            return self._live(key)

    def _set(self, key, value, expire=None):
        with self._lock:
            self._data[key] = (value, None if expire is None else time.time() + expire)

    def _add(self, key, value, expire=None):
        with self._lock:
            if self._live(key) is None:
                self._set(key, value, expire)

    def _incr(self, key, delta, expire=None):
        with self._lock:
            value = (self._live(key) or 0) + delta
            self._set(key, value, expire)
            return value

    def _scan(self, prefix):
        with self._lock:
            keys = sorted(k for k in self._data if k.startswith(prefix))
            return [(k, v) for k in keys if (v := self._live(k)) is not None]

    def _delete(self, keys):
        with self._lock:
            for k in keys:
                self._data.pop(k, None)

    def _transaction(self):
        return self._lock


# Writes in SQL of our own need upsert (SQLite 3.24) and RETURNING (3.35); Python's
# sqlite3 may link an older library (Python 3.10 allows 3.7.15): then diskcache's API.
_UPSERT_OK = sqlite3.sqlite_version_info >= (3, 24)
_RETURNING_OK = sqlite3.sqlite_version_info >= (3, 35)
_INSERT = (  # a row as diskcache writes a str/int/float/bytes value kept in the row
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag,"
    " size, mode, filename, value) VALUES (?, 1, ?, ?, ?, 0, NULL, 0, 1, NULL, ?)"
    " ON CONFLICT(key, raw) DO UPDATE SET store_time = excluded.store_time,"
    " expire_time = excluded.expire_time, access_time = excluded.access_time,"
)
_UPSERT = _INSERT + (
    " access_count = 0, tag = NULL, size = 0, mode = 1, filename = NULL, value = excluded.value"
)
_INCR = _INSERT + (
    " value = CASE WHEN Cache.expire_time IS NULL OR Cache.expire_time > excluded.store_time"
    " THEN Cache.value + excluded.value ELSE excluded.value END"
    " WHERE Cache.mode = 1 AND typeof(Cache.value) = 'integer' RETURNING value"
)


class DiskStore(Store):
    """The store contract on a diskcache directory (created 0700).

    Opened with ``eviction_policy='none'`` (diskcache's default culls rows past
    1 GiB: for results, silent data loss) and without a size limit. Writes go
    through diskcache's API inside ``transact()``; reads use SQL on its table
    so that one range scan returns a whole group, and rows diskcache would
    unpickle are refused.
    """

    def __init__(self, directory: str | os.PathLike, signer: Signer | None = None, **kw: Any):
        import diskcache

        super().__init__(signer or Signer(load_secret()), **kw)
        self.directory = Path(directory).expanduser().resolve()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.directory / f".nbgroups-probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            reason = "it is a file, not a directory" if self.directory.is_file() else \
                (exc.strerror or str(exc))
            raise StoreError(
                f"cannot use store directory {str(self.directory)!r}: {reason}. "
                "Choose a writable directory with configure(store=...) or NBGROUPS_STORE."
            ) from None
        try:
            self._cache = diskcache.Cache(
                str(self.directory), eviction_policy="none", size_limit=2**62,
                cull_limit=0, timeout=60,
                # Pages up to a large result's size stay in SQLite's row: diskcache's
                # default (32 KiB) gave every page of a few hundred calls a file of
                # its own, ~0.25 ms a write (more than the rest of the write).
                disk_min_file_size=LARGE_RESULT,
            )
            self._sql("SELECT COUNT(*) FROM Cache").fetchall()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(
                f"the store database in {str(self.directory)!r} cannot be opened ({exc}); "
                "it may be corrupt. Move it aside or choose another store directory."
            ) from None
        self._modes = diskcache.core
        self._fetch = self._cache._disk.fetch
        self._db_path = str(self.directory / "cache.db")
        st = os.stat(self._db_path)
        self._db_identity = (st.st_dev, st.st_ino)

    def _sql(self, query: str, params: tuple = ()) -> sqlite3.Cursor:
        return self._cache._sql(query, params)

    def _row_value(self, key: str, mode: int, filename: str | None, value: Any) -> Any:
        if mode not in (self._modes.MODE_RAW, self._modes.MODE_BINARY) or (
                mode == self._modes.MODE_BINARY and not isinstance(filename, str)):
            raise SignatureError(
                f"store entry {key.replace(SEP, '/')!r} has a storage mode nbgroups never "
                "writes (a pickle for diskcache to load); it was refused, not loaded"
            )
        try:
            return self._fetch(mode, filename, value, False)
        except OSError as exc:
            raise StoreError(
                f"store entry {key.replace(SEP, '/')!r} cannot be read from "
                f"{str(self.directory)!r}: {exc.strerror or exc} (a value file is missing "
                "or unreadable: the store was modified outside nbgroups)"
            ) from None

    def _get(self, key):
        rows = self._sql(
            "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1"
            " AND (expire_time IS NULL OR expire_time > ?)", (key, time.time()),
        ).fetchall()
        if not rows:
            return None
        return self._row_value(key, *rows[0])

    def _set(self, key, value, expire=None):
        self._cache.set(key, value, expire=expire, retry=True)

    def _set_many(self, items, expire=None):
        # One statement for all of them: diskcache's set is a SELECT and an
        # UPDATE or INSERT per key (~25 us each, ~5 of them per page write).
        # Only values diskcache keeps in the row; these keys never hold a file.
        if not _UPSERT_OK:
            return super()._set_many(items, expire)
        now = time.time()
        deadline = None if expire is None else now + expire
        rows, rest = [], []
        for key, value in items:
            if type(value) in (int, float) or (type(value) in (str, bytes)
                                               and len(value) < LARGE_RESULT):
                rows.append((key, now, deadline, now, value))
            else:
                rest.append((key, value))
        self._cache._con.executemany(_UPSERT, rows)
        for key, value in rest:
            self._set(key, value, expire)

    def _add(self, key, value, expire=None):
        self._cache.add(key, value, expire=expire, retry=True)

    def _incr(self, key, delta, expire=None):
        # One statement (diskcache's incr: a SELECT then an UPDATE or INSERT). An
        # expired counter starts again from 0; a row that is not an int is refused.
        if not _RETURNING_OK:
            return self._incr_diskcache(key, delta, expire)
        now = time.time()
        rows = self._sql(_INCR, (key, now, None if expire is None else now + expire, now,
                                 delta)).fetchall()
        if not rows:
            raise SignatureError(
                f"store counter {key.replace(SEP, '/')!r} does not hold a number: it was "
                "modified outside nbgroups; refused, not loaded"
            )
        return rows[0][0]

    def _incr_diskcache(self, key, delta, expire=None):
        """:meth:`_incr` through diskcache's API (SQLite before 3.35 has no RETURNING)."""
        if expire is None:
            try:
                return self._cache.incr(key, delta, retry=True)
            except TypeError:  # diskcache adds to a value that is not a number
                raise SignatureError(
                    f"store counter {key.replace(SEP, '/')!r} does not hold a number: it was "
                    "modified outside nbgroups; refused, not loaded"
                ) from None
        with self._transaction():
            value = (self._get(key) or 0) + delta
            self._cache.set(key, value, expire=expire, retry=True)
            return value

    def _scan(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._sql(
            "SELECT key, mode, filename, value FROM Cache WHERE key >= ? AND key < ? AND raw = 1"
            " AND (expire_time IS NULL OR expire_time > ?) ORDER BY key",
            (prefix, end, time.time()),
        ).fetchall()
        return [(k, self._row_value(k, m, f, v)) for k, m, f, v in rows if isinstance(k, str)]

    def _delete(self, keys):
        for key in keys:
            self._cache.delete(key, retry=True)

    def _scan_keys(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? AND raw = 1",
                         (prefix, end)).fetchall()
        return [k for (k,) in rows if isinstance(k, str)]

    def _put_stream(self, key, parts, expire):
        # diskcache copies a file-like object to its file chunk by chunk
        # (read=True): MAC then the parts, without building MAC + payload.
        self._cache.set(key, _SignedReader(self._signer.mac_parts(parts, key), *parts),
                        expire=expire, read=True, retry=True)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # diskcache's transact(retry=True), in one layer instead of three (the
        # two writes of a task's round trip are each one transaction): BEGIN
        # IMMEDIATE, retried while another process holds the lock; diskcache's
        # calls inside see the transaction as theirs (its _txn_id) and join it.
        cache = self._cache
        tid = threading.get_ident()
        if cache._txn_id == tid:  # nested: the outer transaction commits
            yield
            return
        self._check_same_database()
        sql = cache._sql
        while True:
            try:
                sql("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:  # busy beyond the 60 s timeout
                continue
        cache._txn_id = tid
        try:
            yield
        except BaseException:
            cache._txn_id = None
            sql("ROLLBACK")
            raise
        cache._txn_id = None
        sql("COMMIT")

    def _check_same_database(self) -> None:
        """SQLite goes on writing to a database file that was deleted: results would
        vanish. Every write transaction first checks the file is still the one opened."""
        try:
            st = os.stat(self._db_path)
            same = (st.st_dev, st.st_ino) == self._db_identity
        except OSError:
            same = False
        if not same:
            raise StoreError(
                f"the store database {self._db_path!r} was removed or replaced while in use; "
                "nothing more can be stored there. Configure a store again "
                "(nbgroups.configure(store=...)): finished results not yet stored are kept "
                "in memory until then.")

    def close(self) -> None:
        self._cache.close()
