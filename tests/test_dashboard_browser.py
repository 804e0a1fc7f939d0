"""The dashboard as a person sees it: Debian Chromium (Playwright) on a real
``nbgroups dashboard`` process, while another process runs a group.

One test walks through it: live counts of a group fed by another process, the
latency of an update, filtering and sorting, the injection attempts shown as
text (no dialog ever opens but the delete confirmation), and a click on
Delete that changes the store. Another clicks Cancel on a sweep queued in
another process (its owner) and checks that the owner stops, and the timeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

import nbgroups
from nbgroups import api
from nbgroups.store import DiskStore
from tests.dashboard_env import (
    REPO,
    SWEEP,
    dashboard_process,
    env_for_cli,
    release_owner,
    start_owner,
)
from tests.jupyter_env import save_screenshot

pytestmark = pytest.mark.browser

XSS_GROUP = "<script>alert(1)</script>"
XSS_ARG = "<script>alert(3)</script>"  # an argument: in the table and the timeline's tooltip
LIVE_TASKS = 40

FEEDER = f"""
import nbgroups, sys
nbgroups.configure(store=sys.argv[1], backend="thread", workers=2, progress=False)
for _ in range({LIVE_TASKS}):
    nbgroups.async_task("time.sleep", 0.2, group="live")
print("submitted", flush=True)
nbgroups.result_group("live", wait=-1)
"""

# Every distinct `done` and `running` count the page showed for the group "live".
WATCH_LIVE = """() => {
    window.__liveDone = [];
    window.__liveRunning = [];
    const record = () => {
        const row = '#groups tr[data-group="live"] ';
        const cell = document.querySelector(row + '[data-field="done"]');
        if (cell && !window.__liveDone.includes(cell.textContent))
            window.__liveDone.push(cell.textContent);
        const running = document.querySelector(row + '[data-field="running"]');
        if (running && !window.__liveRunning.includes(running.textContent))
            window.__liveRunning.push(running.textContent);
    };
    new MutationObserver(record).observe(document.querySelector('#groups tbody'),
                                         {subtree: true, childList: true, characterData: true});
    record();
}"""


class Shown:
    def __repr__(self) -> str:
        return '<img src=x onerror="alert(2)"><b>bold</b>'


def markup(x):
    return Shown()


def row_texts(page: Any) -> list[str]:
    return page.locator("#groups tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.group)")


def test_dashboard_in_chromium(browser_page, tmp_path, _signing_key):
    page = browser_page
    store = tmp_path / "store"
    api.reset()
    nbgroups.configure(store=str(store), backend="sync", progress=False)
    nbgroups.sweep(markup, XSS_GROUP, x=[XSS_ARG])
    nbgroups.async_task("math.floor", 1.5, group="doomed")
    nbgroups.async_task("math.sqrt", -1.0, group="doomed")
    nbgroups.async_task("math.sqrt", -4.0, group="doomed")
    dialogs: list[str] = []

    def on_dialog(dialog):
        dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept()

    page.on("dialog", on_dialog)
    feeder = None
    try:
        with dashboard_process(store) as dash:
            page.goto(f"{dash.url}/?token={dash.token}")
            page.wait_for_function("() => Number(document.body.dataset.polls || 0) >= 1")
            # -- live: a group fed by another process
            feeder = subprocess.Popen([sys.executable, "-c", FEEDER, str(store)],
                                      env=env_for_cli(), cwd=str(REPO),
                                      stdout=subprocess.PIPE, text=True)
            assert feeder.stdout.readline().strip() == "submitted"
            page.wait_for_selector('#groups tr[data-group="live"]', timeout=20_000)
            page.evaluate(WATCH_LIVE)
            # the group's own page, opened while it runs: its rows change state live
            rows = page.context.new_page()
            rows.goto(f"{dash.url}/group?name=live")
            first_states = rows.locator('#tasks [data-cell="state"]').all_inner_texts()
            page.wait_for_function(
                "n => (window.__liveDone || []).includes(String(n))", arg=LIVE_TASKS,
                timeout=60_000)
            seen = [int(v) for v in page.evaluate("window.__liveDone")]
            assert seen == sorted(seen) and seen[-1] == LIVE_TASKS
            assert any(0 < v < LIVE_TASKS for v in seen), seen  # counts moved while it ran
            # the feeder's runner says what it runs now: not all shown as queued
            running = [int(v) for v in page.evaluate("window.__liveRunning")]
            assert any(v > 0 for v in running), running  # (thread backend: calls sent)
            assert feeder.wait(30) == 0
            assert len(first_states) == LIVE_TASKS, first_states
            rows.wait_for_function(
                """n => [...document.querySelectorAll('#tasks [data-cell="state"]')]
                        .filter(td => td.textContent === 'success').length === n""",
                arg=LIVE_TASKS, timeout=10_000)
            assert first_states.count("success") < LIVE_TASKS  # it was not done at first
            assert rows.locator('#summary [data-field="done"]').inner_text() == str(LIVE_TASKS)
            rows.close()
            # -- latency: a task stored by this process, until the page shows it
            nbgroups.async_task("math.floor", 2.5, group="latency", sync=True)
            t0 = time.monotonic()
            page.wait_for_function(
                """() => {
                    const c = document.querySelector(
                        '#groups tr[data-group="latency"] [data-field="done"]');
                    return c && c.textContent === "1";
                }""", polling=20, timeout=10_000)
            latency = time.monotonic() - t0
            print(f"\nlive update latency (store write -> page): {latency:.3f} s")
            # -- filter and sort
            page.fill("#filter", "lat")
            assert row_texts(page) == ["latency"]
            page.fill("#filter", "")
            page.click('#groups th[data-key="submitted"]')  # descending first
            assert row_texts(page)[0] == "live"
            page.click('#groups th[data-key="group"]')  # names ascending
            groups = row_texts(page)
            assert groups == sorted(groups)
            # -- injection attempts are text
            link = page.locator("#groups a", has_text=XSS_GROUP)
            assert link.count() == 1
            save_screenshot(page, "dashboard-groups")
            link.click()
            page.wait_for_selector("#tasks")
            assert page.locator("h1 .name").inner_text() == XSS_GROUP
            assert page.locator("#tasks td.result").first.inner_text() == \
                '<img src=x onerror="alert(2)"><b>bold</b>'
            assert page.locator("main img, main b, main script").count() == 0
            # the timeline: one bar, its tooltip the call, as text
            assert page.locator("#timeline svg rect").count() == 1
            assert XSS_ARG in page.locator("#timeline svg rect title").text_content()
            assert page.locator("#timeline svg *").evaluate_all(
                "els => [...new Set(els.map(e => e.localName))].sort()") == \
                ["rect", "text", "title"]
            save_screenshot(page, "dashboard-group")
            page.locator("#tasks td a").first.click()
            page.wait_for_selector("table.fields")
            assert '<img src=x onerror="alert(2)">' in page.locator(
                'tr[data-field="result"] pre').inner_text()
            assert page.locator("main img").count() == 0
            # -- the group page's table and its failures, grouped by exception
            page.goto(f"{dash.url}/group?name=doomed")
            assert page.locator('#tasks [data-cell="state"]').all_inner_texts() == \
                ["success", "failure", "failure"]
            assert page.locator(".kind h3").inner_text() == "ValueError 2"
            trace = page.locator(".kind details pre").first
            assert not trace.is_visible()
            page.locator(".kind details summary").first.click()
            assert "Traceback (most recent call last)" in trace.inner_text()
            save_screenshot(page, "dashboard-failures")
            # -- an action: delete the group "doomed" (after the confirmation)
            page.click("#delete")
            page.wait_for_selector("p.note")
            assert page.locator("p.note").inner_text() == "deleted group 'doomed'"
            assert "doomed" not in row_texts(page)
            check = DiskStore(store)
            assert not check.known("doomed") and check.known("live")
            check.close()
            assert dialogs == ["confirm: Delete this group?"]
    finally:
        if feeder is not None and feeder.poll() is None:
            feeder.kill()
            feeder.wait(10)
        if feeder is not None:
            feeder.stdout.close()
        api.reset()


def test_cancel_in_chromium_stops_a_sweep_in_another_process(browser_page, tmp_path):
    """The owner is another process running a sweep on one loky worker (call 0
    holds it); Cancel on the group's page in the dashboard (a third process)
    must make the owner cancel its queued calls: it starts none of them."""
    page = browser_page
    owner, starts, go, _ = start_owner(tmp_path, "loky")
    try:
        with dashboard_process(tmp_path / "store") as dash:
            page.goto(f"{dash.url}/group?name=far&token={dash.token}")
            unfinished = [int(page.locator(f'#summary [data-field="{f}"]').inner_text())
                          for f in ("queued", "running")]
            assert sum(unfinished) == SWEEP and unfinished[1] <= 1, unfinished
            page.click("#cancel")
            page.wait_for_selector("p.note", timeout=30_000)
            assert page.locator("p.note").inner_text() == (
                f"cancelled {SWEEP - 1} queued tasks in every process holding them "
                "(running ones finish)")
            assert page.url.startswith(f"{dash.url}/group?name=far&done=cancel")
            # the records say so at once: the page shows the store's counts
            assert page.locator('#summary [data-field="cancelled"]').inner_text() == \
                str(SWEEP - 1)
            assert sorted(os.listdir(starts)) == ["0"]
            go.touch()  # call 0 ends; the owner must start nothing more
            states = json.loads(owner.stdout.readline())
            assert owner.wait(60) == 0
            assert states == ["success"] + ["cancelled"] * (SWEEP - 1)
            assert sorted(os.listdir(starts)) == ["0"]
            page.goto(f"{dash.url}/group?name=far")
            page.wait_for_function(
                """() => document.querySelector('#summary [data-field="state"]')
                         .textContent !== "running" """)
            assert page.locator('#summary [data-field="done"]').inner_text() == "1"
            assert page.locator("#timeline svg rect").count() == 1
            assert page.locator('#tasks [data-cell="state"]').all_inner_texts()[:3] == \
                ["success", "cancelled", "cancelled"]
            save_screenshot(page, "dashboard-cancelled")
    finally:
        release_owner(owner, go)
