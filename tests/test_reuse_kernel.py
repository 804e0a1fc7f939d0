"""reuse=True in real kernels (nbclient): a re-run cell and a restarted kernel reuse.

Kernel 1 runs a 50-call cell twice; kernel 2 (a new process on the same
store, the function now defined in a cell of its own) runs it again. Each
call appends a line to a log file: only the first execution may write.
"""

import json

import nbformat

from tests.jupyter_env import run_notebook

SETUP = """
import json, os
import nbgroups
nbgroups.configure(store=os.environ["REUSE_STORE"], workers=2, progress=False)
LOG = os.environ["REUSE_LOG"]
"""

DEFINE = """
def square(x):
    with open(LOG, "a") as fh:
        fh.write(f"{x}\\n")
    return x * x
"""

SUBMIT = """
ids = [nbgroups.async_task(square, x, group="kernel-fifty", reuse=True) for x in range(50)]
results = nbgroups.result_group("kernel-fifty", wait=-1)
c = nbgroups.group_counts("kernel-fifty")
tasks = len(nbgroups.fetch_group("kernel-fifty"))
print(json.dumps({"ids": ids, "results": results, "tasks": tasks,
                  "submitted": c.submitted, "done": c.done, "reused": c.reused}))
"""


def _notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    return nb


def _report(cell):
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1])


def _log_lines(path):
    return path.read_text().split() if path.exists() else []


def test_rerun_cell_and_new_kernel_reuse_every_finished_call(tmp_path):
    log = tmp_path / "calls.log"
    env = {"REUSE_STORE": str(tmp_path / "store"), "REUSE_LOG": str(log)}

    # kernel 1: the cell that defines and submits, executed twice
    first = run_notebook(_notebook(SETUP, DEFINE + SUBMIT, DEFINE + SUBMIT), tmp_path, env=env)
    one, again = _report(first.cells[1]), _report(first.cells[2])
    assert one["results"] == [x * x for x in range(50)]
    assert sorted(map(int, _log_lines(log))) == list(range(50))  # each call ran once
    assert again["ids"] == one["ids"]
    assert (again["tasks"], again["submitted"], again["done"]) == (50, 50, 50)
    assert again["reused"] == 50

    # kernel 2: a new process; the function is now defined in a cell of its own
    second = run_notebook(_notebook(SETUP, "# moved here\n\n" + DEFINE, SUBMIT), tmp_path,
                          env=env)
    after = _report(second.cells[2])
    assert len(_log_lines(log)) == 50  # nothing ran in the new kernel
    assert after["ids"] == one["ids"]
    assert after["results"] == one["results"]
    assert (after["tasks"], after["submitted"], after["done"]) == (50, 50, 50)


def test_a_new_kernel_with_reuse_skips_calls_first_run_without_it(tmp_path):
    """Kernel 1 runs the sweep without reuse=True; kernel 2 turns reuse on: nothing
    runs again (the calls are keyed from what kernel 1 stored)."""
    log = tmp_path / "calls.log"
    env = {"REUSE_STORE": str(tmp_path / "store"), "REUSE_LOG": str(log)}
    plain = SUBMIT.replace(", reuse=True", "")
    first = run_notebook(_notebook(SETUP, DEFINE + plain), tmp_path, env=env)
    one = _report(first.cells[1])
    assert sorted(map(int, _log_lines(log))) == list(range(50))
    second = run_notebook(_notebook(SETUP, DEFINE + SUBMIT), tmp_path, env=env)
    after = _report(second.cells[1])
    assert len(_log_lines(log)) == 50  # nothing ran in the new kernel
    assert after["ids"] == one["ids"] and after["results"] == one["results"]
    assert (after["tasks"], after["submitted"], after["reused"]) == (50, 50, 50)
