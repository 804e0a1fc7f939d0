"""The sweep notebook in JupyterLab, in headless Debian Chromium (Playwright), level 3.

What a person sees: the progress view moves live while the kernel is idle (the
sweep cell returned, nothing else runs) and while a cell is blocked in
``result_group(..., wait=-1)``; it ends full, in the failure style, with the
failing tasks' exceptions listed. The notebook is run as a person would: first
the cells above the waiting cell (the sweep then runs with the kernel idle),
then the sweep cell again and everything below it (the sweep runs while the
next cell waits for it; then the failures are retried).

Each point is made slower than in the committed notebook (more Monte Carlo
paths), so each phase lasts a few seconds and intermediate widths can be seen
on a slow machine.
"""

from __future__ import annotations

import re
import time
import urllib.error
from typing import Any

import nbformat
import pytest

from tests.jupyter_env import (
    REPO_ROOT,
    cell_error_outputs,
    run_all_cells,
    save_screenshot,
    wait_for_all_cells_run,
    wait_for_kernel_idle,
)

pytestmark = pytest.mark.browser

SWEEP = REPO_ROOT / "notebooks" / "sweep.ipynb"
PATHS_LINE = "N_PATHS = 2_000"
BROWSER_PATHS = 10_000

# The cells the test drives, found by their code.
SWEEP_CELL = "nbgroups.sweep(simulate, 'grid'"
FIRST_WAIT = "results = nbgroups.result_group('grid', wait=-1)"
RETRY_CELL = "retry_group('grid')"
RETRY_WAIT = "nbgroups.result_group('grid', wait=-1)\ndf ="

# Records every width each progress bar takes, with what the notebook was doing at
# that moment: `busy` is the code of the first cell whose prompt shows [*] (running;
# those after it are queued), null when no cell runs (the kernel is idle).
_RECORD_JS = """() => {
    if (window.__nbgRecorder) return;
    window.__nbgEvents = [];
    const last = new Map();
    const panel = () => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    const busyCell = () => {
        for (const cell of panel().querySelectorAll('.jp-CodeCell')) {
            const prompt = cell.querySelector('.jp-InputPrompt');
            if (prompt && prompt.textContent.includes('*')) {
                const lines = [...cell.querySelectorAll('.jp-InputArea-editor .cm-line')];
                return lines.map(l => l.textContent).join('\\n');
            }
        }
        return null;
    };
    const record = () => {
        const bars = [...document.querySelectorAll('.widget-hprogress .progress-bar')];
        bars.forEach((bar, i) => {
            const view = bar.closest('.nbgroups-progress');
            const title = view && view.querySelector('.widget-hprogress .widget-label');
            const group = title ? title.textContent.trim() : null;
            const w = bar.style.width;
            const danger = bar.classList.contains('progress-bar-danger');
            const key = w + (danger ? '!' : '');
            if (!w || last.get(bar) === key) return;
            last.set(bar, key);
            window.__nbgEvents.push({bar: i, group, width: w, danger, busy: busyCell(),
                                     t: performance.now()});
        });
    };
    window.__nbgRecorder = new MutationObserver(record);
    window.__nbgRecorder.observe(document.body, {
        subtree: true, childList: true, attributes: true, attributeFilter: ['style', 'class'],
    });
    record();
}"""


def sweep_variant() -> Any:
    nb = nbformat.read(SWEEP, as_version=4)
    setup = [c for c in nb.cells if c.cell_type == "code" and PATHS_LINE in c.source]
    assert len(setup) == 1, f"{SWEEP.name} no longer sets {PATHS_LINE!r}"
    setup[0].source = setup[0].source.replace(PATHS_LINE, f"N_PATHS = {BROWSER_PATHS}")
    return nb


