"""The futures and asyncio adapters in a real kernel (nbclient), with top-level ``await``.

Cells await ``aresult_group``, ``aresult``, ``asyncio.wrap_future`` of an
``Executor`` future and ``async for`` over ``as_completed``, as a notebook user
writes them; while one awaits, another coroutine on the kernel's event loop
keeps running (the loop is not held, which is what lets widget messages in),
and the joblib backend runs scikit-learn's ``n_jobs`` there too.
"""

from __future__ import annotations

import json

import nbformat
import pytest

from tests.jupyter_env import run_notebook

# its waits inside the kernel (up to 120 s) must fail before pytest-timeout does
pytestmark = pytest.mark.timeout(300)

CELLS = [
    """\
import asyncio, json, math, time
import nbgroups
nbgroups.configure(store='store', workers=2, progress=False)
out = {}""",
    """\
ex = nbgroups.Executor(group='aw')
futures = [ex.submit(math.modf, i + 0.5) for i in range(20)]
out['group'] = await nbgroups.aresult_group('aw', wait=-1, count=20)""",
    """\
out['wrapped'] = await asyncio.wrap_future(ex.submit(pow, 2, 10))
out['executor'] = await asyncio.get_running_loop().run_in_executor(ex, abs, -7)
out['completed'] = sorted([t.id async for t in nbgroups.as_completed('aw', timeout=60)])
out['ids'] = sorted(t.id for t in nbgroups.fetch_group('aw'))""",
    """\
# the loop stays free while a cell awaits: a ticker coroutine keeps running
ticks = 0
async def ticker():
    global ticks
    while True:
        ticks += 1
        await asyncio.sleep(0.005)
ticking = asyncio.ensure_future(ticker())
tid = nbgroups.async_task(time.sleep, 0.5, group='slow')
await asyncio.sleep(0)
before = ticks
out['slept'] = (await nbgroups.afetch(tid, wait=-1)).success
out['ticked'] = ticks - before
ticking.cancel()""",
    """\
import joblib, nbgroups.joblib_backend
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
X, y = make_classification(n_samples=100, random_state=0)
with joblib.parallel_config(backend='nbgroups', group='cv'):
    out['cv'] = list(cross_val_score(LogisticRegression(), X, y, cv=3, n_jobs=-1))
out['cv_rows'] = nbgroups.count_group('cv')
out['cv_loky'] = list(cross_val_score(LogisticRegression(), X, y, cv=3, n_jobs=2))
print(json.dumps(out, default=str))""",
]


def test_top_level_await_in_a_kernel(tmp_path, tmp_path_factory):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    env = {"XDG_CONFIG_HOME": str(tmp_path_factory.getbasetemp() / "xdg-config")}
    with pytest.MonkeyPatch.context() as mp:
        import os

        for var in [v for v in os.environ if v.startswith("NBGROUPS_")]:
            mp.delenv(var)
        done = run_notebook(nb, tmp_path, timeout=120, env=env)
    printed = "".join(o.get("text", "") for o in done.cells[-1].outputs
                      if o.output_type == "stream")
    out = json.loads(printed)
    assert len(out["group"]) == 20 and out["group"][0] == [0.5, 0.0]
    assert out["wrapped"] == 1024 and out["executor"] == 7
    assert out["completed"] == out["ids"] and len(out["ids"]) == 22  # 20 + the two above
    assert out["slept"] is True
    assert out["ticked"] > 0, "the event loop was held while the cell awaited"
    assert out["cv"] == out["cv_loky"] and out["cv_rows"] == 3
