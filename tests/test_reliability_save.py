"""Issue 13, item 13: ``save=False`` keeps the outcome, not the result.

Before, such a task's record had ``result=None, success=True``: it could not
be told from a call that returned None, and ``result_group`` gave ``[None]``.
The contract now (DESIGN, ``save``): counts, ``count=`` waits, progress and
resume see the task finished; ``Task.saved`` is False; ``result()`` is None;
``result_group`` leaves it out; ``fetch_group`` lists it; the hook gets the result.

Real store in a temp dir, real loky pool and inline backend; runs are counted
with a marker file per run.
"""

from __future__ import annotations

import nbgroups
from nbgroups import api

G = "rel-save"


def _marking(marks):
    path = str(marks)

    def task(x):
        with open(path, "a") as f:
            f.write(f"{x}\n")
        if x == "boom":
            raise ValueError("boom")
        return None if x == "none" else x * 10

    return task


def _runs(marks) -> list[str]:
    return sorted(marks.read_text().split()) if marks.exists() else []


def test_save_false_keeps_the_outcome_not_the_result(nb, tmp_path, store_dir):
    marks = tmp_path / "marks"
    task = _marking(marks)
    seen = []
    kept = nb.async_task(task, 1, group=G)
    dropped = nb.async_task(task, 2, group=G, save=False, hook=seen.append)
    returned_none = nb.async_task(task, "none", group=G)
    failed = nb.async_task(task, "boom", group=G, save=False)
    it = nb.async_iter(task, [3, 4], group=G, save=False)

    # count= waits see the unsaved tasks finish: 5 tasks, all finished
    assert nb.result_group(G, count=5, wait=30_000) == [10, None]
    assert nb.count_group(G) == 4 and nb.count_group(G, failures=True) == 1
    assert nb.group_counts(G).settled
    assert nb.result_group(G, failures=True)[:2] == [10, None]
    assert isinstance(nb.result_group(G, failures=True)[2], ValueError)  # the outcome is kept

    assert nb.result(dropped) is None and nb.result(it) is None
    assert nb.result(returned_none) is None and nb.result(kept) == 10
    by_id = {t.id: t for t in nb.fetch_group(G)}
    assert list(by_id) == [kept, dropped, returned_none, failed, it]  # fetch_group lists them
    assert [by_id[i].saved for i in by_id] == [True, False, True, False, False]
    assert by_id[dropped].success is True and by_id[dropped].result is None
    assert by_id[returned_none].success is True and by_id[returned_none].saved is True
    assert by_id[failed].success is False and "boom" in by_id[failed].error
    assert nb.fetch(dropped).saved is False and nb.fetch(kept).saved is True

    assert api.runner().wait(lambda: bool(seen), 30)
    assert seen[0].result == 20  # the hook still gets the result
    assert seen[0].saved is False  # and is told it was not kept

    # nothing to resume: the unsaved tasks finished, and each ran once
    assert nb.resume_group(G) == 0
    assert _runs(marks) == ["1", "2", "3", "4", "boom", "none"]

    # a later kernel reads the same from the store
    api.reset()
    nbgroups.configure(store=str(store_dir), backend="sync", progress=False)
    assert nb.result_group(G) == [10, None]
    assert [t.saved for t in nb.fetch_group(G)] == [True, False, True, False, False]
    assert nb.fetch(dropped).result is None and nb.fetch(dropped).saved is False


def test_save_false_in_the_cached_layer(nb, tmp_path):
    task = _marking(tmp_path / "marks")
    kept = nb.async_task(task, 1, group=G, cached=True)
    dropped = nb.async_task(task, 2, group=G, cached=True, save=False)
    assert nb.result_group(G, cached=True, count=2, wait=30_000) == [10]
    assert nb.fetch(dropped, cached=True).saved is False
    assert nb.fetch(kept, cached=True).saved is True
    assert nb.count_group(G, cached=True) == 2