def code_cell(page: Any, snippet: str) -> Any:
    """The notebook's code cell whose code contains ``snippet``."""
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
    for i in range(cells.count()):
        lines = cells.nth(i).locator(".jp-InputArea-editor .cm-line").all_text_contents()
        if snippet in "\n".join(lines):
            return cells.nth(i)
    raise AssertionError(f"no code cell containing {snippet!r}")


def run_from_menu(page: Any, cell_snippet: str, item: str) -> None:
    """Select the cell containing ``cell_snippet``, then Run menu -> ``item``."""
    code_cell(page, cell_snippet).locator(".jp-InputPrompt").click()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-content .lm-Menu-item",
                 has_text=re.compile("^" + re.escape(item))).first.click()


def wait_until_run(page: Any, snippets: list[str], timeout: float = 120_000) -> None:
    """Wait until the cells containing ``snippets`` show an execution count and no cell
    runs or is queued; fail with the notebook's error outputs otherwise."""
    try:
        for snippet in snippets:
            prompt = code_cell(page, snippet).locator(".jp-InputPrompt")
            prompt.filter(has_text=re.compile(r"^\[\d+\]:$")).wait_for(timeout=timeout)
        page.wait_for_function(
            """() => ![...document.querySelectorAll(
                    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
                    .some(p => p.textContent.includes('*'))""",
            timeout=timeout,
            polling=100,
        )
    except Exception as e:
        raise AssertionError(f"cells did not run: {e}; errors: {cell_error_outputs(page)}") from e
    errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
                          ).filter(has_text="Traceback")
    assert errors.count() == 0, errors.all_inner_texts()


def events(page: Any, group: str = "grid") -> list[dict[str, Any]]:
    return [e for e in page.evaluate("() => window.__nbgEvents") if e["group"] == group]


def intermediate(evts: list[dict[str, Any]]) -> set[str]:
    return {e["width"] for e in evts if e["width"] not in ("0%", "100%")}


_BARS_JS = """(group) => [...document.querySelectorAll('.nbgroups-progress')].filter(v => {
        const title = v.querySelector('.widget-hprogress .widget-label');
        return title && title.textContent.trim() === group;
    }).map(v => v.querySelector('.widget-hprogress .progress-bar')).filter(b => b)"""


def bars(page: Any, group: str = "grid") -> list[dict[str, Any]]:
    """Width and failure style of the bar of every progress view of ``group``."""
    return page.evaluate(f"""(group) => ({_BARS_JS})(group).map(b => ({{width: b.style.width,
        danger: b.classList.contains('progress-bar-danger')}}))""", group)


def wait_for_bars(page: Any, count: int, group: str = "grid",
                  timeout: float = 90_000) -> list[dict[str, Any]]:
    """Wait until ``group`` has ``count`` progress views, every bar at 100%."""
    try:
        page.wait_for_function(
            f"""([group, count]) => {{
                const bars = ({_BARS_JS})(group);
                return bars.length === count && bars.every(b => b.style.width === '100%');
            }}""",
            arg=[group, count], timeout=timeout, polling=100,
        )
    except Exception as e:
        raise AssertionError(f"bars did not reach 100%: {bars(page, group)}; "
                             f"events: {events(page, group)}; "
                             f"errors: {cell_error_outputs(page)}") from e
    return bars(page, group)


HEADER = ".jupyter-widget-Collapse-header"


def failure_titles(view: Any, count: int, timeout: float = 30_000) -> list[str]:
    """The titles of a view's failure list, once it has ``count`` entries; they must
    be distinct (one entry per cause: ``ExceptionType: message  x n``, or
    ``call(args): ExceptionType: message`` for a lone failure)."""
    headers = view.locator(HEADER)
    try:
        page = view.page
        page.wait_for_function(
            """([el, n]) => el.querySelectorAll('.jupyter-widget-Collapse-header').length === n""",
            arg=[view.element_handle(), count], timeout=timeout, polling=100)
    except Exception as e:
        raise AssertionError(f"failure list: {headers.all_inner_texts()}") from e
    titles = [t.strip() for t in headers.all_inner_texts()]
    assert len(set(titles)) == count, f"failure list repeats entries: {titles}"
    return titles


