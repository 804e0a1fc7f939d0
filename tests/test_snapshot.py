"""A call runs with, and records, its arguments as they were when the submitting
function returned (issue 20), on every backend: loky, thread, sync and a real
Dask LocalCluster. The runner pickles arguments later (when it flushes its
pages, when it sends a batch); a buffer, list or dict changed in between used
to reach every call of a loop with its last value.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import nbgroups
from nbgroups import api, serialize, snapshot, values
from nbgroups.errors import SerializationError

BACKENDS = ["loky", "thread", "sync", "dask"]


def first(a):
    return int(a[0])


def head(x=None, *, p=None):
    value = x if p is None else p
    if isinstance(value, dict):
        return value["alpha"]
    return value[0]


@pytest.fixture(params=BACKENDS)
def nb(request, store_dir):
    if request.param == "dask":
        pytest.importorskip("distributed")
        lc, client = request.getfixturevalue("dask_cluster")
        client.wait_for_workers(2, timeout=60)
        extra = {"address": lc.scheduler_address}
    else:
        extra = {}
    api.reset()
    nbgroups.configure(store=str(store_dir), backend=request.param, workers=2,
                       progress=False, **extra)
    yield nbgroups
    api.reset()


def test_a_buffer_reused_in_a_loop(nb):
    """The issue's loop: every call saw the last value (19) before."""
    buf = np.zeros(10)
    ids = []
    for i in range(20):
        buf[0] = i
        ids.append(nb.async_task(first, buf, group="mut"))
    buf[0] = -1
    assert nb.result_group("mut", wait=-1) == list(range(20))
    for i, tid in enumerate(ids):
        (arg,), kwargs = nb.fetch(tid, wait=-1).args, nb.fetch(tid).kwargs
        assert arg[0] == i and not kwargs


def test_lists_dicts_kwargs_sweep_values_and_iter_items(nb):
    lst, params = [0], {"alpha": 0}
    by_list, by_dict, by_kwarg = [], [], []
    for i in range(5):
        lst[0], params["alpha"] = i, i
        by_list.append(nb.async_task(head, lst, group="list"))
        by_dict.append(nb.async_task(head, params, group="dict"))
        by_kwarg.append(nb.async_task(head, p=params, group="kwargs"))
    lst[0] = params["alpha"] = -1
    points = [[10], [20]]
    nb.sweep(head, "sweep", x=points)
    items = [[1], [2], [3]]
    iter_id = nb.async_iter(head, items, group="iter")
    points[0][0] = items[0][0] = -1  # changed after the submitting function returned

    assert nb.result_group("list", wait=-1) == list(range(5))
    assert nb.result_group("dict", wait=-1) == list(range(5))
    assert nb.result_group("kwargs", wait=-1) == list(range(5))
    assert nb.result_group("sweep", wait=-1) == [10, 20]
    assert nb.result(iter_id, wait=-1) == [1, 2, 3]
    # the stored records show what was submitted
    assert [nb.fetch(t).args for t in by_list] == [([i],) for i in range(5)]
    assert [nb.fetch(t).args for t in by_dict] == [({"alpha": i},) for i in range(5)]
    assert [nb.fetch(t).kwargs for t in by_kwarg] == [{"p": {"alpha": i}} for i in range(5)]
    assert [t.kwargs for t in nb.fetch_group("sweep")] == [{"x": [10]}, {"x": [20]}]


def test_executor_submissions(nb):
    """concurrent.futures-style submit (nbgroups.Executor, issue 19) goes through
    the same submission path: each future ran with the buffer as it was."""
    buf = np.zeros(3)
    futures = []
    with nb.Executor(group="ex") as ex:
        for i in range(5):
            buf[0] = i
            futures.append(ex.submit(first, buf))
        buf[0] = -1
        assert [f.result(timeout=60) for f in futures] == list(range(5))


def test_an_unpicklable_argument_fails_its_own_call(nb):
    """Not an error at the call: the call has an id and fails, saying why; the rest runs.
    With ``sync=True`` (run here, exceptions propagate) the call raises."""
    with pytest.raises(SerializationError, match="cannot be pickled"):
        nb.async_task(head, threading.Lock(), group="bad-sync", sync=True)
    bad = nb.async_task(head, threading.Lock(), group="bad")
    good = nb.async_task(head, [7], group="bad")
    assert nb.result(good, wait=-1) == 7
    task = nb.fetch(bad, wait=-1)
    assert task.success is False
    assert "cannot be pickled" in task.traceback and "lock" in task.traceback


