"""Each django-q trap of DESIGN §6, fixed: loky and sync backends, real store."""

from __future__ import annotations

import os
import time

import pytest

from nbgroups import api


def _slow_early(i):
    time.sleep(0.03 * (6 - i) if i < 6 else 0)  # early tasks finish last
    return i


@pytest.mark.parametrize("cached", [False, True])
def test_group_results_in_submission_order_when_later_tasks_finish_first(nb, cached):
    ids = [nb.async_task(_slow_early, i, group="order", cached=cached) for i in range(10)]
    assert nb.result_group("order", count=10, cached=cached) == list(range(10))
    tasks = nb.fetch_group("order", cached=cached)
    assert [t.id for t in tasks] == ids
    if nb.settings().backend == "loky":
        # the point of the test: completion order really differed from submission order
        stops = [t.stopped for t in tasks]
        assert stops != sorted(stops)


def test_count_counts_failures_and_is_at_least(nb):
    for i in range(5):
        nb.async_task("math.sqrt", -1 if i % 2 else i, group="cnt")
    # django-q: count must equal the number of *successes* -> blocks forever here
    res = nb.result_group("cnt", count=5)
    assert res == [0.0, 2.0 ** 0.5, 2.0]
    # "at least": a count below what finished returns at once
    assert nb.result_group("cnt", count=2) == res
    assert len(nb.fetch_group("cnt", count=5)) == 5
    assert nb.count_group("cnt") == 3 and nb.count_group("cnt", failures=True) == 2


def test_count_with_wait_returns_what_is_there_when_time_runs_out(nb):
    nb.async_task("math.floor", 1.5, group="short", sync=True)
    assert nb.result_group("short", count=3, wait=100) == [1]


@pytest.mark.parametrize("cached", [False, True])
def test_unknown_group_is_none(nb, cached):
    assert nb.result_group("never-used", cached=cached) is None
    assert nb.result_group("never-used", wait=20, cached=cached) is None
    assert nb.fetch_group("never-used", cached=cached) is None
    assert nb.count_group("never-used", cached=cached) == 0


@pytest.mark.parametrize("cached", [False, True])
def test_delete_group_returns_int(nb, cached):
    for i in range(3):
        nb.async_task("math.floor", i + 0.5, group="di", cached=cached)
    nb.result_group("di", count=3, cached=cached)
    for tasks in (False, True):
        n = nb.delete_group("di", tasks=tasks, cached=cached)
        assert type(n) is int
    assert nb.delete_group("unknown-group", cached=cached) == 0
    assert type(nb.delete_group("unknown-group", tasks=True, cached=cached)) is int


def test_fetch_by_name_in_the_cached_layer(nb):
    tid = nb.async_task("math.floor", 7.5, group="cn", cached=True)
    name = nb.fetch(tid, wait=-1, cached=True).name
    assert nb.fetch(name, cached=True).id == tid
    assert nb.result(name, cached=True) == 7
    named = nb.async_task("math.floor", 8.5, cached=True, task_name="cache-named")
    assert nb.result("cache-named", wait=-1, cached=True) == 8
    assert nb.fetch("cache-named", cached=True).id == named
    assert nb.fetch("cache-named") is None  # not in the durable layer


def test_async_iter_over_a_generator_input_order(nb):
    def gen():
        yield from range(12)

    tid = nb.async_iter(_slow_early, gen(), group="gen")
    assert nb.result(tid, wait=-1) == list(range(12))


def test_time_taken_excludes_queue_time(nb, tmp_path):
    release = tmp_path / "go"
    backend = nb.settings().backend

    started = [tmp_path / f"started{i}" for i in range(2)]

    def blocker(mark):
        open(mark, "w").close()
        deadline = time.time() + 60  # a cross-process event: the release file
        while not os.path.exists(release) and time.time() < deadline:
            time.sleep(0.01)

    if backend == "sync":
        release.touch()
    for mark in started:  # occupy both workers
        nb.async_task(blocker, str(mark), group="tt")
    quick = nb.async_task("math.floor", 1.5, group="tt")
    released = time.time()
    if backend == "loky":
        # both workers are taken (each blocker has begun): quick can only queue
        assert api.runner().wait(lambda: all(m.exists() for m in started), 60)
        released = time.time()
        release.touch()
    task = nb.fetch(quick, wait=-1)
    nb.result_group("tt", wait=-1)
    assert task.time_taken() == pytest.approx(task.stopped - task.started)
    assert task.submitted <= task.started
    if backend == "loky":
        assert task.started >= released  # it could only start once a blocker ended
        assert task.time_taken() < task.stopped - task.submitted
        assert task.time_taken() <= task.stopped - released
    assert api.runner().wait(lambda: not api.runner().pending_ids(), 60)


def test_submission_order_with_mixed_options_in_one_group(nb):
    """Calls of one group with different options (task_name, timeout...) keep their order."""
    ids = []
    for i in range(9):
        extra = {"task_name": f"n{i}"} if i % 3 == 1 else ({"timeout": 60} if i % 3 == 2 else {})
        ids.append(nb.async_task("math.floor", i + 0.5, group="mixed", **extra))
    assert nb.result_group("mixed", count=9) == list(range(9))
    assert [t.id for t in nb.fetch_group("mixed")] == ids