def test_sweep_progress_live_in_jupyterlab(lab_notebook, browser_page):
    page = browser_page
    lab_notebook(sweep_variant(), stem="sweep-browser")
    page.evaluate(_RECORD_JS)
    view = page.locator(".nbgroups-progress").filter(
        has=page.locator(".widget-hprogress .widget-label", has_text=re.compile(r"^grid$")))

    # Phase 1, idle: run the cells above the waiting cell; the sweep cell returns at
    # once, the next cell is quick, then the kernel is idle while the sweep runs.
    run_from_menu(page, FIRST_WAIT, "Run All Above Selected Cell")
    wait_until_run(page, [SWEEP_CELL, "points submitted"])
    final = wait_for_bars(page, count=1)
    idle = [e for e in events(page) if e["busy"] is None]
    assert len(intermediate(idle)) >= 2, f"no live updates while idle: {events(page)}"
    assert final == [{"width": "100%", "danger": True}], final
    save_screenshot(page, "sweep-browser-1-idle")
    # the failure list: one entry per cause, its shared exception line and count
    titles = failure_titles(view.first, 2)
    assert any("ValueError: unstable step" in t and t.endswith("\u00d7 4") for t in titles), titles
    assert any("ValueError: k must be > 0" in t and t.endswith("\u00d7 5") for t in titles), titles
    mark = len(events(page))

    # Phase 2, blocked: re-run the sweep cell and everything below it; the sweep starts
    # afresh and the next cell but one waits in result_group(..., wait=-1) while it runs.
    run_from_menu(page, SWEEP_CELL, "Run Selected Cell and All Below")
    # (the last cell first: it never ran before, so its count means this run got there)
    wait_until_run(page, ["for group in [", SWEEP_CELL, FIRST_WAIT, RETRY_CELL,
                          RETRY_WAIT])
    wait_for_kernel_idle(page)
    final = wait_for_bars(page, count=2)
    blocked = [e for e in events(page)[mark:] if e["busy"] and FIRST_WAIT in e["busy"]]
    assert len(intermediate(blocked)) >= 2, f"no live updates while blocked: {events(page)}"
    # both views end full, in the failure style; each lists its own run's failures:
    # the sweep's view keeps the first run's nine, the retry's view the invalid k = 0
    # points that fail again
    assert final == [{"width": "100%", "danger": True}] * 2, final
    titles = failure_titles(view.first, 2)  # one entry per cause
    assert any("ValueError: unstable step" in t and t.endswith("\u00d7 4") for t in titles), titles
    titles = failure_titles(view.last, 1)
    assert "ValueError: k must be > 0" in titles[0] and titles[0].endswith("\u00d7 5"), titles

    # the full traceback on demand: open the first failure of the last view
    header = view.last.locator(HEADER).first
    header.click()
    trace = view.last.locator("pre").filter(has_text="Traceback (most recent call last)")
    trace.first.wait_for(timeout=30_000)
    assert "ValueError: k must be > 0" in trace.first.inner_text()
    shot = save_screenshot(page, "sweep-browser-2-final")
    assert shot.stat().st_size > 10_000


