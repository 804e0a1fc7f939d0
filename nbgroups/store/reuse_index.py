"""The reuse index: which task runs each call key of a group (``reuse=True``).

A piece of its own over the store's primitives, beside the durable records
(:class:`~nbgroups.store.base.Store` knows nothing of it but the key range it
deletes with a group). How calls are keyed and when the index is consulted is
:mod:`nbgroups.reuse`.

Layout: ``k\\0GROUP\\0GEN\\0KEY -> "TASK_ID"``, or ``"TASK_ID\\0r"`` once a
re-submission found it done (then it is known to have succeeded: success is
final).
"""

from __future__ import annotations

from .. import names
from ..records import Call, SpecPage
from .base import Store
from .layout import SEP, gkey, page_index


class ReuseIndex:
    """The reuse keys of one store, and what this process knows it has keyed.

    ``keyed_upto`` memoizes, per ``(group, generation)``, the group's submitted
    count once its tasks were keyed plus the tasks submitted with ``reuse=True``
    since: a larger submitted count means tasks came without keys (see
    :mod:`nbgroups.reuse`).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keyed_upto: dict[tuple[str | None, int], int] = {}

    def lookup(self, group: str | None, keys: list[str]) -> dict[str, tuple]:
        """The tasks recorded for call keys of ``group``:
        ``key -> (id, state, page, call, saved)``.

        ``state`` is the task's latest stored state (``'success'``,
        ``'failure'``, ``'cancelled'``) or None if it never finished; ``page``
        and ``call`` (its :class:`SpecPage` and :class:`Call`) are None for a
        task not written yet (its id was recorded, its page not). ``saved`` is
        the page's ``save`` option: a success submitted with ``save=False`` has
        no result to give (True when the page is not written). Unrecorded keys
        are left out. Reads each spec page and outcome page involved once,
        whatever the key count.
        """
        st = self.store
        gen = st.gen(group)
        base = gkey("k", group, gen)
        if len(keys) > 64:  # one range scan instead of many reads
            wanted = set(keys)
            rows = [(k[len(base):], v) for k, v in st._scan(base) if k[len(base):] in wanted]
        else:
            rows = [(k, v) for k in dict.fromkeys(keys) if (v := st._get(base + k)) is not None]
        found: dict[str, tuple] = {}
        by_prefix: dict[str, list[tuple[str, str]]] = {}
        reused: set[str] = set()  # keys marked reused: known to have succeeded
        for key, value in rows:
            if not isinstance(value, str):
                continue
            tid, _, mark = value.partition(SEP)
            if mark:
                reused.add(key)
            # reused ones too: their page says whether the success kept its result
            if names.looks_like_id(tid):
                by_prefix.setdefault(names.split_id(tid)[0], []).append((key, tid))
        outcome_pages: dict[str, dict[str, str]] = {}  # page key -> {task id: state}
        for prefix, items in by_prefix.items():
            page_key = st._get(page_index(prefix))
            data = st._get(page_key) if isinstance(page_key, str) else None
            if data is None:
                for key, tid in items:
                    found[key] = (tid, "success" if key in reused else None, None, None, True)
                continue
            page: SpecPage = st._load(page_key, data)
            calls = {c[0]: c for c in page.calls}
            refs = [okey for _, okey in st._scan(f"q{SEP}{prefix}{SEP}")]
            for okey in refs:
                if okey not in outcome_pages:
                    value = st._get(okey)
                    outcome_pages[okey] = {} if value is None else {
                        o[0]: o[1] for o in st._outcome_rows(okey, value)}
            for key, tid in items:
                call = calls.get(names.split_id(tid)[1])
                if call is None:
                    if key in reused:
                        found[key] = (tid, "success", None, None, True)
                    continue
                state = "success" if key in reused else None
                for okey in refs:  # in counter order: the latest run wins
                    state = outcome_pages[okey].get(tid, state)
                found[key] = (tid, state, page, Call._make(call),
                              page.options.get("save", True))
        return found

    def keys(self, group: str | None) -> dict[str, str]:
        """Every reuse key recorded for ``group``: ``key -> task id`` (one range read)."""
        st = self.store
        base = gkey("k", group, st.gen(group))
        cut = len(base)
        return {k[cut:]: v.partition(SEP)[0] for k, v in st._scan(base) if isinstance(v, str)}

    def record(self, group: str | None, entries: dict[str, str],
               ttl: int | None = None) -> None:
        """Record which task runs each call key of ``group`` (one transaction)."""
        st = self.store
        if not entries:
            return
        expire = st._expire(ttl)
        base = gkey("k", group, st.gen(group))
        with st._transaction():
            st._set_many([(base + key, tid) for key, tid in entries.items()], expire)

    def mark(self, group: str | None, keys: list[str], ttl: int | None = None) -> int:
        """Mark keys whose successful task a re-submission reused; returns how many were
        reused for the first time, which the group's ``reused`` counter adds: so
        ``GroupCounts.reused`` is how many of its tasks re-submissions found done."""
        st = self.store
        expire = st._expire(ttl)
        gen = st.gen(group)
        base = gkey("k", group, gen)
        fresh = 0
        with st._transaction():
            for key in keys:
                value = st._get(base + key)
                if isinstance(value, str) and SEP not in value:
                    st._set(base + key, value + SEP + "r", expire)
                    fresh += 1
            if fresh:
                st._incr(gkey("c", group, gen) + "reused", fresh, expire)
        return fresh
