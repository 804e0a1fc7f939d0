"""The Store contract, run against both MemoryStore and DiskStore (real diskcache, tmp dir)."""

from __future__ import annotations

import os
import pickle
import stat
import time

import pytest

from nbgroups import names
from nbgroups.records import SCHEMA_VERSION, Call, SpecPage, State
from nbgroups.serialize import Signer, dumps_exception, format_exception
from nbgroups.store import DiskStore, MemoryStore
from nbgroups.store import disk as disk_store


@pytest.fixture(params=["memory", "disk", "disk-old-sqlite"])
def make_store(request, tmp_path, monkeypatch):
    """Each store; "disk-old-sqlite": DiskStore as on SQLite < 3.24 (no upsert, no
    RETURNING: diskcache's API instead of nbgroups' own statements)."""
    made = []
    if request.param == "disk-old-sqlite":
        monkeypatch.setattr(disk_store, "_UPSERT_OK", False)
        monkeypatch.setattr(disk_store, "_RETURNING_OK", False)

    def make(**kw):
        s = MemoryStore(**kw) if request.param == "memory" else DiskStore(tmp_path / "store", **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def draft(group, args_list, task_names=None, created=None):
    task_names = task_names or [None] * len(args_list)
    return dict(
        prefix=names.new_prefix(), group=group, created=created or time.time(),
        funcs=(("math.floor", None),),
        calls=tuple(Call(i, 0, (a,), {}, n, False)
                    for i, (a, n) in enumerate(zip(args_list, task_names, strict=True))),
        options={"timeout": None, "retries": 0, "save": True, "ttl": None},
    )


def ids_of(page: SpecPage) -> list[str]:
    return [names.task_id(page.prefix, c[0]) for c in page.calls]  # stored calls: plain tuples


def success(tid, value, attempt=1):
    now = time.time()
    return (tid, "success", attempt, now - 0.01, now, pickle.dumps(value), None, None)


def failure(tid, exc):
    tb = format_exception(exc)
    now = time.time()
    return (tid, "failure", 1, now - 0.01, now, None, dumps_exception(exc, tb), tb)


def outcomes(store, page, outs, prev=None):
    store.write_outcomes([(page.group, page.gen, list(outs), [prev] * len(outs) if prev else [])])


def test_pages_keep_submission_order_and_schema(make_store):
    s = make_store()
    p1, p2 = s.write_pages([draft("g", [1.5, 2.5]), draft("g", [3.5])])
    (p3,) = s.write_pages([draft("g", [4.5, 5.5])])
    assert (p1.seq, p2.seq, p3.seq) == (0, 2, 3)
    assert all(p.schema == SCHEMA_VERSION for p in (p1, p2, p3))
    entries = s.group_entries("g")
    assert [c.args for _, c, _ in entries] == [(1.5,), (2.5,), (3.5,), (4.5,), (5.5,)]
    assert all(o is None for _, _, o in entries)
    assert all(p.schema == SCHEMA_VERSION for p, _, _ in entries)
    records = s.group_records("g")
    assert [r.id for r in records] == ids_of(p1) + ids_of(p2) + ids_of(p3)
    assert all(r.state is State.QUEUED and r.success is None for r in records)
    assert records[0].schema == SCHEMA_VERSION
    assert s.counts("g").submitted == 5 and s.known("g") and s.groups() == ["g"]
    assert s.group_entries("other") is None and s.group_results("other", False) is None
    assert not s.known("other")


def test_a_page_written_again_is_stored_and_counted_once(make_store):
    """A page handed to the store a second time (a write retried after it had
    committed) must not list its calls twice: the group would count one more
    task than ever finishes, and a wait on it would never end."""
    s = make_store()
    d, other = draft("g", [1.5, 2.5]), draft("g", [3.5])
    (p1,) = s.write_pages([d])
    again, p2, twice = s.write_pages([d, other, other])
    assert (again.prefix, again.seq, again.gen) == (p1.prefix, p1.seq, p1.gen)
    assert twice.prefix == p2.prefix and twice.seq == p2.seq
    assert s.counts("g").submitted == 3
    entries = s.group_entries("g")
    assert [c.args for _, c, _ in entries] == [(1.5,), (2.5,), (3.5,)]
    outcomes(s, p1, [success(t, 1) for t in ids_of(p1)])
    outcomes(s, p2, [success(t, 1) for t in ids_of(p2)])
    assert s.counts("g").settled


def test_outcomes_results_in_submission_order_and_counters(make_store):
    s = make_store()
    (p,) = s.write_pages([draft("g", [0.5, 1.5, 2.5, 3.5])])
    a, b, c, d = ids_of(p)
    outcomes(s, p, [success(d, 3), failure(b, ValueError("bad b"))])  # later ones first
    outcomes(s, p, [success(a, 0)])
    outcomes(s, p, [success(c, 2)])
    assert s.group_results("g", failures=False) == [0, 2, 3]
    with_f = s.group_results("g", failures=True)
    assert with_f[0] == 0 and isinstance(with_f[1], ValueError) and with_f[2:] == [2, 3]
    cnt = s.counts("g")
    assert (cnt.submitted, cnt.done, cnt.failed, cnt.cancelled) == (4, 3, 1, 0)
    assert cnt.finished == 4 and cnt.settled
    assert cnt.first_submitted <= cnt.last_finished
    rec = s.task(b)
    assert rec.success is False and "bad b" in rec.traceback and rec.group == "g"
    assert s.task(a).result == 0 and s.task(a).time_taken() == pytest.approx(0.01, abs=1e-3)


def test_later_outcome_wins_and_counters_move(make_store):
    s = make_store()
    (p,) = s.write_pages([draft("g", [0.5, 1.5])])
    a, b = ids_of(p)
    outcomes(s, p, [failure(a, RuntimeError("first try"))])
    assert (s.counts("g").done, s.counts("g").failed) == (0, 1)
    outcomes(s, p, [success(a, 42, attempt=2)], prev="failure")  # a retry succeeded
    assert s.task(a).result == 42 and s.task(a).success is True
    assert s.task(a).attempt_count == 2
    assert (s.counts("g").done, s.counts("g").failed) == (1, 0)
    cancelled = (b, "cancelled", 0, None, time.time(), None, None, None)
    outcomes(s, p, [cancelled])
    c = s.counts("g")
    assert (c.done, c.failed, c.cancelled, c.settled) == (1, 0, 1, True)
    assert s.task(b).state is State.CANCELLED and s.task(b).success is None
    assert s.group_results("g", failures=True) == [42]


def test_delete_label_keeps_tasks(make_store):
    s = make_store()
    (p,) = s.write_pages([draft("g", [0.5, 1.5])])
    a, _ = ids_of(p)
    outcomes(s, p, [success(a, 0)])
    name = s.task(a).name
    n = s.delete_group("g", tasks=False)
    assert type(n) is int and n == 2
    assert s.group_entries("g") is None and s.counts("g").submitted == 0
    assert s.groups() == []
    assert s.task(a).group is None and s.task(a).result == 0
    assert s.task_by_name(name).id == a
    (p2,) = s.write_pages([draft("g", [9.5])])  # the label starts again, empty
    assert p2.gen == p.gen + 1 and p2.seq == 0
    assert len(s.group_entries("g")) == 1 and s.counts("g").submitted == 1
    assert s.delete_group("nope", tasks=False) == 0


def test_delete_with_tasks(make_store):
    s = make_store()
    (p,) = s.write_pages([draft("g", [0.5, 1.5], task_names=["custom", None])])
    a, b = ids_of(p)
    outcomes(s, p, [success(a, 0), success(b, 1)])
    name_b = s.task(b).name
    assert s.delete_group("g", tasks=True) == 2
    assert s.task(a) is None and s.task(b) is None
    assert s.task_by_name(name_b) is None and s.task_by_name("custom") is None
    assert s.group_entries("g") is None and s.counts("g").done == 0


def test_name_lookup_task_name_override_and_newest_wins(make_store):
    s = make_store()
    (p1,) = s.write_pages([draft("g", [0.5, 1.5], task_names=[None, "shared"])])
    a, b = ids_of(p1)
    derived = names.name_of(a)
    assert names.parse_name(derived) is not None
    assert s.task(a).name == derived and s.task_by_name(derived).id == a
    assert s.task(b).name == "shared" and s.task_by_name("shared").id == b
    assert s.task_by_name(names.name_of(b)) is None  # overridden: the derived name is not b's
    time.sleep(0.002)
    (p2,) = s.write_pages([draft("h", [2.5], task_names=["shared"])])
    assert s.task_by_name("shared").id == ids_of(p2)[0]
    assert s.task_by_name("no-such-name-here") is None
    assert s.task("f" * 32) is None


def test_ttl_expiry_removes_entries_and_membership(make_store, fake_clock):
    clock = fake_clock
    s = make_store(ttl=1, keep_args=False, clock=clock)
    (p,) = s.write_pages([draft("g", [0.5, 1.5])])
    a, b = ids_of(p)
    outcomes(s, p, [success(a, 0), success(b, 1)])
    assert s.group_results("g", False) == [0, 1]
    assert s.task(a).args is None and s.task(a).kwargs is None  # keep_args=False
    name = s.task(a).name
    clock.advance(0.9)
    assert s.group_results("g", False) == [0, 1]  # not yet expired
    clock.advance(0.2)
    assert s.group_results("g", False) is None and s.group_entries("g") is None
    assert s.task(a) is None and s.task_by_name(name) is None
    assert s.counts("g").submitted == 0 and s.counts("g").done == 0
    assert s.groups() == []


def test_write_ttl_per_call(make_store, fake_clock):
    clock = fake_clock
    s = make_store(clock=clock)
    (p,) = s.write_pages([draft("short", [0.5])], ttl=1)
    s.write_pages([draft("long", [0.5])])
    s.write_pages([draft("waiting", [0.5])], ttl=1)  # no result yet: the TTL has not begun
    s.write_outcomes([(p.group, p.gen, [success(ids_of(p)[0], 0)], [])], ttl=1)
    clock.advance(1.1)
    assert s.group_entries("short") is None
    assert s.group_entries("long") is not None
    assert s.group_entries("waiting") is not None


def test_disk_store_directory_created_0700(tmp_path):
    d = tmp_path / "a" / "store"
    s = DiskStore(d)
    try:
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    finally:
        s.close()


def test_two_disk_stores_on_one_directory_see_each_other(tmp_path):
    one, two = DiskStore(tmp_path / "s"), DiskStore(tmp_path / "s")
    try:
        (p,) = one.write_pages([draft("g", [0.5])])
        (p2,) = two.write_pages([draft("g", [1.5])])
        assert p2.seq == 1  # the counter is shared, not per object
        (a,) = ids_of(p)
        (b,) = ids_of(p2)
        outcomes(two, p, [success(a, 0)])
        outcomes(one, p2, [success(b, 1)])
        for s in (one, two):
            assert s.group_results("g", False) == [0, 1]
            assert s.counts("g").done == 2
        assert two.delete_group("g", tasks=False) == 2
        assert one.group_entries("g") is None and one.task(a).group is None
        (p3,) = one.write_pages([draft("g", [2.5])])  # after the other deleted the label
        assert p3.gen == 1 and two.group_results("g", False) == []
    finally:
        one.close()
        two.close()


def test_entry_signed_with_another_key_is_refused(tmp_path):
    from nbgroups.errors import SignatureError

    one = DiskStore(tmp_path / "s", signer=Signer(b"k" * 32))
    two = DiskStore(tmp_path / "s", signer=Signer(b"x" * 32))
    try:
        one.write_pages([draft("g", [0.5])])
        with pytest.raises(SignatureError, match="signature"):
            two.group_entries("g")
    finally:
        one.close()
        two.close()


def test_planted_pickle_is_never_loaded(tmp_path):
    from nbgroups.errors import SignatureError

    s = DiskStore(tmp_path / "s")
    try:
        (p,) = s.write_pages([draft("g", [0.5])])
        key = f"s\x00g\x00{p.gen}\x00{p.seq:012d}"
        s._cache.set(key, {"planted": True})  # diskcache pickles this itself
        with pytest.raises(SignatureError, match="refused"):
            s.group_entries("g")
    finally:
        s.close()


def test_a_signed_entry_moved_to_another_key_is_refused(make_store):
    """Signatures are bound to the key: Bob's valid outcome page served as Alice's fails."""
    from nbgroups.errors import SignatureError
    from nbgroups.store import SEP

    store = make_store()
    alice, bob = (store.write_pages([draft(g, [1])])[0] for g in ("alice", "bob"))
    outcomes(store, alice, [success(ids_of(alice)[0], "alice's")])
    outcomes(store, bob, [success(ids_of(bob)[0], "bob's")])
    assert store.group_results("alice", False) == ["alice's"]
    (akey, _), = store._scan(f"o{SEP}alice{SEP}0{SEP}")
    (_, bob_value), = store._scan(f"o{SEP}bob{SEP}0{SEP}")
    store._set(akey, bob_value)  # what someone who can write the store could do
    with pytest.raises(SignatureError, match="moved from another entry"):
        store.group_results("alice", False)


def test_plain_data_is_told_from_what_cloudpickle_must_carry():
    """Pages and batches of plain arguments go through the C pickler (a warm
    round trip's two pickles); anything else keeps cloudpickle, which pickles
    notebook (``__main__``) classes and functions by value."""
    from nbgroups.serialize import plain

    assert plain((1, 2.5, "x", b"y", None, True, 3j, [1, (2, {"k": "v"})], {}))
    Notebook = type("Notebook", (), {"__module__": "__main__"})
    for value in (Notebook(), Notebook, lambda: 1, print, {1, 2}, bytearray(b"x"),
                  [[Notebook()]], {"k": (1, Notebook())}):
        assert not plain(value), value
    assert not plain(list(range(100)), budget=64)  # past the budget: cloudpickle
    assert plain(list(range(100)), budget=200)


def test_a_notebook_class_argument_still_reaches_the_worker_by_value(store_dir, monkeypatch):
    """A page and a batch holding an instance of a ``__main__`` class (found
    there, as in a notebook) are pickled by cloudpickle: the worker, which has
    no such class, runs the call, and the page reads back after the class is
    gone (a kernel restart)."""
    import sys

    import nbgroups
    from nbgroups import api

    ns: dict = {"__name__": "__main__"}
    exec("class Point:\n    def __init__(self, x):\n        self.x = x\n", ns)
    monkeypatch.setattr(sys.modules["__main__"], "Point", ns["Point"], raising=False)
    api.reset()
    nbgroups.configure(store=str(store_dir), workers=1, progress=False)
    try:
        tid = nbgroups.async_task(getattr, ns["Point"](7), "x", group="main-class")
        assert nbgroups.result(tid, wait=60_000) == 7
        monkeypatch.delattr(sys.modules["__main__"], "Point")  # a later kernel has none
        ((_page, call, *_),) = api.runner().store_for(None).group_entries("main-class")
        assert call.args[0].x == 7
    finally:
        api.reset()
