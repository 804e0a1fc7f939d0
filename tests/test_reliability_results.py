"""Issue 13, item 6: a stored result the kernel cannot unpickle.

The worker could import the class of the value it returned, the kernel cannot
(``sys.path`` differs): ``result_group``/``fetch_group`` used to raise a raw
``ModuleNotFoundError`` for the whole group. Now that task's record keeps
``success=True`` (the call did succeed, and the counts say so) and its
``result`` is a ``TaskError`` of type ``UnloadableResult`` saying why; the rest
of the group reads normally, and once the module is importable the same read
gives the value (nothing was lost).

Also here: an ``async_iter`` whose callable cannot be loaded in the worker
used to make the store write of its outcome fail on every retry (a chunk
without results), so every later wait of the kernel raised ``StoreError``.

A real 2-worker loky pool and a real store in a temp dir; each run leaves a
marker file.
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from nbgroups.errors import TaskError

G = "rel-unloadable"
MODULE = "relmod_only_in_workers"


def make(x, src, marks):
    """Returns an object of a class from a module only the worker has on its path."""
    if src not in sys.path:
        sys.path.insert(0, src)
    import relmod_only_in_workers as m

    with open(os.path.join(marks, f"{x}-{os.getpid()}"), "w"):
        pass
    return m.Thing(x) if x != "plain" else "plain"


@pytest.fixture
def worker_only_module(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{MODULE}.py").write_text(textwrap.dedent("""
        class Thing:
            def __init__(self, x):
                self.x = x
    """))
    marks = tmp_path / "marks"
    marks.mkdir()
    yield str(src), str(marks)
    sys.modules.pop(MODULE, None)


def test_an_unloadable_result_spoils_only_its_own_task(nb_loky, worker_only_module):
    nb = nb_loky
    src, marks = worker_only_module
    assert MODULE not in sys.modules
    ok1 = nb.async_task(pow, 2, 3, group=G)
    odd = nb.async_task(make, "odd", src, marks, group=G)
    plain = nb.async_task(make, "plain", src, marks, group=G)
    items = nb.async_iter(make, [("a", src, marks), ("b", src, marks)], group=G)

    results = nb.result_group(G, wait=60_000)
    assert len(results) == 4 and results[0] == 8 and results[2] == "plain"
    for bad in (results[1], results[3]):
        assert isinstance(bad, TaskError) and bad.type_name == "UnloadableResult"
        assert "ModuleNotFoundError" in str(bad) and MODULE in str(bad)
    tasks = nb.fetch_group(G)
    assert [t.id for t in tasks] == [ok1, odd, plain, items]
    assert all(t.success for t in tasks) and nb.count_group(G) == 4
    assert isinstance(nb.result(odd), TaskError) and nb.result(plain) == "plain"
    assert sorted(n.split("-")[0] for n in os.listdir(marks)) == ["a", "b", "odd", "plain"]

    # the stored value was kept: importable now, the same reads give it
    sys.path.insert(0, src)
    try:
        results = nb.result_group(G)
        assert results[1].x == "odd" and [t.x for t in results[3]] == ["a", "b"]
        assert nb.fetch(odd).result.x == "odd"
    finally:
        sys.path.remove(src)
    assert nb.resume_group(G) == 0  # nothing re-runs: every task finished
    assert len(os.listdir(marks)) == 4


def test_async_iter_whose_callable_does_not_load_is_stored_as_a_failure(nb):
    tid = nb.async_iter("no_such_module_rel_iter.f", [1, 2, 3], group=G)
    ok = nb.async_task(pow, 2, 5, group=G)
    task = nb.fetch(tid, wait=60_000)
    assert task.success is False and "no_such_module_rel_iter" in task.error
    assert isinstance(task.result, LookupError)
    assert nb.result(ok, wait=60_000) == 32
    assert nb.result_group(G, wait=60_000) == [32]
    assert nb.count_group(G, failures=True) == 1
