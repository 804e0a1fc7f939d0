"""Clicking the progress view's Cancel while a cell awaits, in JupyterLab and headless
Debian Chromium (Playwright), level 3.

A blocking ``result_group(..., wait=-1)`` holds the kernel's event loop, so a click
on Cancel waits behind the cell. ``await nbgroups.aresult_group(..., wait=-1)``
leaves the loop free: the click reaches ``cancel_group`` while the cell is still
running, the queued tasks are cancelled, and so the wait ends early. The cell then
prints the group's counts: cancelled tasks prove the click was served during the
await (without it the cell would run every task, ~20 s, and cancel none).
"""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from tests.jupyter_env import cell_error_outputs, run_all_cells, wait_for_all_cells_run

pytestmark = pytest.mark.browser

SETUP = """\
import json, time, uuid
import nbgroups
%load_ext nbgroups
nbgroups.configure(store='store-' + uuid.uuid4().hex, workers=2, progress='widget')"""

AWAIT = """\
for i in range(40):
    nbgroups.async_task(time.sleep, 1.0, group='held')
results = await nbgroups.aresult_group('held', wait=-1)
c = nbgroups.group_counts('held')
counts = {'done': c.done, 'cancelled': c.cancelled, 'results': len(results)}
print('COUNTS ' + json.dumps(counts))"""


def test_cancel_button_works_while_a_cell_awaits(lab_notebook, browser_page):
    page = browser_page
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell(AWAIT)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    lab_notebook(nb, stem="await-cancel")
    run_all_cells(page)

    view = page.locator(".nbgroups-progress").filter(
        has=page.locator(".widget-hprogress .widget-label", has_text=re.compile(r"^held$")))
    cancel = view.locator("button", has_text="Cancel")
    cancel.wait_for(state="visible", timeout=60_000)
    # the cell awaits: its prompt shows [*] while the button is clicked
    page.wait_for_function("""() => [...document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
        .some(p => p.textContent.includes('*'))""", timeout=30_000, polling=100)
    page.wait_for_function("(b) => !b.disabled", arg=cancel.element_handle(), timeout=30_000,
                           polling=100)
    cancel.click()

    wait_for_all_cells_run(page, timeout=60_000)
    texts = page.locator(".jp-OutputArea-output").all_inner_texts()
    lines = [t for t in "\n".join(texts).splitlines() if t.startswith("COUNTS ")]
    assert lines, f"no counts printed: {texts}; errors: {cell_error_outputs(page)}"
    counts = json.loads(lines[-1][len("COUNTS "):])
    assert counts["cancelled"] > 0, counts  # the click was served while the cell awaited
    assert counts["done"] + counts["cancelled"] <= 40 and counts["done"] < 40, counts
    assert counts["results"] == counts["done"]
    # and the view ends on the final state: every task finished or cancelled
    page.wait_for_function(
        "(v) => v.querySelector('.widget-hprogress .progress-bar').style.width === '100%'",
        arg=view.element_handle(), timeout=30_000, polling=100)
