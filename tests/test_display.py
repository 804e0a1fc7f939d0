"""The progress display: the pure meter, the widget and text views on real groups,
the Cancel and Retry buttons, and the bound on widget traffic."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

import nbgroups
from nbgroups import api, display
from nbgroups.display import formatting
from nbgroups.display.formatting import Failure, format_line, meter
from nbgroups.errors import ConfigurationError
from nbgroups.records import GroupCounts


@pytest.fixture(autouse=True)
def _fresh_display():
    display.reset()
    yield
    display.reset()


def flaky(x, marker_dir=None):
    """Fails for x % 5 == 2 unless a marker file for x exists (then succeeds)."""
    if x % 5 == 2 and not (marker_dir and os.path.exists(os.path.join(marker_dir, str(x)))):
        raise ValueError(f"bad x={x}")
    return x * 10


def slow(x):
    time.sleep(0.3)
    return x


# ---------------------------------------------------------------- the pure meter
def test_meter_running_group_fields():
    c = GroupCounts("g", submitted=10, done=3, failed=1, running=2, queued=4,
                    first_submitted=100.0)
    m = meter(c, now=108.0)
    assert (m.value, m.max, m.percent) == (4, 10, 40)
    assert m.state == "running" and not m.settled
    assert m.bar_style == "danger"  # a failure shows at once, before the end
    assert m.elapsed == 8.0 and m.eta == pytest.approx(12.0)  # 6 left at 0.5/s
    assert m.counts_text == "done 3, failed 1, running 2, queued 4"
    line = format_line(m)
    assert line.startswith("g  40%|") and "4/10" in line and line.endswith("0:08<0:12")


@pytest.mark.parametrize(
    ("kw", "state", "style"),
    [
        ({"submitted": 5, "done": 5}, "done", "success"),
        ({"submitted": 5, "done": 4, "failed": 1}, "failed", "danger"),
        ({"submitted": 5, "done": 2, "cancelled": 3}, "cancelled", "warning"),
        ({"submitted": 5, "done": 2, "queued": 3}, "running", ""),
        ({}, "empty", ""),
    ],
)
def test_meter_states_and_bar_styles(kw, state, style):
    m = meter(GroupCounts("g", first_submitted=0.0, last_finished=2.0, **kw), now=50.0)
    assert (m.state, m.bar_style) == (state, style)
    if m.settled:
        assert m.value == m.max == 5
        assert m.elapsed == 2.0 and m.eta == 0.0  # frozen at the last finish, not "now"
        assert "<" not in format_line(m)


def test_meter_eta_unknown_before_first_finish():
    m = meter(GroupCounts("g", submitted=3, queued=3, first_submitted=0.0), now=5.0)
    assert m.eta is None and m.eta_text == "?"


def test_duration_format():
    assert [formatting.format_duration(s) for s in (0, 59.9, 61, 3600, -3)] == \
        ["0:00", "0:59", "1:01", "1:00:00", "0:00"]


# ---------------------------------------------------------------- widget on real groups
def _wait(group):
    nbgroups.result_group(group, wait=60_000)
    assert nbgroups.group_counts(group).settled
    display.flush()


def test_widget_final_state_with_failures(nb):
    g = nbgroups.sweep(flaky, "wfail", x=list(range(20)))
    view = display.progress(g, mode="widget", display=False)
    _wait(g)
    w = view.adapter
    assert (w.bar.value, w.bar.max, w.bar.bar_style) == (20, 20, "danger")
    assert "done <b>16</b>" in w.counts.value and "failed <b>4</b>" in w.counts.value
    assert "queued <b>0</b>" in w.counts.value and "running <b>0</b>" in w.counts.value
    assert "<b>100%</b>" in w.counts.value
    assert "elapsed" in w.counts.value and "ETA" not in w.counts.value
    # one cause, four calls: one entry titled by the shared error, its calls inside
    titles = w.failure_list.titles
    assert len(titles) == len(w.failure_list.children) == 1
    assert titles[0] == "ValueError: bad x=\u2026  \u00d7 4"
    # each failure's call, traceback and hint, then its Debug button
    tb = "".join(c.value for c in w.failure_list.children[0].children if hasattr(c, "value"))
    assert [b.description for b in w.debug_buttons] == ["Debug"] * 4
    assert [f"flaky(x={x})" in tb for x in (2, 7, 12, 17)] == [True] * 4
    assert tb.count("Traceback") == 4 and "raise ValueError" in tb  # tracebacks on demand
    ids = [t.id for t in nbgroups.fetch_group(g) if t.success is False]
    assert all(f"nbgroups.debug('{i}')" in tb for i in ids), (ids, tb)
    assert w.failure_box.layout.display is None  # shown
    assert not w.retry_button.disabled and w.cancel_button.disabled
    assert "wfail" in w.bar.description


def test_widget_cause_counts_say_when_only_the_first_failures_are_listed(nb):
    # 1000 calls, 200 failures: the view loads the first 50. It titled the cause
    # "ValueError: bad x=... x 50" and the list "200 failed (first 20 shown)",
    # which read as 50 failures of that cause in all, and 20 of them listed.
    from nbgroups.display.view import MAX_FAILURES_LOADED

    g = nbgroups.sweep(flaky, "wmany", x=list(range(1000)))
    view = display.progress(g, mode="widget", display=False)
    _wait(g)
    w = view.adapter
    failed = nbgroups.count_group(g, failures=True)
    assert failed == 200 > MAX_FAILURES_LOADED
    assert w.failures_title.value == f"<b>200 failed</b> (the first {MAX_FAILURES_LOADED} listed)"
    assert w.failure_list.titles == (
        f"ValueError: bad x=\u2026  \u00d7 {MAX_FAILURES_LOADED} of the first "
        f"{MAX_FAILURES_LOADED}",)
    # fetch_group(g).failures() counts them all
    assert [fg.heading() for fg in nbgroups.fetch_group(g).failures()] == [
        "ValueError: bad x=\u2026  \u00d7 200"]


def test_widget_success_style_and_hidden_failure_list(nb):
    g = nbgroups.sweep(flaky, "wok", x=[0, 1, 3, 4])
    view = display.progress(g, mode="widget", display=False)
    _wait(g)
    w = view.adapter
    assert (w.bar.value, w.bar.max, w.bar.bar_style) == (4, 4, "success")
    assert w.failure_box is None and w.retry_button is None  # made at the first failure
    assert len(w.box.children) == 4  # bar, status, Cancel, Timeline: no failure section


def test_view_updates_live_without_explicit_refresh(nb_loky):
    """The renderer thread (woken by the runner's listener) draws the final state."""
    g = nbgroups.sweep(flaky, "live", x=list(range(10)))
    view = display.progress(g, mode="widget", display=False)
    bar = view.adapter.bar
    final = threading.Event()  # set by the widget itself when the renderer draws the end

    def drawn(change=None):
        if bar.value == 10 and bar.bar_style == "danger":
            final.set()

    bar.observe(drawn, names=["value", "bar_style"])
    drawn()
    nbgroups.result_group(g, wait=60_000)
    assert final.wait(30), (bar.value, bar.bar_style)


def test_cancel_button_cancels_pending_tasks(nb_loky):
    g = nbgroups.sweep(slow, "cancelme", x=list(range(40)))
    view = display.progress(g, mode="widget", display=False)
    w = view.adapter
    assert not w.cancel_button.disabled
    w.cancel_button.click()
    _wait(g)
    c = nbgroups.group_counts(g)
    assert c.cancelled > 0 and c.settled and c.done == 40 - c.cancelled
    assert (w.bar.value, w.bar.max) == (40, 40)
    assert f"cancelled <b>{c.cancelled}</b>" in w.counts.value
    assert w.bar.bar_style == "warning" and w.cancel_button.disabled


def test_retry_button_resubmits_failures(nb, tmp_path):
    marker = tmp_path / "markers"
    marker.mkdir()
    g = nbgroups.sweep(flaky, "retryme", x=list(range(10)), marker_dir=[str(marker)])
    view = display.progress(g, mode="widget", display=False)
    _wait(g)
    w = view.adapter
    assert w.bar.bar_style == "danger"
    assert w.failure_list.titles == ("ValueError: bad x=\u2026  \u00d7 2",)
    for x in (2, 7):
        (marker / str(x)).touch()  # the cause of the failures is fixed
    w.retry_button.click()
    _wait(g)
    assert nbgroups.count_group(g) == 10 and nbgroups.count_group(g, failures=True) == 0
    assert sorted(nbgroups.result_group(g)) == [x * 10 for x in range(10)]
    assert (w.bar.value, w.bar.max, w.bar.bar_style) == (10, 10, "success")
    assert w.failure_list.children == () and w.retry_button.disabled
    assert w.failure_box.layout.display == "none"  # hidden again


# ---------------------------------------------------------------- text fallback
def test_text_view_line_and_final_summary(nb):
    buf = io.StringIO()
    g = nbgroups.sweep(flaky, "txt", x=list(range(10)))
    view = display.progress(g, mode="text", stream=buf, display=False)
    _wait(g)
    display.flush()  # a second final draw writes nothing new
    out = buf.getvalue()
    assert out.startswith("\r") and view.mode == "text" and view.widget is None
    final = out.rsplit("\r", 1)[1]
    lines = final.splitlines()
    assert lines[0].startswith("txt 100%|") and "10/10" in lines[0]
    assert "[done 8, failed 2, running 0, queued 0]" in lines[0]
    assert sorted(ln.split(": ", 1)[1] for ln in lines[1:]) == \
        ["ValueError: bad x=2", "ValueError: bad x=7"]
    assert all(ln.startswith("  failed ") for ln in lines[1:])
    assert out.count("txt 100%") == 1 and out.endswith("\n")


class Signalling(io.StringIO):
    """A text stream that sets ``seen`` once ``text`` was written to it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        if self.text in self.getvalue():
            self.seen.set()
        return n


def test_a_group_another_process_runs_is_drawn_live(store_dir, tmp_path):
    """A view of a group fed only by another kernel on the same store redraws while
    that kernel works (the renderer's tick reads the store), not only at cell end."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import nbgroups\n"
        f"nbgroups.configure(store={str(store_dir)!r}, workers=1, progress=False)\n"
        "for i in range(6):\n"
        "    nbgroups.async_task('time.sleep', 0.5, group='elsewhere')\n"
        "nbgroups.api.runner().flush()\n"
        "print('submitted', flush=True)\n"
        "nbgroups.result_group('elsewhere', count=6, wait=-1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    other = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                             text=True)
    try:
        api.reset()
        nbgroups.configure(store=str(store_dir), workers=1, progress=False)
        assert other.stdout is not None
        assert other.stdout.readline() == "submitted\n"  # its tasks are in the store
        buf = Signalling("done 6,")
        display.progress("elsewhere", mode="text", stream=buf, display=False)
        assert other.wait(60) == 0
        done = [int(n) for n in re.findall(r"\[done (\d+),", buf.getvalue())]
        assert any(0 < n < 6 for n in done), buf.getvalue()  # drawn while it ran
        assert buf.seen.wait(10), buf.getvalue()  # and its end, within a tick
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(60)
        other.stdout.close()
        api.reset()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _screen(text: str) -> list[str]:
    """What a terminal shows after ``text`` (\\r, \\n, cursor up, clear down)."""
    import re

    rows, r, c, i = [""], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = re.match(r"\x1b\[(\d*)([AJ])", text[i:])
            if m.group(2) == "A":
                r = max(0, r - int(m.group(1) or 1))
            else:
                rows[r] = rows[r][:c]
                del rows[r + 1:]
            i += len(m.group(0))
            continue
        if ch == "\r":
            c = 0
        elif ch == "\n":
            r, c = r + 1, 0
            rows += [""] * (r + 1 - len(rows))
        else:
            rows[r] = rows[r][:c].ljust(c) + ch + rows[r][c + 1:]
            c += 1
        i += 1
    return [row.rstrip() for row in rows]


def _counts(group, done, submitted=6, failed=0):
    return GroupCounts(group, submitted=submitted, done=done, failed=failed,
                       queued=submitted - done - failed, first_submitted=0.0,
                       last_finished=float(done) if done + failed == submitted else None)


@pytest.mark.parametrize("tty", [True, False])
def test_two_text_views_on_one_stream_keep_their_own_lines(tty, monkeypatch):
    from nbgroups.display.text import TextView

    monkeypatch.setenv("COLUMNS", "200")  # wide enough for the unshortened lines
    monkeypatch.delenv("TERM", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")

    out = _Terminal() if tty else io.StringIO()
    a, b = TextView(out), TextView(out)
    a.update(meter(_counts("ga", 1), now=2.0), None)
    b.update(meter(_counts("gb", 2), now=2.0), None)
    a.update(meter(_counts("ga", 3), now=3.0), None)
    if tty:  # a block of two lines, each group in its own, redrawn in place
        assert _screen(out.getvalue()) == [format_line(meter(_counts("ga", 3), now=3.0)),
                                           format_line(meter(_counts("gb", 2), now=2.0))]
    b.update(meter(_counts("gb", 6), now=4.0), None)  # gb ends: its line goes above
    a.update(meter(_counts("ga", 4), now=5.0), None)
    shown = _screen(out.getvalue())
    if tty:
        assert shown == [format_line(meter(_counts("gb", 6), now=4.0)),
                         format_line(meter(_counts("ga", 4), now=5.0))]
    else:  # a log: a line per update once two groups run, none written over another
        assert {"ga  16%|", "gb  33%|", "ga  50%|", "gb 100%|"} <= {ln[:8] for ln in shown}
        assert shown[-1].startswith("ga  66%|")
    a.update(meter(_counts("ga", 6), now=6.0), None)
    assert [line[:8] for line in _screen(out.getvalue()) if line][-2:] == \
        ["gb 100%|", "ga 100%|"]


def test_text_view_closed_while_running_ends_its_line():
    from nbgroups.display.text import TextView

    buf = io.StringIO()
    view = TextView(buf)
    running = meter(GroupCounts("g", submitted=10, done=3, running=2, queued=5,
                                first_submitted=100.0), now=101.0)
    view.update(running, None)
    assert buf.getvalue().startswith("\rg ") and not buf.getvalue().endswith("\n")
    view.close()
    assert buf.getvalue().endswith("\n")
    view.close()  # nothing left to end
    assert buf.getvalue().count("\n") == 1


def test_rerun_sweep_says_how_many_were_reused(nb):
    """Issue 7: re-running a sweep with reuse=True, the progress view says how many of
    its calls were found done (widget counts, text line, %nbgroups table)."""
    g = nbgroups.sweep(flaky, "again", x=[0, 1, 3, 4], reuse=True)
    first = display.progress(g, mode="widget", display=False)
    _wait(g)
    assert nbgroups.group_counts(g).reused == 0
    assert "reused" not in first.adapter.counts.value  # nothing reused: not mentioned
    display.reset()
    g = nbgroups.sweep(flaky, "again", x=[0, 1, 3, 4, 5, 6], reuse=True)  # 2 new points
    buf = io.StringIO()
    view = display.progress(g, mode="widget", display=False)
    text = display.progress(g, mode="text", stream=buf, display=False)
    _wait(g)
    c = nbgroups.group_counts(g)
    assert (c.submitted, c.done, c.reused) == (6, 6, 4)
    assert "reused <b>4</b>" in view.adapter.counts.value
    assert "done <b>6</b>" in view.adapter.counts.value
    final = buf.getvalue().rsplit("\r", 1)[1].splitlines()[0]
    assert "[done 6, failed 0, running 0, queued 0, reused 4]" in final, final
    assert text.mode == "text"
    from nbgroups.display.table import format_table, group_rows

    rows = group_rows([c])
    assert rows[0]["reused"] == 4
    header, row = format_table(rows).splitlines()
    assert header.split()[7] == "reused" and row.split()[7] == "4"


def test_formatting_and_table_doctests():
    import doctest

    from nbgroups.display import table

    for mod in (formatting, table):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, (mod.__name__, result)


def test_auto_mode_is_text_outside_a_kernel(nb):
    assert display.choose_mode("auto") == "text"
    assert display.choose_mode(False) == "text"
    assert display.choose_mode("widget") == "widget"
    with pytest.raises(ConfigurationError, match="mode must be"):
        display.choose_mode("fancy")


def test_progress_rejects_bad_group(nb):
    with pytest.raises(TypeError):
        display.progress(42)


# ---------------------------------------------------------------- bounded traffic
def _count_changes(widgets):
    counter = {"n": 0}

    def bump(change):
        counter["n"] += 1

    for wd in widgets:
        wd.observe(bump)  # every trait change: each is at most one comm message
    return counter


def test_ten_thousand_tasks_bounded_widget_updates(nb_loky):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    try:
        api.configure(progress="widget")
        ip.run_line_magic("load_ext", "nbgroups")
        t0 = time.monotonic()
        r = ip.run_cell("import nbgroups\n"
                        "g = nbgroups.sweep(lambda x: x, 'tenk', x=range(10_000))\n")
        assert r.success
        view = display.view_of("tenk")
        w = view.adapter
        counter = _count_changes([w.bar, w.counts, w.cancel_button])
        values = []
        w.bar.observe(lambda ch: values.append(ch["new"]), names="value")
        r = ip.run_cell("res = nbgroups.result_group(g, wait=-1)\nlen(res)")
        assert r.result == 10_000
        elapsed = time.monotonic() - t0
        assert (w.bar.value, w.bar.max, w.bar.bar_style) == (10_000, 10_000, "success")
        # at most ~10 draws a second (+ the forced end-of-cell draws), never per task
        assert view.draws <= 10 * elapsed + 5, (view.draws, elapsed)
        assert counter["n"] <= 8 * view.draws
        assert counter["n"] < 1000
        assert values == sorted(values) and values[-1] == 10_000
    finally:
        ip.run_line_magic("unload_ext", "nbgroups")
        InteractiveShell.clear_instance()


def test_group_counts_repr_reads_times_not_epoch_floats():
    import time as clock

    from nbgroups.records import GroupCounts

    t0 = clock.mktime((2026, 11, 29, 23, 12, 57, 0, 0, -1)) + 0.717
    text = repr(GroupCounts("g", submitted=200, done=180, failed=20,
                            first_submitted=t0, last_finished=t0 + 2.141))
    assert text == ("GroupCounts('g', submitted=200, done=180, failed=20, cancelled=0, "
                    "running=0, queued=0, reused=0, first_submitted=2026-11-29 23:12:57.717, "
                    "last_finished=2026-11-29 23:12:59.858 (2.1 s after))")
    assert str(t0)[:6] not in text
    empty = repr(GroupCounts("g"))
    assert empty.endswith("first_submitted=None, last_finished=None)")


def _terminal_view(monkeypatch, columns=200, term="xterm-256color", no_color=None):
    from nbgroups.display.text import TextView

    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("TERM", term)
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    out = _Terminal()
    return out, TextView(out)


def _failing(now=5.0):
    return meter(GroupCounts("a-long-group-name", submitted=200, done=150, failed=10,
                             running=2, queued=38, first_submitted=0.0), now=now)


def test_text_lines_fit_the_terminal_width(monkeypatch):
    out, view = _terminal_view(monkeypatch, columns=60, no_color="1")
    view.update(_failing(), None)
    settled = meter(GroupCounts("a-long-group-name", submitted=200, done=190, failed=10,
                                first_submitted=0.0, last_finished=9.0), now=9.0)
    failures = [Failure(f"task-{i}", "ValueError: " + "x" * 120, "tb") for i in range(10)]
    view.update(settled, failures)
    lines = [ln for ln in _screen(out.getvalue()) if ln]
    assert len(lines) == 7 and all(len(ln) <= 59 for ln in lines), lines
    assert lines[0] == "a-long-group-name 100% 200/200 [done 190, failed 10] 0:09"
    assert lines[1].startswith("  failed task-0: ValueError: xxx") and lines[1].endswith("…")
    monkeypatch.setenv("COLUMNS", "120")  # the window was widened: lines use it
    view.update(_failing(now=6.0), None)
    assert len(_screen(out.getvalue())[-1]) > 60


def test_colour_only_where_the_terminal_takes_it(monkeypatch):
    out, view = _terminal_view(monkeypatch)
    view.update(_failing(), None)
    assert "\x1b[31mfailed 10\x1b[0m" in out.getvalue()
    out, view = _terminal_view(monkeypatch, no_color="1")
    view.update(_failing(), None)
    assert "\x1b[31m" not in out.getvalue() and "\x1b[" not in out.getvalue().replace(
        "\x1b[J", "")
    out, view = _terminal_view(monkeypatch, term="dumb")  # no colour, no cursor movement
    view.update(_failing(), None)
    view.update(_failing(now=7.0), None)
    assert "\x1b" not in out.getvalue()
    assert out.getvalue().count("\r") == 2


def test_held_boards_write_nothing_until_released(monkeypatch):
    from nbgroups.display import text

    out, view = _terminal_view(monkeypatch, no_color="1")
    try:
        text.hold()
        view.update(_failing(), None)
        assert out.getvalue() == ""
        text.release()  # a wait began: the current line is drawn
        assert _screen(out.getvalue()) == [format_line(_failing(), 199)]
        text.end_lines()  # the wait returned: the line stays, the cursor goes below it
        assert out.getvalue().endswith("\n")
        text.hold()
        done = meter(GroupCounts("a-long-group-name", submitted=200, done=200,
                                 first_submitted=0.0, last_finished=9.0), now=9.0)
        view.update(done, None)
        written = out.getvalue()
        assert "100%" not in written
        text.write_pending()  # a new cell: the final line, on a line of its own
        assert out.getvalue()[len(written):] == format_line(done, 199) + "\n"
        assert text.held()
    finally:
        text.release()


def test_text_failure_lines_name_the_call_as_the_widget_does(monkeypatch):
    out, view = _terminal_view(monkeypatch, columns=100, no_color="1")
    settled = meter(GroupCounts("g", submitted=2, done=1, failed=1, first_submitted=0.0,
                                last_finished=1.0), now=1.0)
    view.update(settled, [Failure("quiet-river-stone-lamp", "ValueError: k must be > 0", "tb",
                                  "simulate(k=0.0, dt=0.1)")])
    lines = [ln for ln in _screen(out.getvalue()) if ln]
    assert lines[1] == "  failed simulate(k=0.0, dt=0.1): ValueError: k must be > 0", lines
