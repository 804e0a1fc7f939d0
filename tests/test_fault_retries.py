"""Fault: tasks raise; ``retries=N`` re-runs them up to N times.

``attempt_count`` is the number of runs; a success after failures is a
success; counts move from failure to success when ``retry_group`` fixes one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbgroups import State


def _runs(d, x) -> int:
    p = Path(d) / f"{x}.run"
    return len(p.read_text().splitlines()) if p.exists() else 0


def flaky(x, runs_dir, fail_times):
    """Fails its first ``fail_times`` runs, then returns x."""
    with open(os.path.join(runs_dir, f"{x}.run"), "a") as f:
        f.write("run\n")
    if _runs(runs_dir, x) <= fail_times:
        raise ValueError(f"flaky {x} run {_runs(runs_dir, x)}")
    return x


@pytest.mark.parametrize("where", ["option", "configure"])
def test_retries_rerun_failures(nb, tmp_path, where):
    opts = {"retries": 2}
    if where == "configure":
        nb.configure(retries=2)
        opts = {}
    # x fails x times: 0..2 succeed within 2 retries, 3 and 4 never do.
    for x in range(5):
        nb.async_task(flaky, x, str(tmp_path), x, group="r", **opts)
    tasks = nb.fetch_group("r", wait=60_000)
    assert [t.args[0] for t in tasks] == list(range(5))
    assert nb.count_group("r") == 3
    assert nb.count_group("r", failures=True) == 2
    assert nb.result_group("r") == [0, 1, 2]
    assert [t.attempt_count for t in tasks] == [1, 2, 3, 3, 3]
    assert [t.success for t in tasks] == [True, True, True, False, False]
    assert [_runs(tmp_path, x) for x in range(5)] == [1, 2, 3, 3, 3]
    assert "flaky 3 run 3" in str(tasks[3].result)  # the last run's error is kept
    assert "ValueError" in tasks[3].traceback


def test_no_retries_by_default(nb, tmp_path):
    nb.async_task(flaky, 7, str(tmp_path), 1, group="r0")
    (task,) = nb.fetch_group("r0", wait=60_000)
    assert task.success is False
    assert task.attempt_count == 1
    assert _runs(tmp_path, 7) == 1


def test_retry_group_moves_counts(nb, tmp_path):
    for x in range(4):
        nb.async_task(flaky, x, str(tmp_path), 1 if x % 2 else 0, group="rg")
    nb.result_group("rg", wait=60_000)
    assert (nb.count_group("rg"), nb.count_group("rg", failures=True)) == (2, 2)
    assert nb.retry_group("rg") == 2
    tasks = nb.fetch_group("rg", wait=60_000)
    assert (nb.count_group("rg"), nb.count_group("rg", failures=True)) == (4, 0)
    assert nb.result_group("rg") == [0, 1, 2, 3]
    assert all(t.state is State.SUCCESS for t in tasks)
    assert [_runs(tmp_path, x) for x in range(4)] == [1, 2, 1, 2]
    assert nb.retry_group("rg") == 0


def test_async_iter_retries(nb, tmp_path):
    def item(x):
        return flaky(x, str(tmp_path), 1 if x == 5 else 0)

    tid = nb.async_iter(item, range(10), retries=1, group="ri")
    task = nb.fetch(tid, wait=60_000)
    assert task.success is True
    assert task.result == list(range(10))
    assert task.attempt_count == 2