class Unbuildable:
    """Pickles, but does not unpickle (as an exception whose ``__init__`` takes
    other arguments than its args, where tblib does not patch them in)."""

    def __init__(self, a):
        self.a = a

    def __setstate__(self, state):
        raise ValueError(f"Unbuildable cannot be rebuilt from {state}")


def test_an_argument_that_pickles_but_does_not_unpickle_fails_its_own_call(nb):
    """The snapshot is kept as a pickle, never unpickled at the call: such an
    argument reaches the worker, which fails that call alone, saying why; the
    group's other calls, its hook and every read of it work (its page holds the
    argument: a read that raised would break the whole group for good)."""
    hooked = []
    bad = nb.async_task(str, Unbuildable(1), group="unbuildable", hook=hooked.append)
    good = nb.async_task(head, [7], group="unbuildable")
    assert nb.result(good, wait=-1) == 7
    task = nb.fetch(bad, wait=-1)
    assert task.success is False
    assert "could not be loaded" in task.traceback and "Unbuildable" in task.traceback
    assert "could not be loaded" in repr(task.args[0])
    assert [t.success for t in nb.fetch_group("unbuildable")] == [False, True]
    assert nb.result_group("unbuildable") == [7]
    api.runner().wait(lambda: len(hooked) == 1, 30)
    assert hooked[0].success is False


# ------------------------------------------------------------------ the snapshot itself
def test_atoms_are_not_copied():
    calls = [((1, 2.5, "s", b"b", None, True, 1j, (1, ("a",)), frozenset({1})), {"k": 3})]
    assert snapshot.take(calls) is calls


def test_mutable_values_are_copied_once_per_call():
    lst = [1, [2]]
    calls = snapshot.take([((lst, 3), {"d": {"a": lst}})])
    items = snapshot.take([([(lst,), 5], None)], iterable=True)[0][0]
    lst[1].append(9)  # changed after the calls: their snapshots are not
    (args, kwargs), = calls
    # kept as pickles (pickled once: pages and batches embed the bytes)
    assert isinstance(args[0], serialize.Pickled) and type(kwargs["d"]) is serialize.Pickled
    args, kwargs = values.shown_call(args, kwargs)
    assert args == ([1, [2]], 3) and kwargs == {"d": {"a": [1, [2]]}}
    assert values.shown_call(items, None)[0] == [([1, [2]],), 5]
    shared = {"alpha": [1]}  # one object passed to many calls: one pickle, one object each
    many = snapshot.take([((shared,), None), ((shared,), None)])
    first, second = (call[0][0] for call in many)
    assert first is not second and first.data is second.data
    assert values.shown(first) == shared and values.shown(first) is not values.shown(second)


def test_a_notebook_class_is_copied_as_an_object_not_kept_as_its_pickle(monkeypatch):
    """The C pickler names ``__main__`` classes (in a notebook it finds them
    there, as here); such a pickle is not portable (a worker has no such
    class), so the snapshot is an object, which the runner's cloudpickle then
    carries by value."""
    import sys

    ns: dict = {"__name__": "__main__"}
    exec("class Box:\n    def __init__(self):\n        self.items = [1]\n", ns)
    monkeypatch.setattr(sys.modules["__main__"], "Box", ns["Box"], raising=False)
    assert b"__main__" in serialize.dumps_copy(ns["Box"]())  # pickled by reference
    box = ns["Box"]()
    (args, _), = snapshot.take([((box,), None)])
    assert type(args[0]) is ns["Box"] and args[0] is not box and args[0].items == [1]


def test_a_large_array_is_shared_while_unchanged():
    big = np.arange(snapshot.LARGE // 8 * 4, dtype=float)
    a = snapshot.take([((big,), None)])[0][0][0]
    b = snapshot.take([((big,), {"inside": [big]})])[0]
    assert b[0][0] is a and b[1]["inside"][0] is a  # one copy, top level or nested
    assert a is not big and np.array_equal(a, big) and a.flags.writeable
    big[5] = -1.0
    c = snapshot.take([((big,), None)])[0][0][0]
    assert c is not a and c[5] == -1.0 and a[5] == 5.0
    strided = big[::2]  # not contiguous: pickled in band, compared whole
    d, e = (snapshot.take([((strided,), None)])[0][0][0] for _ in range(2))
    assert d is e and np.array_equal(d, strided)
    strided[0] = 7.0
    assert snapshot.take([((strided,), None)])[0][0][0][0] == 7.0


def test_an_unpicklable_value_is_kept_as_its_error():
    value = snapshot.take([((threading.Lock(),), None)])[0][0][0]
    assert isinstance(value, snapshot.Unpicklable)
    assert "lock" in value.message
    with pytest.raises(TypeError, match="could not be pickled when the call was made"):
        serialize.dumps(value)
