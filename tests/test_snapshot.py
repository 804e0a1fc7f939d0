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
from nbgroups import api, serialize, snapshot
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


@pytest.fixture(scope="module")
def dask_cluster():
    """A 2-process LocalCluster on 127.0.0.1 for this module (as in test_dask.py,
    whose module is not imported here: it imports other test modules' skips)."""
    distributed = pytest.importorskip("distributed")
    lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0")  # 8787 may be taken
    update = lc._update_worker_status

    def tolerant(op, msg):  # dask/distributed#5407, see test_dask._tolerate_double_removal
        try:
            update(op, msg)
        except KeyError:
            if op != "remove":
                raise

    lc._update_worker_status = tolerant
    client = distributed.Client(lc, set_as_default=False)
    client.wait_for_workers(2, timeout=60)
    yield lc, client
    client.close()
    lc.close()


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
    if not hasattr(nb, "Executor"):
        pytest.skip("nbgroups.Executor is not on this branch yet")
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


# ------------------------------------------------------------------ the snapshot itself
def test_atoms_are_not_copied():
    calls = [((1, 2.5, "s", b"b", None, True, 1j, (1, ("a",)), frozenset({1})), {"k": 3})]
    assert snapshot.take(calls) is calls


def test_mutable_values_are_copied_once_per_call():
    lst = [1, [2]]
    calls = snapshot.take([((lst, 3), {"d": {"a": lst}})])
    (args, kwargs), = calls
    assert args == (lst, 3) and args[0] is not lst and args[0][1] is not lst[1]
    assert kwargs == {"d": {"a": lst}} and kwargs["d"]["a"] is not lst
    items = snapshot.take([([(lst,), 5], None)], iterable=True)[0][0]
    assert items == [(lst,), 5] and items[0][0] is not lst


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
