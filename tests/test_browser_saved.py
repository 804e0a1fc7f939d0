"""A notebook saved in JupyterLab and opened again without its kernel shows each
progress view's final state, in headless Debian Chromium (Playwright), level 3.

JupyterLab saves widget state only when its setting "Save Widget State
Automatically" (``@jupyter-widgets/jupyterlab-manager:plugin`` ``saveState``) is
on; it is off by default, and every view of a reopened notebook then read "Error
displaying widget: model not found" (the static fallback nbgroups adds is not
shown while the widget's mime type is there). Installing nbgroups turns that
default on (``etc/jupyter/labconfig/default_setting_overrides.d/nbgroups.json``);
this test saves with Ctrl+S, shuts the kernel down, and reopens the file.
"""

from __future__ import annotations

import json
import re
import time

import nbformat
import pytest

from tests.jupyter_env import (
    WIDGET_STATE_MIME,
    open_notebook_in_lab,
    run_all_cells,
    wait_for_all_cells_run,
    wait_for_progress_bars,
)

pytestmark = pytest.mark.browser

SETUP = """\
import uuid
import nbgroups
%load_ext nbgroups
nbgroups.configure(store='store-' + uuid.uuid4().hex, workers=2, progress='widget')"""

SWEEP = """\
def f(k):
    if k == 2:
        raise ValueError('k=2 is bad')
    return k
nbgroups.sweep(f, 'kept', k=range(8))"""

WAIT = "print(len(nbgroups.result_group('kept', wait=-1)), 'results')"


def test_a_saved_notebook_reopened_without_its_kernel_shows_the_final_view(
        lab_notebook, browser_page, jupyterlab_server):
    page = browser_page
    settings = jupyterlab_server.api(
        "GET", "/lab/api/settings/@jupyter-widgets/jupyterlab-manager:plugin")
    assert settings["schema"]["properties"]["saveState"]["default"] is True

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (SETUP, SWEEP, WAIT)]
    relpath = lab_notebook(nb, stem="saved")
    run_all_cells(page)
    wait_for_all_cells_run(page)
    wait_for_progress_bars(page, count=1, width="100%")

    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-InputArea-prompt"
                 ).first.click()
    page.keyboard.press("Control+s")
    path = jupyterlab_server.root_dir / relpath
    deadline = time.monotonic() + 30
    saved: dict = {}
    while time.monotonic() < deadline:  # the save is the browser's: poll the file
        saved = json.loads(path.read_text())
        if WIDGET_STATE_MIME in saved["metadata"].get("widgets", {}):
            break
        time.sleep(0.2)
    models = saved["metadata"].get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    bars = [m["state"] for m in models.values() if m["model_name"].endswith("ProgressModel")]
    assert bars and all(b["value"] == b["max"] == 8 for b in bars), bars

    assert jupyterlab_server.delete_sessions_for(relpath) == 1  # the kernel is gone
    open_notebook_in_lab(page, jupyterlab_server, relpath)  # a fresh kernel, no models
    view = page.locator(".nbgroups-progress").first
    view.wait_for(state="visible", timeout=30_000)
    text = view.inner_text()
    assert re.search(r"done\s*7", text) and re.search(r"failed\s*1", text), text
    assert "model not found" not in page.locator(".jp-Notebook").inner_text()
