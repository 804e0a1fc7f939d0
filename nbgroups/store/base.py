"""The store contract as a template: the layout's logic, written once, over
seven primitives a backend implements (see the package docstring)."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

from .. import names
from .. import values as values_module
from ..errors import ConfigurationError, SignatureError, StoreError
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
    MAC_SIZE,
    Signer,
    dumps,
    dumps_call_data,
    dumps_plain,
    frame_head,
    is_framed,
    join_stream,
    loads,
    loads_result,
    plain,
    unloadable_result,
)
from ..values import ValueFiles
from .layout import (
    CHUNKED,
    COUNTERS,
    FRAMED,
    LARGE_RESULT,
    PENDING_GRACE,
    SEP,
    STATE_COUNTER,
    build_record,
    failure_value,
    gkey,
    outcome_ctr,
    page_index,
    result_size,
    result_value,
    value_ref,
)

_ID = itemgetter(0)  # an outcome row's task id


def _encodable(text: str) -> bool:
    """Whether ``text`` can be part of a key (UTF-8: no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Store:
    """Durable task records and counters (template; see the module docstring).

    ``ttl`` makes every entry expire (the ``cached`` layer); ``keep_args=False``
    drops call arguments from the records. ``clock`` (seconds since the epoch,
    default :func:`time.time`) decides expiry and the times stored: a test
    moves it forward instead of sleeping past a TTL.
    """

    #: Where large arguments are stored once by digest (:mod:`nbgroups.values`);
    #: None: this store keeps none (the runner then copies them with each call).
    values: ValueFiles | None = None

    def __init__(self, signer: Signer, *, ttl: int | None = None, keep_args: bool = True,
                 clock: Callable[[], float] = time.time):
        self._signer = signer
        self.ttl = ttl
        self.keep_args = keep_args
        self.clock = clock
        self._seen: set[tuple[str | None, int]] = set()
        # Expiring layer: spec page prefix -> [indices of calls without an outcome,
        # keys written for the page], for the pages this store wrote (see _hold).
        self._open: dict[str, list] = {}
        self._open_lock = threading.Lock()

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

    def _touch(self, keys: Iterable[str], expire: float) -> None:
        """Make the live ``keys`` among ``keys`` expire ``expire`` s from now (by
        :attr:`clock`), inside a transaction; a backend may do it in one statement."""
        for key in keys:
            value = self._get(key)
            if value is not None:
                self._set(key, value, expire)

    def close(self) -> None:
        """Release the store's resources."""

    def lost(self) -> bool:
        """Whether the store's storage went away under it (its database deleted)."""
        return False

    # ----------------------------------------------------------------- helpers
    def _signed(self, key: str, obj: Any) -> bytes:
        """``obj`` pickled (cloudpickle: arguments may be notebook objects), signed for ``key``."""
        return self._signer.sign(dumps(obj), key)

    def _signed_plain(self, key: str, obj: Any) -> bytes:
        """Plain data (tuples of str/bytes/numbers) pickled by the C pickler and signed."""
        return self._signer.sign(dumps_plain(obj), key)

    def _put_stream(self, key: str, parts: list[bytes], expire: float | None,
                    signed: list[bytes | memoryview] | None = None) -> None:
        """Store the signed concatenation of ``parts`` (the MAC covers ``signed``,
        by default all of them); the disk store streams it to its file without
        ever building the concatenation."""
        mac = self._signer.mac_parts(parts if signed is None else signed, key)
        self._set(key, mac + b"".join(parts), expire)

    def _mapped(self, key: str) -> Any:
        """The value under ``key`` without reading it, where the backend can (the
        disk store maps its file read-only); by default, read."""
        return self._get(key)

    def _blob(self, key: str, mapped: bool = False) -> Any:
        """The value of a large result stored by :meth:`_put_stream`; ``mapped``:
        a framed result's raw buffers memory-mapped, read-only, not read."""
        data = self._mapped(key) if mapped and key.endswith(FRAMED) else self._get(key)
        where = f"entry {key.replace(SEP, '/')!r}"
        if data is None:
            raise StoreError(f"the result entry {key.replace(SEP, '/')!r} is missing from the "
                             "store (deleted outside nbgroups, or expired)")
        if key.endswith(FRAMED):
            # Only the head (the pickle and the buffers' table) is signed and
            # unpickled: the raw buffers are data handed to their arrays.
            view = memoryview(data)
            try:
                head_len = frame_head(view[MAC_SIZE:])[0]
            except ValueError:
                head_len = 0  # fails verification below, with the usual message
            self._signer.verify(view[:MAC_SIZE + head_len], key, where)
            return loads_result(view[MAC_SIZE:], writable=not mapped)
        payload = self._signer.verify(data, key, where)
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
        # An expiring layer's TTL counts from when a result is written: until
        # then a page and its keys are held (see _hold), so a task that runs
        # longer than its TTL is still readable when it finishes.
        expire = self._hold(self._expire(ttl))
        pages = []
        # Remembered only once committed: a write that failed (disk full) and is
        # retried must write the group's label again, or the group would be
        # missing from groups() for good.
        labelled: set[tuple[str | None, int]] = set()
        with self._transaction():
            sets: list[tuple[str, Any]] = []
            written: dict[str, SpecPage] = {}
            for d in drafts:
                again = written.get(d["prefix"]) or self._page_of(d["prefix"])
                if again is not None:
                    # Written already (one page handed over twice: seen once in
                    # ~1,000 interrupted submission loops): counted and listed once.
                    pages.append(again)
                    continue
                group = d["group"]
                gen = self.gen(group)
                base = gkey("c", group, gen)
                seq = self._incr(base + "n", len(d["calls"]), expire) - len(d["calls"])
                if (group, gen) not in self._seen and (group, gen) not in labelled:
                    if group:  # once per label generation
                        self._add(f"g{SEP}{group}", gen, expire)
                    self._add(base + "t0", d["created"], expire)
                    labelled.add((group, gen))
                calls: Iterable[Any] = d["calls"] if self.keep_args else tuple(
                    (c[0], c[1], None, None, *c[4:]) for c in d["calls"]
                )
                page = SpecPage(
                    prefix=d["prefix"], group=group, gen=gen, seq=seq, created=d["created"],
                    funcs=d["funcs"], calls=tuple(calls), options=d["options"],
                )
                key = gkey("s", group, gen) + f"{seq:012d}"
                data = dumps_call_data(page, plain((page.funcs, page.calls, page.options),
                                                   64 + 8 * len(page.calls)))
                sets += ((key, self._signer.sign(data, key)), (page_index(page.prefix), key))
                if values_module.made and self.values is not None:
                    # which stored values the page's calls and callables take (value_refs)
                    sets += ((value_ref(digest, page.prefix), 1)
                             for digest in _digests_of_page(page))
                for c in calls:
                    if c[4]:  # a task_name= override gets its own name index entry
                        tid = names.task_id(page.prefix, c[0])
                        sets.append((f"N{SEP}{c[4]}{SEP}{time.time_ns():020d}", tid))
                pages.append(page)
                written[page.prefix] = page
            self._set_many(sets, expire)
        if expire is None:
            self._seen |= labelled
        else:
            with self._open_lock:
                for page in pages:
                    self._open[page.prefix] = [{c[0] for c in page.calls}, []]
        return pages

    def _page_of(self, prefix: str) -> SpecPage | None:
        """The stored spec page of ``prefix``, or None."""
        page_key = self._get(page_index(prefix))
        data = self._get(page_key) if isinstance(page_key, str) else None
        return None if data is None else self._load(page_key, data)

    @staticmethod
    def _hold(expire: float | None) -> float | None:
        """How long an expiring layer keeps what waits for a result: the TTL
        plus PENDING_GRACE (so a kernel killed mid-run leaves nothing forever)."""
        return None if expire is None else expire + PENDING_GRACE

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
        if expire is not None:
            return self._write_expiring_outcomes(groups, expire)
        now = self.clock()
        with self._transaction():
            sets: list[tuple[str, Any]] = []
            for group, gen, rows, prevs in groups:
                base = gkey("c", group, gen)
                sets += self._outcome_entries(group, gen, rows, expire)[0]
                sets.append((base + "t1", now))
                self._count_outcomes(base, rows, prevs, expire)
            self._set_many(sets, expire)

    def _outcome_entries(self, group: str | None, gen: int, rows: list[tuple],
                         expire: float | None) -> tuple[list[tuple[str, Any]], list[str]]:
        """The entries recording ``rows``: one signed outcome page and its index
        entries, to be set; and the keys of large results, written here to
        entries of their own."""
        ctr = outcome_ctr()
        key = gkey("o", group, gen) + ctr
        large = [i for i, o in enumerate(rows)
                 if o[5] is not None and result_size(o[5]) >= LARGE_RESULT]
        if large:
            rows = list(rows)
            for i in large:
                rows[i] = self._put_large(group, gen, ctr, rows[i], expire)
        sets: list[tuple[str, Any]] = [(key, self._signed_plain(key, (SCHEMA_VERSION, rows)))]
        sets += ((f"q{SEP}{prefix}{SEP}{ctr}", key)
                 for prefix in {o[0][:names.PREFIX_LEN] for o in rows})
        return sets, [rows[i][5] for i in large]

    def _count_outcomes(self, base: str, rows: list[tuple], prevs: list[str],
                        expire: float | None) -> None:
        deltas = Counter(map(itemgetter(1), rows))
        deltas.subtract(prevs)
        for state, delta in deltas.items():
            name = STATE_COUNTER.get(state)
            if name and delta:
                self._incr(base + name, delta, expire)

    def _write_expiring_outcomes(self, groups: list[tuple], expire: float) -> None:
        """:meth:`write_outcomes` in an expiring layer: the TTL counts from the write.

        Outcomes are written per spec page. While a page has calls without an
        outcome, what was written for it is held (:meth:`_hold`): a finished
        task must not expire, nor look queued again, while its page waits for
        a slower one. When its last call ends, the page, its index entries and
        every outcome of it are set to expire ``expire`` seconds from then: the
        calls submitted together expire together, at least TTL after each
        result was written. A page this store did not write (another kernel,
        or a re-run after it was closed) is treated as closing now.
        """
        now = self.clock()
        hold = self._hold(expire)
        with self._transaction():
            closing: list[str] = []
            for group, gen, rows, prevs in groups:
                base = gkey("c", group, gen)
                by_page: dict[str, list[tuple]] = {}
                for o in rows:
                    by_page.setdefault(o[0][:names.PREFIX_LEN], []).append(o)
                for prefix, page_rows in by_page.items():
                    with self._open_lock:
                        entry = self._open.get(prefix)
                        if entry is not None:
                            entry[0].difference_update(names.split_id(o[0])[1]
                                                       for o in page_rows)
                    held = entry is not None and bool(entry[0])
                    sets, blobs = self._outcome_entries(group, gen, page_rows,
                                                        hold if held else expire)
                    if entry is not None and held:
                        entry[1] += [k for k, _ in sets] + blobs
                    else:
                        if entry is not None:
                            with self._open_lock:
                                self._open.pop(prefix, None)
                            closing += entry[1]
                        closing += self._page_keys(prefix)
                    self._set_many(sets, hold if held else expire)
                self._set_many([(base + "t1", now)], hold)
                self._count_outcomes(base, rows, prevs, hold)
            if closing:
                self._touch(dict.fromkeys(closing), expire)

    def _page_keys(self, prefix: str) -> list[str]:
        """The stored keys of a spec page: its entry, its index entry, its outcome
        index entries and the outcome pages they name."""
        keys = [page_index(prefix)]
        page_key = self._get(keys[0])
        if isinstance(page_key, str):
            keys.append(page_key)
        for qkey, okey in self._scan(f"q{SEP}{prefix}{SEP}"):
            keys.append(qkey)
            if isinstance(okey, str):
                keys.append(okey)
        return keys

    def _put_large(self, group: str | None, gen: int, ctr: str, o: tuple,
                   expire: float | None) -> tuple:
        """A result of LARGE_RESULT bytes or more (or an ``async_iter``'s chunks)
        goes to its own entry, streamed to a file and signed without a copy; the
        outcome row keeps the entry's key (a str)."""
        blob = o[5]
        chunked = type(blob) is list  # async_iter: pickled chunks
        bkey = f"{gkey('b', group, gen)}{o[0]}{SEP}{ctr}" + (CHUNKED if chunked else "")
        if not chunked and is_framed(blob):  # signed head, raw buffers: mappable
            head = memoryview(blob)[:frame_head(blob)[0]]
            self._put_stream(bkey + FRAMED, [blob], expire, signed=[head])
            return (*o[:5], bkey + FRAMED, *o[6:])
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

    def all_counts(self) -> list[GroupCounts]:
        """:meth:`counts` of every group with tasks under its current label, in name
        order: two range reads (labels, counters) whatever the number of groups,
        where a :meth:`counts` per group of :meth:`groups` costs three reads each.
        ``running`` and ``queued`` are left 0: the store does not know them."""
        if self.ttl is not None:  # counts come from the entries: group by group
            return [self.counts(g) for g in self.groups()]
        gens = {key[2:]: gen for key, gen in self._scan(f"g{SEP}")}
        values: dict[str, dict[str, Any]] = {}
        for key, value in self._scan(f"c{SEP}"):
            group, gen, name = key[2:].rsplit(SEP, 2)
            if group and gens.get(group) == int(gen):
                values.setdefault(group, {})[name] = value
        out = []
        for group, v in values.items():
            n, ok, fail, cancel, reused = (v.get(k) or 0 for k in COUNTERS)
            if n:
                out.append(GroupCounts(
                    group=group, submitted=n, done=ok, failed=fail, cancelled=cancel,
                    reused=reused, first_submitted=v.get("t0"), last_finished=v.get("t1")))
        return out

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
        gen = self.gen(group)
        if self.ttl is not None:  # counters outlive expired pages there (_hold)
            return bool(self._scan(gkey("s", group, gen)))
        return bool(self._get(gkey("c", group, gen) + "n"))

    def groups(self) -> list[str]:
        """Names of the groups that have tasks under their current label."""
        out = []
        for key, gen in self._scan(f"g{SEP}"):
            group = key[2:]
            if self.ttl is not None:
                if self._scan(gkey("s", group, gen)):
                    out.append(group)
            elif self._get(gkey("c", group, gen) + "n"):
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

    def group_slice(self, group: str, start: int, stop: int,
                    cls: type = TaskRecord) -> TaskList:
        """The records of tasks ``start`` to ``stop - 1`` of ``group`` (positions in
        submission order, as :meth:`group_records` lists them; past the end: fewer).

        Reads only the spec pages the slice covers (found from their keys, which
        hold each page's first position) and those pages' outcome pages, so a page
        of a group of a million tasks costs a page, not the group.
        """
        if not (isinstance(start, int) and isinstance(stop, int)) or not 0 <= start <= stop:
            raise ConfigurationError(f"group_slice needs integers 0 <= start <= stop, got "
                                     f"start={start!r}, stop={stop!r}")
        base = gkey("s", group, self.gen(group))
        cut = len(base)
        keys = self._scan_keys(base)
        firsts = [int(k[cut:]) for k in keys]  # fixed-width numbers: key order is position order
        out = TaskList()
        for i in range(max(0, bisect_right(firsts, start) - 1), len(keys)):
            if firsts[i] >= stop:
                break
            data = self._get(keys[i])
            if data is None:
                continue
            page: SpecPage = self._load(keys[i], data)
            lo, hi = max(0, start - page.seq), min(len(page.calls), stop - page.seq)
            if lo >= hi:
                continue
            latest: dict[str, tuple] = {}
            for _, okey in self._scan(f"q{SEP}{page.prefix}{SEP}"):  # counter order: latest wins
                value = self._get(okey)
                if value is not None:
                    latest.update((o[0], o) for o in self._outcome_rows(okey, value)
                                  if o[0].startswith(page.prefix))
            for c in page.calls[lo:hi]:
                o = latest.get(names.task_id(page.prefix, c[0]))
                out.append(self._record(page, Call._make(c), None if o is None
                                        else view(o), group, cls))
        return out

    def group_records(self, group: str, cls: type = TaskRecord,
                      mapped: bool = False) -> TaskList | None:
        """The group's task records in submission order; None if unknown.
        ``mapped``: large ndarray results memory-mapped (see :meth:`_blob`)."""
        entries = self.group_entries(group)
        if entries is None:
            return None
        return TaskList(self._record(p, c, o, group, cls, mapped) for p, c, o in entries)

    def group_results(self, group: str, failures: bool, mapped: bool = False) -> list | None:
        """Results in submission order, without building task records (the hot path);
        ``mapped``: large ndarray results memory-mapped, read-only (see :meth:`_blob`)."""
        blobs = functools.partial(self._blob, mapped=True) if mapped else self._blob
        found = self._group_pages(group)
        if found is None:
            return None
        pages, latest = found
        out: list[Any] = []
        append = out.append
        get = latest.get
        for p in pages:
            prefix = p.prefix
            saved = p.options.get("save", True)  # save=False: no result to give
            for o in map(get, [f"{prefix}{c[0]:08x}" for c in p.calls]):
                if o is None:
                    continue
                state = o[1]
                if state == "success" and saved:
                    blob = o[5]
                    if type(blob) is bytes:
                        try:
                            append(loads_result(blob))
                        except Exception as exc:  # e.g. its class's module is not importable
                            append(unloadable_result(exc))
                    else:
                        append(result_value(view(o), blobs))
                elif failures and state == "failure":
                    append(failure_value(view(o), blobs))
        return out

    def _locate(self, task_id: str) -> tuple[SpecPage, Call, str | None] | None:
        """A task's spec page, its call and its group label (None if deleted)."""
        if not names.looks_like_id(task_id):
            return None
        prefix, index = names.split_id(task_id)
        page = self._page_of(prefix)
        if page is None:
            return None
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

    def task_entries(self, task_ids: Iterable[str]
                     ) -> dict[str, tuple[SpecPage, Call, str | None, Outcome | None]]:
        """``task id -> (page, call, group label, latest outcome or None)`` for the
        stored ones of ``task_ids`` (unknown ids are left out): each spec page and
        outcome page involved is read once, whatever the id count."""
        by_prefix: dict[str, list[str]] = {}
        for tid in dict.fromkeys(task_ids):
            if names.looks_like_id(tid):
                by_prefix.setdefault(names.split_id(tid)[0], []).append(tid)
        out: dict[str, tuple[SpecPage, Call, str | None, Outcome | None]] = {}
        for prefix, tids in by_prefix.items():
            page = self._page_of(prefix)
            if page is None:
                continue
            calls = {c[0]: c for c in page.calls}
            label = page.group if page.group and self.gen(page.group) == page.gen else None
            latest = self._latest(
                (okey, value) for _, okey in self._scan(f"q{SEP}{prefix}{SEP}")
                if (value := self._get(okey)) is not None)
            for tid in tids:
                c = calls.get(names.split_id(tid)[1])
                if c is not None:
                    o = latest.get(tid)
                    out[tid] = (page, Call._make(c), label,
                                None if o is None else Outcome._make(o))
        return out

    def entry_record(self, page: SpecPage, call: Call, o: Outcome | None, label: str | None,
                     cls: type = TaskRecord) -> TaskRecord:
        """The record of one entry of :meth:`group_entries` or :meth:`task_entries`."""
        return self._record(page, call, o, label, cls)

    def call_of(self, task_id: str) -> tuple | None:
        """What a task called: ``(function's display name, the pickled callable or
        None for a dotted path, args, kwargs, iterable)``; None if the id is unknown."""
        found = self._locate(task_id)
        if found is None:
            return None
        page, call, _ = found
        name, blob = page.funcs[call.func][:2]
        return name, blob, call.args, call.kwargs, call.iterable

    def task(self, task_id: str, cls: type = TaskRecord,
             mapped: bool = False) -> TaskRecord | None:
        """The record of one task, by id: its page and its latest outcome
        (``mapped``: a large ndarray result memory-mapped, see :meth:`_blob`)."""
        found = self._locate(task_id)
        if found is None:
            return None
        page, call, label = found
        runs = self._task_outcomes(task_id)
        return self._record(page, call, view(runs[-1]) if runs else None, label, cls, mapped)

    def task_by_name(self, name: str, cls: type = TaskRecord,
                     mapped: bool = False) -> TaskRecord | None:
        """The newest task called ``name`` (a derived name or a ``task_name=``)."""
        if not name.isascii() and not _encodable(name):
            return None  # a lone surrogate: no task can be stored under that name
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
            task = self.task(tid, cls, mapped)
            if task is not None:
                return task
        return None

    def _record(self, page: SpecPage, call: Call, o: Outcome | None, label, cls,
                mapped: bool = False) -> TaskRecord:
        tid = names.task_id(page.prefix, call.index)
        return build_record(
            tid, call.task_name or names.name_of(tid), page.funcs[call.func][0],
            None if call.iterable else call.args, call.kwargs, o, label, page.created, cls,
            items=call.args if call.iterable else None,
            blobs=functools.partial(self._blob, mapped=True) if mapped else self._blob,
            saved=page.options.get("save", True),
        )

    # ----------------------------------------------------------------- values
    def value_refs(self) -> set[str]:
        """The digests of the stored values some stored task takes (one range read)."""
        cut = len(f"v{SEP}")
        return {key[cut:].split(SEP, 1)[0] for key in self._scan_keys(f"v{SEP}")}

    def collect_values(self, keep: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
        """Remove the stored values no stored task takes any more (and none of
        ``keep``, the digests this process's tasks still run with); the digests
        removed. See :meth:`nbgroups.values.ValueFiles.collect`."""
        if self.values is None:
            return []
        return self.values.collect(self.value_refs, set(keep), self.clock())

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
                    keys += (value_ref(digest, page.prefix) for digest in _digests_of_page(page))
                for kind in "ocbk":  # outcomes, counters, large results, reuse keys
                    keys += self._scan_keys(gkey(kind, group, gen))
                self._delete(keys)
            self._set(f"g{SEP}{group}", gen + 1)
        return int(count)


def _digests_of_page(page: SpecPage) -> set[str]:
    """The stored values a page's calls (their arguments, when kept) and callables take."""
    return values_module.digests_of_calls((c[2], c[3]) for c in page.calls) | \
        values_module.digests_of_funcs(page.funcs)
