"""Soak: 20,000 tiny tasks, 10 % failures, a few worker deaths: counts exact, nothing lost."""

from __future__ import annotations

import os
import time

import pytest

from nbgroups import State, WorkerDied
from nbgroups.api import runner

N = 20_000
DEATHS = frozenset({3_001, 9_002, 15_003, 19_004})


def fails(x: int) -> bool:
    return (x * 7919) % 10 == 3  # exactly 10 %, spread over the whole sweep


def soak_task(x):
    if x in DEATHS:
        os._exit(7)
    if fails(x):
        raise ValueError(f"bad {x}")
    return x + 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_soak(nb_loky):
    nb = nb_loky
    assert not any(fails(x) for x in DEATHS)
    t0 = time.monotonic()
    nb.sweep(soak_task, "soak", x=list(range(N)))
    results = nb.result_group("soak", wait=280_000)
    took = time.monotonic() - t0

    n_fail = sum(map(fails, range(N)))
    assert n_fail == N // 10
    expected = [x + 1 for x in range(N) if x not in DEATHS and not fails(x)]
    assert results == expected
    assert nb.count_group("soak") == len(expected)
    assert nb.count_group("soak", failures=True) == n_fail + len(DEATHS)
    counts = nb.group_counts("soak")
    assert (counts.submitted, counts.queued, counts.running, counts.cancelled) == (N, 0, 0, 0)

    tasks = nb.fetch_group("soak")
    assert len(tasks) == N
    assert len({t.id for t in tasks}) == N
    assert [t.kwargs["x"] for t in tasks] == list(range(N))
    assert all(t.state.final and t.attempt_count == 1 for t in tasks)
    died = [t for t in tasks if isinstance(t.result, WorkerDied)]
    assert sorted(t.kwargs["x"] for t in died) == sorted(DEATHS)
    assert all("exited with code 7" in str(t.result) for t in died)
    failed = tasks.filter(state=State.FAILURE)
    assert {t.kwargs["x"] for t in failed} == {x for x in range(N) if fails(x)} | DEATHS
    assert all(str(t.result) == f"bad {t.kwargs['x']}" for t in failed if t not in died)
    assert runner().restarts == len(DEATHS)
    print(f"soak: {N} tasks, {n_fail} failures, {len(DEATHS)} worker deaths in {took:.1f} s")
