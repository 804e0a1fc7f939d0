"""Fault: an argument the worker cannot unpickle, through a real kernel (jupyter_client).

The notebook adds a folder to ``sys.path`` after the pool started and passes an
object of a class from there: the workers cannot import its module. That call
fails with an error naming what could not be loaded; the calls batched with it
run once each (issue 13, item 5; before: the batch was re-sent forever).
"""

from __future__ import annotations

import json

from tests.kernels import kernel, runs

N = 60
BAD = {7, 31, 32, 55}


def test_a_call_whose_argument_cannot_be_loaded_fails_alone(tmp_path):
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "kmod.py").write_text("class Thing:\n    def __init__(self, v):\n        self.v = v\n")
    with kernel(tmp_path) as k:
        k.setup(store, marks)
        # the pool starts, and learns that use() is fast: its next batches are large
        k.run("""
def use(x, marks, thing=None):
    return mark(x, marks)

nbgroups.result_group(nbgroups.sweep(use, "warm", x=list(range(-400, 0)), marks=[MARKS]),
                      wait=60_000)
""")
        out = k.run(f"""
import json, sys
sys.path.insert(0, {str(src)!r})
import kmod
ids = [nbgroups.async_task(use, x, MARKS, kmod.Thing(x) if x in {sorted(BAD)!r} else None,
                           group="poison")
       for x in range({N})]
results = nbgroups.result_group("poison", wait=30_000)  # ends: no batch re-sent forever
tasks = nbgroups.fetch_group("poison")
print(json.dumps({{"results": results, "count": len(tasks),
                  "errors": {{t.args[0]: t.error for t in tasks if not t.success}}}}))
from nbgroups import api
from nbgroups.dispatch import BatchSizer
# how many calls of use() went in a batch of these 60
print(json.dumps({{"batches": max(BatchSizer().size(s, {N}, 2)
                                 for s in api.runner().stats().funcs.values())}}))
""", timeout=90)
    lines = out.splitlines()
    report, stats = json.loads(lines[0]), json.loads(lines[1])
    assert report["count"] == N
    assert sorted(report["results"]) == sorted(set(range(N)) - BAD)
    errors = report["errors"]
    assert sorted(int(x) for x in errors) == sorted(BAD), errors
    for text in errors.values():
        assert "could not be loaded in the worker" in text and "kmod" in text, text
    counted = runs(marks)
    assert all(n == 1 for n in counted.values()), {x: n for x, n in counted.items() if n > 1}
    assert {x for x in counted if x >= 0} == set(range(N)) - BAD  # the others ran, once
    assert stats["batches"] > 1  # the bad calls were batched with others
