"""Issue 14 through a real kernel (nbclient): a notebook whose function prints,
logs, reports progress and raises on some grid points. The records, the printed
triage and the saved widget state show each task's output, each failure's
arguments, the raising line's source (``Cell In[n]``) and the worker's pid;
``nbgroups.debug`` raises the original exception in the kernel."""

from __future__ import annotations

import os
import re

import nbformat
import pytest

from tests.jupyter_env import run_notebook
from tests.test_notebooks import _text, progress_views, widget_states

CELLS = [
    """\
%load_ext nbgroups
import logging, os
import nbgroups
from nbgroups import api
logging.getLogger().setLevel(logging.WARNING)  # the kernel's own; workers capture INFO
nbgroups.configure(store='.nbgroups-insight', workers=2)""",
    """\
log = logging.getLogger('sim')

def simulate(k, dt):
    print(f'simulating k={k} dt={dt}')
    log.info('in pid %d', os.getpid())
    for i in range(10):
        nbgroups.report(i + 1, 10, note=f'step {i + 1}')
    if k <= 0:
        raise ValueError(f'k must be > 0, got k={k}')
    return k * dt""",
    "g = nbgroups.sweep(simulate, 'grid', k=[0.0, 1.0, -1.0, 2.0], dt=[0.01, 0.1])",
    """\
nbgroups.result_group('grid', wait=-1, failures=True)
tasks = nbgroups.fetch_group('grid')
for t in tasks:
    print('TASK', t.call, t.success, t.worker, repr(t.stdout), repr(t.stderr))
print('POOL', sorted(api.runner().executor.worker_pids()))""",
    "print(tasks.failures())",
    "failed = tasks.filter(success=False)\nprint(failed[0].traceback)",
    "nbgroups.debug(failed[0])",
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("insight-nb")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.cells[-1].metadata["tags"] = ["raises-exception"]
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", str(base / "xdg-config"))
        for var in [v for v in os.environ if v.startswith("NBGROUPS_")]:
            mp.delenv(var)
        return run_notebook(nb, workdir, timeout=120)


def _out(nb, i: int) -> str:
    return "".join(o.get("text", "") for o in nb.cells[i].outputs if o.output_type == "stream")


def test_records_hold_each_tasks_output_and_worker(executed):
    out = _out(executed, 3)
    pool = {int(p) for p in re.search(r"POOL \[(.*)\]", out).group(1).split(", ")}
    rows = re.findall(r"TASK (simulate\(.*?\)) (True|False) (\S+):(\d+) '(.*?)' '(.*?)'", out)
    assert len(rows) == 8, out
    for call, success, _host, pid, stdout, stderr in rows:
        k, dt = re.fullmatch(r"simulate\(k=(.*), dt=(.*)\)", call).groups()
        assert stdout == f"simulating k={k} dt={dt}\\n"
        assert stderr == f"INFO sim: in pid {pid}\\n"  # logged in the worker that ran it
        assert int(pid) in pool
        assert (success == "True") == (float(k) > 0)


def test_failures_are_triaged_by_cause_with_arguments(executed):
    lines = _out(executed, 4).splitlines()
    assert lines[0] == "ValueError: k must be > 0, got k=\u2026  \u00d7 4"
    assert lines[1:] == ["  simulate(k=0.0, dt=0.01)", "  simulate(k=0.0, dt=0.1)",
                         "  simulate(k=-1.0, dt=0.01)", "  simulate(k=-1.0, dt=0.1)"]


def test_traceback_shows_the_cell_and_its_source_line(executed):
    tb = _out(executed, 5)
    assert re.search(r"Cell In\[2\], line 9, in simulate\n"
                     r"    raise ValueError\(f'k must be > 0, got k=\{k\}'\)\n", tb), tb
    assert tb.rstrip().endswith("ValueError: k must be > 0, got k=0.0")
    assert "nbgroups" not in tb and "<dynamic-code>" not in tb


def test_saved_widget_shows_grouped_failures_with_output(executed):
    (view,) = [v for v in progress_views(executed) if v["group"] == "grid"]
    assert view["counts"]["failed"] == 4 and view["bar_style"] == "danger", view
    assert "ValueError: k must be > 0, got k=\u2026  \u00d7 4" in view["texts"], view["texts"]
    html = " ".join(_text(m["state"].get("value", "")) for m in widget_states(executed)
                    if m["model_name"] == "HTMLModel")
    assert "simulate(k=-1.0, dt=0.1)" in html
    assert "Cell In[2], line 9, in simulate" in html
    assert "simulating k=-1.0 dt=0.1" in html and "INFO sim: in pid" in html
    assert "nbgroups.debug(" in html


def test_debug_raises_the_original_exception_in_the_kernel(executed):
    (err,) = [o for o in executed.cells[6].outputs if o.output_type == "error"]
    assert err.ename == "ValueError" and err.evalue == "k must be > 0, got k=0.0"
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(err.traceback))
    assert "Cell In[2], line 9" in text and "raise ValueError(f'k must be > 0" in text
