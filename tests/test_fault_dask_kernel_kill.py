"""Fault: the kernel that submitted to a Dask cluster is killed (issue 13, item 3).

A Dask cluster outlives the kernel. Its scheduler lets go of a gone client's
tasks, but a worker cannot stop the thread running one: a batch went on running
its remaining calls for nobody, and a ``resume_group`` from the next kernel ran
the calls still running there a second time, at the same time. Now a batch
starts no new call once its Dask task was let go, and a resume first lets the
calls a gone kernel left on the cluster end (or restarts their workers through
the nannies, past the wait), so no call runs twice at once. Real LocalCluster
on 127.0.0.1, a real killed process, runs counted with marker files.
"""

from __future__ import annotations

import itertools
import os
import textwrap
import time
from pathlib import Path

import pytest

import nbgroups
from nbgroups import State, api
from nbgroups.api import manage
from nbgroups.executors import dask as dask_executor
from nbgroups.serialize import dumps
from tests.submitters import kill_hard, submitter

pytest.importorskip("distributed")


def slow(x, marks, seconds):
    """A call that leaves a start mark and, if it gets there, an end mark."""
    import time

    with open(f"{marks}/{x}.run", "a") as f:
        f.write(f"start {time.time()} {os.getpid()}\n")
    time.sleep(seconds)
    with open(f"{marks}/{x}.run", "a") as f:
        f.write(f"end {time.time()} {os.getpid()}\n")
    return x * 3


def runs(marks: Path) -> dict[int, list[tuple[float, float | None]]]:
    """Each call's runs as (start, end or None), in order of start."""
    out: dict[int, list[tuple[float, float | None]]] = {}
    for path in marks.glob("*.run"):
        open_runs: dict[str, float] = {}
        done: list[tuple[float, float | None]] = []
        for line in path.read_text().splitlines():
            what, when, pid = line.split()
            if what == "start":
                open_runs[pid] = float(when)
            else:
                done.append((open_runs.pop(pid), float(when)))
        done += [(start, None) for start in open_runs.values()]
        out[int(path.stem)] = sorted(done)
    return out


def test_a_batch_starts_no_call_once_dask_let_go_of_it(dask_cluster, tmp_path):
    """The worker side: a batch of five 0.3 s calls whose Dask task is cancelled
    while its first call runs (as the scheduler does when the client goes) runs
    that call to its end and starts no other."""
    _lc, client = dask_cluster
    marks = tmp_path / "marks"
    marks.mkdir()
    calls = [(f"id{i}", 0, (i, str(marks), 0.3), None, False, 1) for i in range(5)]
    payload = dumps((1, [("slow", dumps(slow))], calls, None))
    future = client.submit(dask_executor._run_on_worker, payload, None, 1, pure=False)
    deadline = time.monotonic() + 60
    while not (marks / "0.run").exists():
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.01)  # another process's file: nothing to wait on but the disk
    future.cancel()
    time.sleep(1.5)  # five calls would take 1.5 s: let any that would start, start
    assert sorted(runs(marks)) == [0], runs(marks)
    [(_start, end)] = runs(marks)[0]
    assert end is not None  # a thread cannot be stopped: the running call ends


CHILD = textwrap.dedent(
    """
    import sys
    import nbgroups
    from tests.test_fault_dask_kernel_kill import slow

    store, marks, address = sys.argv[1], sys.argv[2], sys.argv[3]
    nbgroups.configure(store=store, backend="dask", address=address, progress=False)
    nbgroups.sweep(slow, "dk", x=list(range(4)), marks=[marks], seconds=[4.0])
    print("submitted", flush=True)
    nbgroups.result_group("dk", wait=-1)
    print("finished (too early: the test wanted to kill it first)", flush=True)
    """
)


def test_resume_after_a_killed_kernel_runs_no_call_twice_at_once(dask_cluster, tmp_path,
                                                                 monkeypatch):
    """A kernel submits four 4 s calls to a 2-thread cluster and is killed while
    two run. The next kernel's resume lets them end for ORPHAN_WAIT_SECONDS (1 s
    here), then ends the two workers (their nannies start them again), which
    stops them; then it runs each of the four once. No call's runs overlap, and
    none starts between the kill and the resume."""
    lc, client = dask_cluster
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    with submitter(CHILD, str(store), str(marks), lc.scheduler_address) as proc:
        deadline = time.monotonic() + 60
        while len(runs(marks)) < 2:  # both threads inside a call
            assert time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.01)
        killed = time.time()
        kill_hard(proc)  # the kernel; the cluster is not its child

    monkeypatch.setattr(manage, "ORPHAN_WAIT_SECONDS", 1.0)
    api.reset()
    nbgroups.configure(store=str(store), backend="dask", address=lc.scheduler_address,
                       progress=False)
    try:
        tasks = nbgroups.fetch_group("dk")
        assert [t.state for t in tasks] == [State.QUEUED] * 4
        resuming = time.time()
        assert nbgroups.resume_group("dk") == 4
        resumed = time.time()
        assert resumed - resuming >= 1.0  # the orphans were waited for, then stopped
        assert nbgroups.result_group("dk", wait=120_000) == [0, 3, 6, 9]
        seen = runs(marks)
        for x, each in seen.items():
            for (_s1, e1), (s2, _e2) in itertools.pairwise(each):
                assert e1 is None or e1 <= s2, f"call {x} ran twice at once: {each}"
            assert [e for _, e in each].count(None) <= 1, each  # at most the stopped run
            assert sum(e is not None for _, e in each) == 1, each  # one run went through
            started_after_kill = [s for s, _ in each if killed < s < resuming]
            assert started_after_kill == [], f"call {x} started for nobody: {each}"
        stopped = [x for x, each in seen.items() if each[0][1] is None]
        assert len(stopped) == 2, seen  # the two the killed kernel left running
    finally:
        api.reset()
        client.wait_for_workers(2, timeout=60)  # the restarted workers are back
