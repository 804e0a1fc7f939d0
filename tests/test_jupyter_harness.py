"""Tests of the Jupyter test harness itself (tests/jupyter_env.py), without nbgroups.

A plain ipywidgets.IntProgress updated from a background thread must (a) be saved
with its final state by nbclient and (b) be seen moving live in JupyterLab.  If
these fail, the nbgroups notebook tests cannot be trusted either way.
"""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.jupyter_env import (
    read_progress_bars,
    run_all_cells,
    run_notebook,
    save_screenshot,
    wait_for_all_cells_run,
    wait_for_progress_bars,
    watch_progress_bars,
    widget_states,
)

STEPS = 20


def progress_notebook(steps: int = STEPS, delay: float = 0.1) -> nbformat.NotebookNode:
    """Widget displayed in one cell, driven from a thread, last cell waits for the end."""
    return new_notebook(
        cells=[
            new_code_cell(
                "import threading, time\n"
                "import ipywidgets as widgets\n"
                f"bar = widgets.IntProgress(value=0, min=0, max={steps}, description='harness')\n"
                "display(bar)"
            ),
            new_code_cell(
                "def drive():\n"
                f"    for i in range({steps}):\n"
                f"        time.sleep({delay})\n"
                "        bar.value = i + 1\n"
                "    bar.bar_style = 'success'\n"
                "worker = threading.Thread(target=drive, daemon=True)\n"
                "worker.start()"
            ),
            new_code_cell(
                "deadline = time.monotonic() + 60\n"
                "while bar.value < bar.max and time.monotonic() < deadline:\n"
                "    time.sleep(0.05)\n"
                "worker.join(5)\n"
                "print('final', bar.value, bar.max, bar.bar_style)"
            ),
        ],
        metadata={
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
            }
        },
    )


def test_nbclient_stores_final_widget_state(tmp_path):
    path = tmp_path / "progress.ipynb"
    nbformat.write(progress_notebook(), path)

    nb = run_notebook(path, tmp_path, timeout=60)

    bars = [w for w in widget_states(nb) if w["model_name"] == "IntProgressModel"]
    assert len(bars) == 1, widget_states(nb)
    state = bars[0]["state"]
    assert (state["value"], state["max"], state["bar_style"]) == (STEPS, STEPS, "success")
    assert nb.cells[-1].outputs[0]["text"].strip() == f"final {STEPS} {STEPS} success"


def test_run_notebook_passes_env(tmp_path):
    nb = new_notebook(
        cells=[new_code_cell("import os; print(os.environ['NBG_HARNESS'], os.getcwd())")]
    )
    out = run_notebook(nb, tmp_path, timeout=60, env={"NBG_HARNESS": "yes"})
    assert out.cells[0].outputs[0]["text"].split() == ["yes", str(tmp_path)]
    assert "outputs" not in nb.cells[0] or not nb.cells[0].outputs  # input left untouched


@pytest.mark.browser
def test_jupyterlab_shows_live_progress(lab_notebook, browser_page):
    page = browser_page
    lab_notebook(progress_notebook(), stem="harness-progress")

    watch_progress_bars(page)
    run_all_cells(page)
    final = wait_for_progress_bars(page, count=1, width="100%", timeout=60_000)
    wait_for_all_cells_run(page, timeout=60_000)
    final = read_progress_bars(page)
    shot = save_screenshot(page, "harness-progress")

    assert len(final["bars"]) == 1, final
    bar = final["bars"][0]
    assert bar["percent"] == 100.0 and bar["success"] and not bar["danger"], bar
    intermediate = [w for w in final["widths"] if w not in ("0%", "100%")]
    assert len(intermediate) >= 3, f"bar did not move live: {final['widths']}"
    assert shot.stat().st_size > 10_000
