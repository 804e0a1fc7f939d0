"""Cancelling a group from a process that does not own its tasks: the owner's
runner obeys a request on the store's board; a gone owner's tasks are recorded
cancelled by the requester. Owners are real Python processes (loky and thread
backends) sharing a real diskcache store with this one."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import nbgroups
from nbgroups import api
from nbgroups.cancelling import CancelWatcher, cancel_everywhere
from nbgroups.store import MemoryStore
from nbgroups.store.cancel_board import CancelBoard
from nbgroups.stores import Stores
from tests.dashboard_env import SWEEP as N
from tests.dashboard_env import release_owner, start_owner


@pytest.mark.parametrize("backend", ["loky", "thread"])
def test_the_owner_cancels_its_queued_calls_and_nothing_is_lost(tmp_path, here, backend):
    proc, starts, go, owner = start_owner(tmp_path, backend)
    try:
        report = cancel_everywhere(here, "far")
        assert report.here == 0 and report.orphans == 0 and report.silent == ()
        assert set(report.answers) == {owner}
        n = report.total
        # loky: the calls of a batch not begun are skipped by their worker; the
        # thread pool cannot take back a batch it has, so a few may still run
        assert (N - 1 if backend == "loky" else 1) <= n <= N - 1
        started_before = len(os.listdir(starts))
        go.touch()
        states = json.loads(proc.stdout.readline())
        assert proc.wait(60) == 0
    finally:
        release_owner(proc, go)
    assert states.count("cancelled") == n
    assert states.count("success") == N - n  # every call ran or was cancelled, once
    ran = sorted(int(name) for name in os.listdir(starts))
    assert len(ran) == N - n and ran == list(range(N - n))  # the owner started no new call
    assert started_before <= len(ran)
    c = here.store.counts("far")
    assert (c.submitted, c.done, c.cancelled, c.failed) == (N, N - n, n, 0)
    records = here.store.group_records("far")
    assert [r.state.value for r in records] == states


def test_a_gone_owners_tasks_are_recorded_cancelled_here(tmp_path, here):
    proc, *_ = start_owner(tmp_path, "thread", "stay")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    t0 = time.monotonic()
    report = cancel_everywhere(here, "far")
    assert time.monotonic() - t0 < 5  # nobody to wait for
    assert report.answers == {} and report.silent == () and report.here == 0
    c = here.store.counts("far")
    # all of them, call 0 too: it was running when its process was killed
    assert report.orphans == N == c.cancelled and c.done == 0
    assert nbgroups.resume_group("far") == 0  # nothing left to run again


def test_cancel_group_from_a_second_process_cancels_the_owners_queued_calls(tmp_path, here):
    # Tried from a second notebook on the same store: cancel_group returned 0 and
    # the owner ran every queued call (its view's Cancel button did nothing too).
    proc, starts, go, _owner = start_owner(tmp_path, "loky")
    try:
        n = nbgroups.cancel_group("far")
        assert n == N - 1  # all but call 0, which runs until `go`
        go.touch()
        states = json.loads(proc.stdout.readline())
        assert proc.wait(60) == 0
    finally:
        release_owner(proc, go)
    assert states.count("cancelled") == N - 1 and states.count("success") == 1
    assert sorted(os.listdir(starts)) == ["0"]


def test_cancel_group_after_the_owner_is_gone_records_its_calls_cancelled(tmp_path, here):
    # After a kernel restart the dead kernel's calls stayed "queued" in every view,
    # and cancel_group returned 0: now they are recorded cancelled (resume runs none).
    proc, *_ = start_owner(tmp_path, "thread", "stay")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    assert nbgroups.cancel_group("far") == N
    c = nbgroups.group_counts("far")
    assert (c.cancelled, c.queued, c.running) == (N, 0, 0)
    assert nbgroups.resume_group("far") == 0


def test_cancel_group_of_this_processs_own_tasks_does_not_ask_the_board(here, tmp_path,
                                                                     monkeypatch):
    from nbgroups import cancelling

    def refused(*_args, **_kw):
        raise AssertionError("cancel_everywhere called for tasks this process holds")

    monkeypatch.setattr(cancelling, "cancel_everywhere", refused)
    gate = tmp_path / "gate"
    ids = [nbgroups.async_task(_wait_for, str(gate), group="own") for _ in range(6)]
    n = nbgroups.cancel_group("own")  # the thread backend has taken a few already
    gate.touch()
    assert 1 <= n <= 5 and nbgroups.group_counts("own").cancelled == n
    assert len(nbgroups.result_group("own", wait=-1)) == len(ids) - n


def _wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.01)
    return path


def test_the_dashboards_own_queued_tasks_are_cancelled_too(here, tmp_path):
    nbgroups.configure(backend="loky", workers=1)  # a batch not begun is taken back exactly
    r = api.runner()
    starts, gate = tmp_path / "starts", tmp_path / "gate"
    starts.mkdir()

    def held(i):
        (starts / str(i)).touch()
        while not gate.exists():
            time.sleep(0.01)
        return i

    for i in range(5):
        nbgroups.async_task(held, i, group="mine")
    while not (starts / "0").exists():
        time.sleep(0.01)
    report = cancel_everywhere(r, "mine", wait=1.0)
    gate.touch()
    # call 0 runs on the one worker: the 4 others are cancelled, counted once
    # (this process's own watcher answers the request too: not counted again)
    assert (report.here, report.answers, report.orphans, report.total) == (4, {}, 0, 4)
    assert nbgroups.result_group("mine", wait=-1) == [0]
    assert r.store.counts("mine").cancelled == 4
    assert sorted(os.listdir(starts)) == ["0"]


def test_the_watcher_obeys_a_request_once_and_only_for_groups_it_holds():
    store = MemoryStore()
    held = {(False, "g"): 3}
    calls = []

    def cancel(group, ttl):
        calls.append((group, ttl))
        return 2

    watcher = CancelWatcher(Stores(store), "me", lambda: held, cancel)
    board = CancelBoard(store)
    gen, request = board.ask("g")
    board.ask("other")
    watcher.poll()
    assert calls == [("g", None)]
    assert board.answers("g", gen, request) == {"me": 2}
    watcher._next = 0.0  # the next poll period, without waiting for it
    watcher.poll()
    assert calls == [("g", None)]  # once per request
    board.withdraw("g", gen, request)
    assert board.requests() == {("other", 0): board.requests()[("other", 0)]}


def test_a_jupyter_kernel_obeys_the_cancel(tmp_path, here):
    """The owner is a real ipykernel (jupyter_client) running a sweep on one loky
    worker: its runner thread, inside the kernel, obeys the request."""
    from tests.kernels import kernel, runs

    marks, starts, fast = tmp_path / "marks", tmp_path / "starts", tmp_path / "fast"
    marks.mkdir()
    starts.mkdir()
    with kernel(tmp_path) as k:
        k.setup(tmp_path / "store", marks, workers=1)
        k.run(f"nbgroups.sweep(slow_until, 'in-kernel', x=list(range(10)), marks=[MARKS], "
              f"first=[0], fast=[{str(fast)!r}], starts=[{str(starts)!r}])")
        k.run(f"slow_running({str(starts)!r}, 0, n=1)")  # call 0 runs, holding the worker
        report = cancel_everywhere(here, "in-kernel")
        fast.touch()
        [(owner, n)] = report.answers.items()
        assert owner.split(":")[1] == str(k.pid) and n == 9 == report.total
        out = k.run("import json; print(json.dumps([r.state.value for r in "
                    "nbgroups.fetch_group('in-kernel', wait=-1)]))")
    assert json.loads(out) == ["success"] + ["cancelled"] * 9
    assert runs(marks) == {0: 1}  # the kernel started none of the cancelled calls
