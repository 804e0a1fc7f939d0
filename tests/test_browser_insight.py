"""Issue 14's widget parts in JupyterLab, in headless Debian Chromium (Playwright):
a running task's printed lines appear in its group's view while it still runs
(the ``live_output`` setting); the Timeline toggle shows the group's Gantt; a
failure's Debug button re-runs its call in the kernel and shows what it raised."""

from __future__ import annotations

import re

import nbformat
import pytest

from tests.jupyter_env import save_screenshot
from tests.test_browser import HEADER, run_from_menu

pytestmark = pytest.mark.browser


def _view(page, group):
    return page.locator(".nbgroups-progress").filter(
        has=page.locator(".widget-hprogress .widget-label", has_text=re.compile(f"^{group}$")))


def test_live_output_timeline_and_debug_in_jupyterlab(lab_notebook, browser_page, tmp_path):
    page = browser_page
    gate = tmp_path / "gate"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [
        "%load_ext nbgroups\nimport os, time\nimport nbgroups\n"
        "nbgroups.configure(store='.nbgroups-insight-browser', workers=2, live_output=True)\n"
        "for g in ('talk', 'sim'):\n"
        "    nbgroups.delete_group(g, tasks=True)",
        "def talk(gate):\n"
        "    for i in range(3):\n"
        "        print(f'step {i} of the task')\n"
        "    while not os.path.exists(gate):\n"
        "        time.sleep(0.05)\n"
        "    print('released')\n"
        "    return 'done'\n"
        "\n"
        "def simulate(k, dt):\n"
        "    if k <= 0:\n"
        "        raise ValueError(f'k must be > 0, got k={k}')\n"
        "    return k * dt",
        f"t = nbgroups.async_task(talk, {str(gate)!r}, group='talk')",
        "g = nbgroups.sweep(simulate, 'sim', k=[0.0, 1.0, 2.0], dt=[0.1])\n"
        "len(nbgroups.result_group('sim', wait=-1))",
    ]]
    lab_notebook(nb, stem="insight-browser")
    run_from_menu(page, "%load_ext nbgroups", "Run Selected Cell and All Below")

    # live output: the task's lines show while it waits for the gate, which only
    # this test opens, after it saw them
    talk = _view(page, "talk")
    output = talk.locator(".nbgroups-live-output")
    output.filter(has_text="step 2 of the task").first.wait_for(timeout=90_000)
    text = output.first.inner_text()
    assert "talk(" in text and "step 0 of the task" in text and "released" not in text, text
    assert talk.first.locator(".widget-hprogress .progress-bar").get_attribute(
        "style") is not None
    save_screenshot(page, "insight-browser-1-live-output")
    gate.touch()
    output.filter(has_text="released").first.wait_for(timeout=60_000)

    # the timeline, on demand
    sim = _view(page, "sim").first
    sim.locator(HEADER).first.wait_for(timeout=90_000)
    assert sim.locator(".nbgroups-timeline").count() == 0
    sim.get_by_role("button", name="Timeline").click()
    svg = sim.locator(".nbgroups-timeline svg")
    svg.wait_for(timeout=30_000)
    assert svg.locator("rect").count() >= 3

    # Debug: open the failure, click its button; the exception shows in the view
    sim.locator(HEADER).first.click()
    sim.get_by_role("button", name="Debug").first.click()
    shown = sim.locator(".nbgroups-debug-output")
    # the hint comes last, after the traceback: wait for it, not for the exception
    shown.filter(has_text="%debug").first.wait_for(timeout=30_000)
    text = shown.first.inner_text()
    assert "k must be > 0, got k=0.0" in text, text
    assert "ValueError" in text and "%debug" in text, text
    save_screenshot(page, "insight-browser-2-timeline-debug")
