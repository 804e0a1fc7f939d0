"""Issue 14 on the Dask backend, on a real LocalCluster (conftest's ``dask_cluster``):
``nbgroups.report()`` and live output from tasks on Dask workers reach the
notebook's views. A worker sends them as events (``Worker.log_event``,
rate-limited where they are made); the client writes them to the batch's
monitor file, where the runner reads those of loky's workers."""

from __future__ import annotations

import os
import time

import pytest

import nbgroups
from nbgroups import api, display

pytestmark = pytest.mark.timeout(300)


def hold(n, release):
    for i in range(n):
        nbgroups.report(i + 1, n, note=f"step {i + 1}")
    print("ready on dask")
    while not os.path.exists(release):
        nbgroups.report(n, n, note="holding")
        time.sleep(0.01)
    return n


@pytest.fixture
def nbd(dask_cluster, store_dir):
    _, client = dask_cluster
    client.wait_for_workers(2, timeout=60)
    api.reset()
    nbgroups.configure(store=str(store_dir), backend="dask", client=client, progress=False,
                       live_output=True)
    yield nbgroups
    api.reset()


def test_report_and_live_output_from_a_dask_worker(nbd, tmp_path):
    release = str(tmp_path / "go")
    tid = nbgroups.async_task(hold, 500, release, group="dask-rep")
    r = api.runner()
    assert r.wait(lambda: any(p[4] == "holding" for p in r.task_progress("dask-rep")), 60)
    (got,) = r.task_progress("dask-rep")
    assert got[0] == tid and got[2:] == (500.0, 500.0, "holding")
    assert got[1].startswith("hold(500, ")
    view = display.progress("dask-rep", mode="widget", display=False)
    view.refresh(force=True)
    assert "holding" in view.adapter.tasks_html.value
    # its printed line too, while it still runs
    assert r.wait(lambda: any("ready on dask" in line
                              for line in api.SESSION.live_output("dask-rep").lines), 60)
    assert nbgroups.fetch(tid).success is None
    open(release, "w").close()
    assert nbgroups.result(tid, wait=-1) == 500
    assert r.task_progress("dask-rep") == []


def test_a_call_that_reported_says_when_it_ended():
    """Calls of one batch run one after the other on a Dask worker, whose batch is
    stamped only before its last call: a call that reported sends an end marker
    (call -1), which the runner shows as nothing, so its last report is not shown
    while the next call runs."""
    from nbgroups import reporting

    sent = []
    reporting.enter(None, 7, [("a",), ("b",)], sent.append)
    try:
        reporting.current.index = 0
        nbgroups.report(1, 2, note="half")
        reporting.call_ended()
        reporting.current.index = 1  # a call that does not report: no marker
        reporting.call_ended()
    finally:
        reporting.leave()
    assert sent[0] == {"progress": (0, 1.0, 2.0, "half")}
    assert len(sent) == 2 and sent[1]["progress"][0] == -1
