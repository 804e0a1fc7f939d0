"""Fault: Jupyter's Interrupt (SIGINT to the kernel's process group) while a loop
submits and reads, through a real kernel (jupyter_client).

Every id a call returned is stored and runs exactly once; no later wait raises
a stale StoreError (issue 13, item 1). Runs are counted with marker files.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from tests.kernels import kernel, runs

# its waits inside the kernel (up to 120 s) must fail before pytest-timeout does
pytestmark = pytest.mark.timeout(300)

LOOP = """
try:
    while True:
        x = next(counter)
        tid = nbgroups.async_task(mark, x, MARKS, group="intr")
        got[x] = tid
        nbgroups.fetch(tid)  # a read: it flushes (the page of its id is stored first)
        if x % 10 == 0:
            nbgroups.result(tid, wait=-1)
finally:
    rounds.append(x)
"""

ROUNDS = 12


def test_interrupts_lose_no_returned_id(tmp_path):
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    rng = random.Random(13)
    with kernel(tmp_path) as k:
        k.setup(store, marks)
        k.run("import itertools\ncounter = itertools.count()\ngot = {}\nrounds = []")
        done = 0
        while done < ROUNDS:
            msg = k.start(LOOP)
            # a random moment inside the loop (it submits thousands of calls a
            # second), then Interrupt; no event to wait for: the moment is the test
            time.sleep(rng.uniform(0.1, 0.5))
            k.km.interrupt_kernel()
            reply = k.reply(msg)
            if reply["status"] == "aborted":
                continue  # sent while ipykernel still aborted requests after the last error
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
            done += 1
        out = k.run("""
import json
from nbgroups import api
results = nbgroups.result_group("intr", wait=90_000)   # no stale StoreError
missing = [x for x, tid in got.items() if nbgroups.fetch(tid) is None]
r = api.runner()  # what the runner holds, should the group not have settled
state = {"counts": repr(nbgroups.group_counts("intr")), "busy": r.busy("intr", None),
         "pending": sorted(r.pending_ids())[:20], "stats": repr(r.stats()),
         "page_error": repr(r.page_error), "store_error": repr(r.store_error)}
print(json.dumps({"got": got, "missing": missing, "results": results, "state": state,
                  "count": nbgroups.count_group("intr"), "submitted": next(counter)}))
""", timeout=150)
    report = json.loads(out)
    assert not report["state"]["busy"], report["state"]  # the group settled
    got = {int(x): tid for x, tid in report["got"].items()}
    assert report["missing"] == []  # every returned id is stored
    counted = runs(marks)
    assert all(n == 1 for n in counted.values()), {x: n for x, n in counted.items() if n > 1}
    assert set(got) <= set(counted), sorted(set(got) - set(counted))[:10]  # and ran
    # a call the interrupt cut short returned no id (or its id was not kept): at
    # most one per interrupt, and it ran at most once (checked above)
    assert len(set(counted) - set(got)) <= ROUNDS
    assert report["count"] == len(counted) == len(report["results"])
    assert len(got) > 100
    print(f"interrupts: {len(got)} ids returned across {ROUNDS} interrupts, "
          "all stored and run once")
