"""The store contract as a template: the layout's logic, written once, over
seven primitives a backend implements (see the package docstring)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

from .. import names
from ..errors import SignatureError, StoreError
from ..outcome import view
from ..records import (
    SCHEMA_VERSION,
    Call,
    GroupCounts,
    Outcome,
    SpecPage,
    TaskList,
    TaskRecord,
)
from ..serialize import (
    Signer,
    dumps,
    dumps_plain,
    join_stream,
    loads,
)
from .layout import (
    CHUNKED,
    COUNTERS,
    LARGE_RESULT,
    SEP,
    STATE_COUNTER,
    build_record,
    failure_value,
    gkey,
    outcome_ctr,
    page_index,
    result_size,
    result_value,
)

_ID = itemgetter(0)  # an outcome row's task id


class Store:
    """Durable task records and counters (template; see the module docstring).

    ``ttl`` makes every entry expire (the ``cached`` layer); ``keep_args=False``
    drops call arguments from the records. ``clock`` (seconds since the epoch,
    default :func:`time.time`) decides expiry and the times stored: a test
    moves it forward instead of sleeping past a TTL.
    """

    def __init__(self, signer: Signer, *, ttl: int | None = None, keep_args: bool = True,
                 clock: Callable[[], float] = time.time):
        self._signer = signer
        self.ttl = ttl
        self.keep_args = keep_args
        self.clock = clock
        self._seen: set[tuple[str | None, int]] = set()

    # ----------------------------------------------------------------- primitives
    # What a backend implements. Keys are str; values only str, int, float and
    # bytes (every pickle is the template's, signed). ``expire`` is seconds from
    # now by :attr:`clock`; an expired entry reads as absent.
    def _get(self, key: str) -> Any:
        """The value stored under ``key``, or None if absent or expired."""
        raise NotImplementedError(f"{type(self).__name__} must implement _get")

    def _set(self, key: str, value: Any, expire: float | None = None) -> None:
        """Store ``value`` under ``key`` (replacing it), expiring after ``expire`` s."""
        raise NotImplementedError(f"{type(self).__name__} must implement _set")

    def _add(self, key: str, value: Any, expire: float | None = None) -> None:
        """Store ``value`` under ``key`` only if no live entry is there."""
        raise NotImplementedError(f"{type(self).__name__} must implement _add")

    def _incr(self, key: str, delta: int, expire: float | None = None) -> int:
        """Add ``delta`` to the int under ``key`` (absent or expired: 0) atomically;
        returns the new value. A value that is not an int is refused
        (:class:`~nbgroups.errors.SignatureError`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _incr")

    def _scan(self, prefix: str) -> list[tuple[str, Any]]:
        """Every live ``(key, value)`` whose key starts with ``prefix``, in key order."""
        raise NotImplementedError(f"{type(self).__name__} must implement _scan")

    def _delete(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` (absent ones are ignored)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _delete")

    def _transaction(self) -> contextlib.AbstractContextManager:
        """A context manager: the primitives inside commit together or not at all,
        and no other writer (thread or process) interleaves. Must nest (an inner
        transaction joins the outer one)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _transaction")

    # Derived from the primitives; a backend may do them faster.
    def _scan_keys(self, prefix: str) -> list[str]:
        """The keys :meth:`_scan` would return (expired ones may be included)."""
        return [k for k, _ in self._scan(prefix)]

    def _set_many(self, items: list[tuple[str, Any]], expire: float | None = None) -> None:
        """Set several keys (inside a transaction); a store may do it in one statement."""
        for key, value in items:
            self._set(key, value, expire)

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
        return join_stream(payload) if key.endswith(CHUNKED) else loads(payload)

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
                base = gkey("c", group, gen)
                seq = self._incr(base + "n", len(d["calls"]), expire) - len(d["calls"])
                if (group, gen) not in self._seen:  # once per label generation
                    if group:
                        self._add(f"g{SEP}{group}", gen, expire)
                    self._add(base + "t0", d["created"], expire)
                    if expire is None:
                        self._seen.add((group, gen))
                calls: Iterable[Any] = d["calls"] if self.keep_args else tuple(
                    (c[0], c[1], None, None, *c[4:]) for c in d["calls"]
                )
                page = SpecPage(
                    prefix=d["prefix"], group=group, gen=gen, seq=seq, created=d["created"],
                    funcs=d["funcs"], calls=tuple(calls), options=d["options"],
                )
                key = gkey("s", group, gen) + f"{seq:012d}"
                sets += ((key, self._signed(key, page)), (page_index(page.prefix), key))
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
        now = self.clock()
        with self._transaction():
            sets: list[tuple[str, Any]] = []
            for group, gen, rows, prevs in groups:
                base = gkey("c", group, gen)
                ctr = outcome_ctr()
                key = gkey("o", group, gen) + ctr
                large = [i for i, o in enumerate(rows)
                         if o[5] is not None and result_size(o[5]) >= LARGE_RESULT]
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
                    name = STATE_COUNTER.get(state)
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
        bkey = f"{gkey('b', group, gen)}{o[0]}{SEP}{ctr}" + (CHUNKED if chunked else "")
        self._put_stream(bkey, blob if chunked else [blob], expire)
        return (*o[:5], bkey, *o[6:])

    def submitted(self, group: str | None, gen: int | None = None) -> int:
        """How many tasks ``group`` (label generation ``gen``, default the current
        one) has had: its submission counter, one read."""
        value = self._get(gkey("c", group, self.gen(group) if gen is None else gen) + "n")
        return value if type(value) is int else 0

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
            runs.append(self._record(page, call, view(o), label, cls))
        return runs

    # ----------------------------------------------------------------- reads
    def counts(self, group: str) -> GroupCounts:
        """Stored counts of ``group``: a few key reads, whatever the group's size.

        In an expiring layer (``ttl``) counters cannot expire with each entry, so
        the counts come from the entries still there (a scan of the group).
        """
        if self.ttl is not None:
            return self._live_counts(group)
        base = gkey("c", group, self.gen(group))
        cut = len(base)
        values = {k[cut:]: v for k, v in self._scan(base)}  # one range read: every counter
        n, ok, fail, cancel, reused = (values.get(k) or 0 for k in COUNTERS)
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
        reused = self._get(gkey("c", group, self.gen(group)) + "reused") or 0
        return GroupCounts(
            group=group, submitted=sum(len(p.calls) for p in pages),
            done=states.get("success", 0), failed=states.get("failure", 0),
            cancelled=states.get("cancelled", 0), reused=reused,
            first_submitted=min(p.created for p in pages),
            last_finished=max(stopped) if stopped else None,
        )

    def known(self, group: str) -> bool:
        """Whether ``group`` has tasks under its current label."""
        return bool(self._get(gkey("c", group, self.gen(group)) + "n"))

    def groups(self) -> list[str]:
        """Names of the groups that have tasks under their current label."""
        out = []
        for key, gen in self._scan(f"g{SEP}"):
            group = key[2:]
            if self._get(gkey("c", group, gen) + "n"):
                out.append(group)
        return out

    def _pages(self, group: str | None, gen: int) -> list[SpecPage]:
        return [self._load(k, v) for k, v in self._scan(gkey("s", group, gen))]

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
        return pages, self._latest(self._scan(gkey("o", group, gen)))

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
                out.append((p, Call._make(c), None if o is None else view(o)))
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
        out: list[Any] = []
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
                           else result_value(view(o), self._blob))
                elif failures and state == "failure":
                    append(failure_value(view(o), self._blob))
        return out

    def _locate(self, task_id: str) -> tuple[SpecPage, Call, str | None] | None:
        """A task's spec page, its call and its group label (None if deleted)."""
        if not names.looks_like_id(task_id):
            return None
        prefix, index = names.split_id(task_id)
        page_key = self._get(page_index(prefix))
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

    def call_of(self, task_id: str) -> tuple | None:
        """What a task called: ``(function's display name, the pickled callable or
        None for a dotted path, args, kwargs, iterable)``; None if the id is unknown."""
        found = self._locate(task_id)
        if found is None:
            return None
        page, call, _ = found
        name, blob = page.funcs[call.func]
        return name, blob, call.args, call.kwargs, call.iterable

    def task(self, task_id: str, cls: type = TaskRecord) -> TaskRecord | None:
        """The record of one task, by id: its page and its latest outcome."""
        found = self._locate(task_id)
        if found is None:
            return None
        page, call, label = found
        runs = self._task_outcomes(task_id)
        return self._record(page, call, view(runs[-1]) if runs else None, label, cls)

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
            count = self._get(gkey("c", group, gen) + "n") or 0
            if tasks:
                keys = []
                for key, data in self._scan(gkey("s", group, gen)):
                    page: SpecPage = self._load(key, data)
                    keys += [key, page_index(page.prefix)]
                    keys += self._scan_keys(f"q{SEP}{page.prefix}{SEP}")
                for kind in "ocbk":  # outcomes, counters, large results, reuse keys
                    keys += self._scan_keys(gkey(kind, group, gen))
                self._delete(keys)
            self._set(f"g{SEP}{group}", gen + 1)
        return int(count)