def test_running_tasks_own_progress_and_grouped_failures(lab_notebook, browser_page, tmp_path):
    """Issue 14 in JupyterLab: a running task's nbgroups.report() shows under its
    group's bar; once released, its failures appear grouped by cause."""
    page = browser_page
    release = tmp_path / "release"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [
        "%load_ext nbgroups\nimport os, time\nimport nbgroups\n"
        "nbgroups.configure(store='.nbgroups-report', workers=2)",
        "def crunch(k, release):\n"
        "    for i in range(100):\n"
        "        nbgroups.report(i + 1, 100, note=f'step {i + 1}')\n"
        "    while not os.path.exists(release):\n"
        "        nbgroups.report(100, 100, note='holding')\n"
        "        time.sleep(0.05)\n"
        "    if k < 0:\n"
        "        raise ValueError(f'k must be >= 0, got k={k}')\n"
        "    return k",
        f"g = nbgroups.sweep(crunch, 'live', k=[-2, -1, 3], release=[{str(release)!r}])",
    ]]
    lab_notebook(nb, stem="report-browser")
    run_from_menu(page, "%load_ext nbgroups", "Run Selected Cell and All Below")
    view = page.locator(".nbgroups-progress").filter(
        has=page.locator(".widget-hprogress .widget-label", has_text=re.compile(r"^live$")))
    lines = view.locator(".nbgroups-task-progress")
    lines.filter(has_text="holding").first.wait_for(timeout=90_000)
    text = lines.first.inner_text()
    assert "crunch(k=" in text and "100%" in text and "holding" in text, text
    save_screenshot(page, "report-browser-1-running")
    release.touch()
    # the failures land one by one: wait for both under one cause
    view.first.locator(HEADER, has_text="\u00d7 2").wait_for(timeout=90_000)
    titles = failure_titles(view.first, 1)
    # (shown as HTML: the two spaces before the count read as one)
    assert titles[0] == "ValueError: k must be >= 0, got k=\u2026 \u00d7 2", titles


def _saved_outputs(server: Any, relpath: str, group: str) -> list[str]:
    """text/plain of the saved notebook's views of ``group`` (what GitHub shows)."""
    try:
        nb = server.api("GET", f"/api/contents/{relpath}?content=1")["content"]
    except urllib.error.HTTPError as e:  # read while JupyterLab writes it: not yet
        if e.code != 400:
            raise
        return []
    return [out["data"]["text/plain"] for cell in nb["cells"] if cell["cell_type"] == "code"
            for out in cell.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
            and out["data"].get("text/plain", "").startswith(group + " ")]


def test_saved_notebook_holds_the_final_state_of_views(lab_notebook, browser_page,
                                                       jupyterlab_server):
    """A reader without widget state (GitHub, nbconvert, or JupyterLab with its
    saveState setting turned off) sees the static rendering beside the widget, which
    must be the final one, also for a group that settled while the kernel was idle
    (its cell long finished). test_browser_saved.py covers the widget state."""
    page = browser_page
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(
            "%load_ext nbgroups\nimport time, nbgroups\n"
            "nbgroups.configure(store='.nbgroups-saved', workers=2)\n"
            "for g in ('idle', 'waited'):\n"
            "    nbgroups.delete_group(g, tasks=True)"),
        nbformat.v4.new_code_cell(
            "nbgroups.sweep(lambda x: (time.sleep(0.4), x)[1], 'idle', x=range(8))"),
        nbformat.v4.new_code_cell(
            "nbgroups.sweep(lambda x: x, 'waited', x=range(5))\n"
            "len(nbgroups.result_group('waited', wait=-1))"),
    ])
    relpath = lab_notebook(nb, stem="saved-static")
    run_all_cells(page)
    wait_for_all_cells_run(page)
    wait_for_bars(page, count=1, group="idle")
    wait_for_bars(page, count=1, group="waited")
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.click()
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while not (_saved_outputs(jupyterlab_server, relpath, "idle")
               and _saved_outputs(jupyterlab_server, relpath, "waited")):
        assert time.monotonic() < deadline, "the notebook was not saved"
        time.sleep(0.2)
    (idle,) = _saved_outputs(jupyterlab_server, relpath, "idle")
    (waited,) = _saved_outputs(jupyterlab_server, relpath, "waited")
    assert waited.startswith("waited 100%|") and "5/5 [done 5," in waited, waited
    assert idle.startswith("idle 100%|") and "8/8 [done 8," in idle, idle
