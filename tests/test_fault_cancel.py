"""Fault: the user cancels a group while it runs.

The tasks not yet started are recorded as cancelled (neither success nor
failure): fetch_group lists them, count_group does not count them, they never
run; the tasks already dispatched finish normally, and waiting on the group ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nbgroups import State


def gated(x, d):
    with open(os.path.join(d, f"{x}.run"), "a") as f:
        f.write("run\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(d, "go")) and time.monotonic() < deadline:
        time.sleep(0.01)
    return x


def test_cancel_group_cancels_what_has_not_started(nb_loky, tmp_path):
    nb = nb_loky
    n = 40
    nb.sweep(gated, "c", x=list(range(n)), d=[str(tmp_path)])
    # Wait until both workers are busy: the rest is queued.
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.run"))) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cancelled = nb.cancel_group("c")
    (tmp_path / "go").touch()
    tasks = nb.fetch_group("c", wait=60_000)

    ran = {int(p.stem) for p in tmp_path.glob("*.run")}
    assert 0 < cancelled < n
    assert len(tasks) == n
    states = [t.state for t in tasks]
    assert states.count(State.CANCELLED) == cancelled
    assert states.count(State.SUCCESS) == n - cancelled
    assert {t.kwargs["x"] for t in tasks if t.state is State.SUCCESS} == ran
    for t in tasks.filter(state=State.CANCELLED):
        assert t.success is None
        assert t.result is None
        assert t.kwargs["x"] not in ran  # a cancelled task never ran
    assert nb.count_group("c") == n - cancelled
    assert nb.count_group("c", failures=True) == 0
    assert nb.result_group("c") == sorted(ran)
    counts = nb.group_counts("c")
    assert (counts.cancelled, counts.queued, counts.running) == (cancelled, 0, 0)
    assert counts.settled
    assert nb.cancel_group("c") == 0  # nothing left to cancel
    # resume does not bring cancelled tasks back
    assert nb.resume_group("c") == 0
    assert {int(p.stem) for p in tmp_path.glob("*.run")} == ran
    # Monitor files are reused by later batches, but not those the cancel
    # flagged: the calls of another group all run.
    nb.sweep(gated, "after", x=list(range(8)), d=[str(tmp_path)])
    assert sorted(nb.result_group("after", wait=60_000)) == list(range(8))
    assert nb.group_counts("after").cancelled == 0


def test_cancel_unknown_or_finished_group_is_zero(nb, tmp_path):
    (tmp_path / "go").touch()
    assert nb.cancel_group("nothing-here") == 0
    nb.sweep(gated, "done", x=[1, 2], d=[str(tmp_path)])
    nb.result_group("done", wait=60_000)
    assert nb.cancel_group("done") == 0
    assert nb.count_group("done") == 2


def test_wait_ends_when_the_rest_is_cancelled(nb_loky, tmp_path):
    nb = nb_loky
    nb.sweep(gated, "w", x=list(range(30)), d=[str(tmp_path)])
    while not list(tmp_path.glob("*.run")):
        time.sleep(0.01)
    n = nb.cancel_group("w")
    (tmp_path / "go").touch()
    results = nb.result_group("w", wait=-1)  # returns: cancelled tasks settle the group
    assert len(results) == 30 - n
    assert Path(tmp_path / "go").exists()


def gated_after(x, d, free):
    """Calls below ``free`` return at once; the others wait for the gate."""
    if x < free:
        with open(os.path.join(d, f"{x}.run"), "a") as f:
            f.write("run\n")
        return x
    return gated(x, d)


def test_cancel_reaches_batches_whose_first_calls_finished(nb_loky, tmp_path):
    """A batch whose first calls are done (their results come back with the
    batch) and whose next one runs: the calls after it are cancelled, counted
    exactly, and never start."""
    nb = nb_loky
    n, free = 40, 6
    nb.sweep(gated_after, "part", x=list(range(n)), d=[str(tmp_path)], free=[free])
    deadline = time.monotonic() + 60
    while len({int(p.stem) for p in tmp_path.glob("*.run")} - set(range(free))) < 2:
        assert time.monotonic() < deadline  # both workers held by the gate
        time.sleep(0.01)
    started = {int(p.stem) for p in tmp_path.glob("*.run")}
    cancelled = nb.cancel_group("part")
    assert cancelled == n - len(started)  # exact: every call not begun
    (tmp_path / "go").touch()
    tasks = nb.fetch_group("part", wait=60_000)
    ran = {int(p.stem) for p in tmp_path.glob("*.run")}
    assert ran == started  # nothing started after the cancel
    assert [t.state for t in tasks].count(State.CANCELLED) == cancelled
    assert {t.kwargs["x"] for t in tasks if t.state is State.SUCCESS} == ran
