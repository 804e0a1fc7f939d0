"""Issue 13, item 12: ``cached=N`` counts the TTL from when the result is written.

Before, the TTL counted from submission: a task running longer than N seconds
was unreadable the moment it finished, and ``result(t, wait=60000,
cached=True)`` blocked the whole minute, then returned None. Now the task's
entries are held until its result is written, and expire N seconds after.

A real 2-worker loky pool and a real diskcache cache layer in a temp dir;
each run of a task leaves a marker file, so "ran once" is counted.
"""

from __future__ import annotations

import os
import time

import pytest

from nbgroups import api

G = "rel-cached"
TTL = 1


def _gated(tmp_path):
    """A task that marks its run, then waits for the test's go file."""
    marks, go = str(tmp_path / "marks"), str(tmp_path / "go")

    def task(x):
        with open(os.path.join(marks, f"{x}-{os.getpid()}-{time.time_ns()}"), "w"):
            pass
        while x == "slow" and not os.path.exists(go):
            time.sleep(0.01)
        return f"done {x}"

    (tmp_path / "marks").mkdir()
    return task, tmp_path / "go"


def _runs(tmp_path, x) -> int:
    return sum(1 for n in os.listdir(tmp_path / "marks") if n.startswith(f"{x}-"))


def test_a_task_running_longer_than_its_ttl_is_readable_when_it_finishes(nb_loky, tmp_path,
                                                                         fake_clock):
    nb = nb_loky
    api.runner().store_for(TTL).clock = fake_clock  # the cache layer's clock: no sleeping
    task, go = _gated(tmp_path)
    quick = nb.async_task(task, "quick", group=G, cached=TTL)
    slow = nb.async_task(task, "slow", group=G, cached=TTL)
    assert nb.result(quick, wait=30_000, cached=TTL) == "done quick"
    assert api.runner().wait(lambda: _runs(tmp_path, "slow") == 1, 30)
    fake_clock.advance(TTL + 0.5)  # the slow task has now run longer than its TTL
    # a task of the same submission that finished earlier is still there: its
    # page waits for the slow one, nothing looks queued again
    assert nb.result(quick, cached=TTL) == "done quick"
    go.touch()
    # the wait ends when the task finishes, with its result
    assert nb.result(slow, wait=60_000, cached=TTL) == "done slow"
    assert nb.result_group(G, cached=TTL) == ["done quick", "done slow"]
    assert nb.count_group(G, cached=TTL) == 2
    assert _runs(tmp_path, "slow") == 1 and _runs(tmp_path, "quick") == 1
    fake_clock.advance(TTL - 0.1)
    assert nb.result_group(G, cached=TTL) == ["done quick", "done slow"]
    fake_clock.advance(0.2)  # ...and TTL after the last result was written, all expire
    assert nb.result_group(G, cached=TTL) is None
    assert nb.fetch(slow, cached=TTL) is None and nb.count_group(G, cached=TTL) == 0


@pytest.mark.parametrize("layer", ["memory", "disk"])
def test_store_holds_a_page_until_its_last_result(tmp_path, layer, fake_clock):
    """The store contract in both stores: a page's entries expire TTL after its last
    outcome is written, not after its submission."""
    from nbgroups.serialize import dumps_result
    from nbgroups.store import DiskStore, MemoryStore

    s = MemoryStore(ttl=TTL, keep_args=False, clock=fake_clock) if layer == "memory" else \
        DiskStore(tmp_path / "s", ttl=TTL, keep_args=False, clock=fake_clock)
    try:
        (page,) = s.write_pages([{"prefix": "ab" * 12, "group": G, "created": fake_clock(),
                                  "funcs": (("f", None),),
                                  "calls": tuple((i, 0, None, None, None, False) for i in (0, 1)),
                                  "options": {}}])
        ids = [f"{page.prefix}{i:08x}" for i in (0, 1)]

        def finish(tid, value):
            now = fake_clock()
            s.write_outcomes([(G, page.gen, [(tid, "success", 1, now, now,
                                              dumps_result(value), None, None)], [])])

        fake_clock.advance(TTL + 0.5)  # submitted longer ago than the TTL: still there
        finish(ids[0], "a")
        fake_clock.advance(TTL + 0.5)
        assert s.group_results(G, False) == ["a"]  # held: its page still waits
        assert s.task(ids[1]).success is None
        finish(ids[1], "b")
        assert s.group_results(G, False) == ["a", "b"]
        fake_clock.advance(TTL - 0.1)
        assert s.group_results(G, False) == ["a", "b"]
        fake_clock.advance(0.2)
        assert s.group_results(G, False) is None and s.task(ids[1]) is None
        assert s.groups() == [] and not s.known(G)
    finally:
        s.close()
