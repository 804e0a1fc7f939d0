"""Inside every task (issue 14): its captured output, bounded; which worker ran it,
when and with how much memory; tracebacks without nbgroups' frames, with the
source of code shipped by value. A real 2-worker loky pool and a real store
(``nb_loky``), or both backends (``nb``)."""

from __future__ import annotations

import linecache
import logging
import os
import socket
import sys
import time
import types
import warnings

import pytest

import nbgroups
from nbgroups import api, capture, display, outcome
from nbgroups.records import SCHEMA_VERSION, State
from nbgroups.store.layout import build_record


def chatty(k):
    print(f"out {k}")
    logging.getLogger("sim").info("step %s", k)
    logging.getLogger("sim").debug("hidden %s", k)
    print(f"err {k}", file=sys.stderr)
    warnings.warn(f"careful {k}", RuntimeWarning, stacklevel=1)
    if k == 2:
        raise ValueError(f"k must be > 0, got {k}")
    return k


def flood(lines):
    for i in range(lines):
        print(f"line {i:07d} " + "x" * 1000)
    return lines


def pid_and_rss():
    return os.getpid()


def test_output_is_captured_per_task_in_order(nb_loky):
    for k in range(4):
        nbgroups.async_task(chatty, k, group="out")
    tasks = nbgroups.fetch_group("out", wait=-1)
    assert [t.success for t in tasks] == [True, True, False, True]
    for k, t in enumerate(tasks):
        assert t.stdout == f"out {k}\n"
        # logging, stderr and warnings in the order they happened; DEBUG below the level
        lines = t.stderr.splitlines()
        assert lines[0] == f"INFO sim: step {k}"
        assert lines[1] == f"err {k}"
        assert f"RuntimeWarning: careful {k}" in lines[2]
        assert "hidden" not in t.stderr
    df = tasks.to_dataframe()
    assert df["stdout"].tolist() == [f"out {k}\n" for k in range(4)]
    assert df["stderr"].str.contains("INFO sim: step").all()


def test_log_level_setting_reaches_the_worker(store_dir):
    api.reset()
    nbgroups.configure(store=str(store_dir), workers=1, progress=False, log_level="DEBUG")
    try:
        t = nbgroups.fetch(nbgroups.async_task(chatty, 1, group="dbg"), wait=-1)
        assert "DEBUG sim: hidden 1" in t.stderr
    finally:
        api.reset()


def test_capture_off_keeps_nothing(store_dir):
    api.reset()
    nbgroups.configure(store=str(store_dir), workers=1, progress=False, capture=False)
    try:
        t = nbgroups.fetch(nbgroups.async_task(chatty, 1, group="off"), wait=-1)
        assert t.success and t.stdout is None and t.stderr is None
        assert t.worker is not None  # telemetry does not depend on capture
    finally:
        api.reset()


def test_ten_megabytes_of_output_are_bounded_and_do_not_stall_the_group(nb_loky):
    lines = 10_000  # ~10 MB of print
    big = nbgroups.async_task(flood, lines, group="flood")
    small = [nbgroups.async_task(abs, -i, group="flood") for i in range(20)]
    assert nbgroups.result_group("flood", count=21, wait=-1)[0] == lines
    assert [nbgroups.result(s) for s in small] == list(range(20))
    t = nbgroups.fetch(big)
    assert len(t.stdout) <= capture.LIMIT + len(capture.cut_marker(10**8))
    assert t.stdout.startswith("[nbgroups: ")
    assert t.stdout.rstrip("\n").endswith("line 0009999 " + "x" * 1000)  # the tail is kept
    cut = int(t.stdout.split(" earlier")[0].split()[-1].replace(",", ""))
    assert cut + len(t.stdout.split("\n", 1)[1]) == lines * 1014  # nothing else lost


def test_bounded_buffer_marks_where_it_cut():
    buf = capture._Buffer()
    for _ in range(3):
        buf.write("a" * capture.LIMIT)
    buf.write("end")
    text = buf.text()
    assert text.startswith(capture.cut_marker(2 * capture.LIMIT + 3))
    assert text.endswith("a" * (capture.LIMIT - 3) + "end")
    assert capture._Buffer().text() is None


def test_telemetry_names_the_worker_and_times(nb_loky):
    ids = [nbgroups.async_task(pid_and_rss, group="tele") for _ in range(6)]
    tasks = nbgroups.fetch_group("tele", wait=-1)
    pids = set(api.runner().executor.worker_pids())
    host = socket.gethostname()
    for tid, t in zip(ids, tasks, strict=True):
        assert t.id == tid
        assert t.worker == f"{host}:{t.result}"
        assert t.result in pids and t.result != os.getpid()
        assert t.memory > 1 << 20  # bytes: a Python process holds more than 1 MB
        assert t.submitted <= t.started <= t.stopped
    df = tasks.to_dataframe()
    assert set(df["worker"]) == {t.worker for t in tasks}
    assert (df["memory"] > 0).all()


def test_a_row_of_schema_1_still_reads():
    assert SCHEMA_VERSION == 2
    old = ("abc", "failure", 1, 1.0, 2.0, None, None, "Traceback...\nValueError: x\n")
    o = outcome.view(old)
    assert o.traceback.endswith("ValueError: x\n")
    assert (o.stdout, o.stderr, o.worker, o.memory, o.frames) == (None,) * 5
    rec = build_record("abc", "n", "f", (1,), None, o, "g", 0.5)
    assert rec.state is State.FAILURE and rec.stdout is None and rec.worker is None
    assert rec.traceback.endswith("ValueError: x\n")


def _cell_function(source: str, filename: str) -> types.FunctionType:
    """A function as a notebook cell defines it: code from a file only linecache
    knows (IPython registers each cell so), in a module cloudpickle ships by value."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), scope)
    return scope["simulate"]


def test_traceback_shows_the_source_of_code_shipped_by_value(nb):
    source = ("def simulate(k, dt):\n"
              "    x = k * dt\n"
              "    if k <= 0:\n"
              "        raise ValueError(f'k must be > 0, got {k}')\n"
              "    return x\n")
    simulate = _cell_function(source, "/nonexistent/ipykernel_0/cell_5.py")
    t = nbgroups.fetch(nbgroups.async_task(simulate, k=0.0, dt=0.01, group="tb"), wait=-1)
    assert t.success is False
    assert 'File "/nonexistent/ipykernel_0/cell_5.py", line 4, in simulate' in t.traceback
    assert "raise ValueError(f'k must be > 0, got {k}')" in t.traceback
    assert "nbgroups/worker.py" not in t.traceback and "<dynamic-code>" not in t.traceback
    assert t.traceback.rstrip().endswith("ValueError: k must be > 0, got 0.0")


def die():
    os._exit(7)


def test_a_dead_worker_is_named_once(nb_loky):
    t = nbgroups.fetch(nbgroups.async_task(die, group="dead"), wait=-1)
    assert t.success is False
    assert t.error.startswith("WorkerDied: the worker process")
    assert t.traceback.count("WorkerDied") == 1
    assert t.worker and t.worker.startswith(socket.gethostname() + ":")


def test_chained_exceptions_keep_their_links():
    def inner():
        raise KeyError("a")

    try:
        try:
            inner()
        except KeyError as exc:
            raise ValueError("b") from exc
    except ValueError as exc:
        row = outcome.failure("x", 1, None, exc)
    text = outcome.view(row).traceback
    assert text.index("KeyError: 'a'") < text.index("direct cause") < text.index("ValueError: b")


@pytest.mark.parametrize("level", ["LOUD", 1.5, True, -1])
def test_bad_log_level_raises_at_configure(level):
    with pytest.raises(nbgroups.NbgroupsError, match="log_level"):
        nbgroups.configure(log_level=level)


# ---------------------------------------------------------------- triage, debug, report
def simulate(k, dt):
    if k <= 0:
        raise ValueError(f"k must be > 0, got k={k}")
    if k * dt >= 2:
        raise ValueError(f"unstable step {k * dt:.2f}")
    return k * dt


def test_failures_are_grouped_by_cause_with_their_calls(nb):
    g = nbgroups.sweep(simulate, "tri", k=[-1.0, 0.0, 1.0, 30.0], dt=[0.01, 0.1])
    groups = nbgroups.fetch_group(g, wait=-1).failures()
    assert [len(x) for x in groups] == [4, 1]
    first, second = groups
    assert first.heading() == "ValueError: k must be > 0, got k=\u2026  \u00d7 4"
    assert first.calls == ["simulate(k=-1.0, dt=0.01)", "simulate(k=-1.0, dt=0.1)",
                           "simulate(k=0.0, dt=0.01)", "simulate(k=0.0, dt=0.1)"]
    assert second.heading() == "ValueError: unstable step 3.00"  # a lone failure: its own
    text = str(groups)
    assert text.splitlines()[0] == first.heading() and "  simulate(k=30.0, dt=0.1)" in text
    page = groups._repr_html_()
    assert "simulate(k=0.0, dt=0.01)" in page and "nbgroups.debug(" in page
    assert nbgroups.fetch_group(g).filter(success=True).failures() == []


def test_debug_raises_the_original_exception_here(nb):
    tid = nbgroups.async_task(simulate, k=0.0, dt=0.5, group="dbg")
    task = nbgroups.fetch(tid, wait=-1)
    with pytest.raises(ValueError, match=r"k must be > 0, got k=0\.0") as info:
        nbgroups.debug(task)
    assert info.tb.tb_next is not None  # raised by the call, in this process
    ok = nbgroups.async_task(simulate, k=1.0, dt=0.5, group="dbg")
    nbgroups.result(ok, wait=-1)
    assert nbgroups.debug(ok) == 0.5  # by id; a successful call just runs again
    with pytest.raises(nbgroups.ConfigurationError, match="names no stored task"):
        nbgroups.debug("no-such-task")
    with pytest.raises(nbgroups.ArgumentTypeError, match="task_or_id"):
        nbgroups.debug(42)


def test_debug_shows_cell_sources_to_pdb(nb):
    source = ("def simulate(k, dt):\n"
              "    if k <= 0:\n"
              "        raise ValueError('k must be > 0')\n")
    cell = _cell_function(source, "/nonexistent/ipykernel_0/cell_9.py")
    tid = nbgroups.async_task(cell, k=0, dt=1, group="dbg-src")
    nbgroups.result(tid, wait=-1)
    with pytest.raises(ValueError) as info:
        nbgroups.debug(tid)
    frame = info.traceback[-1]
    assert str(frame.path) == "/nonexistent/ipykernel_0/cell_9.py"  # not <dynamic-code>
    assert "raise ValueError('k must be > 0')" in str(frame.statement)


def reporter(n, release):
    for i in range(n):
        nbgroups.report(i + 1, n, note=f"step {i + 1}")
    while not os.path.exists(release):
        nbgroups.report(n, n, note="holding")
        time.sleep(0.01)
    return n


def test_report_reaches_the_view_of_a_running_task(nb_loky, tmp_path):
    release = str(tmp_path / "go")
    tid = nbgroups.async_task(reporter, 1000, release, group="rep")
    r = api.runner()
    assert r.wait(lambda: any(p[2] == 1000 for p in r.task_progress("rep")), 60)
    (got,) = r.task_progress("rep")
    assert got[0] == tid and got[2:] == (1000.0, 1000.0, "holding")
    assert got[1].startswith("reporter(1000, ")
    view = display.progress("rep", mode="widget", display=False)
    view.refresh(force=True)
    assert "100%" in view.adapter.tasks_html.value and "holding" in view.adapter.tasks_html.value
    open(release, "w").close()
    assert nbgroups.result(tid, wait=-1) == 1000
    assert r.task_progress("rep") == []


def test_report_outside_a_task_does_nothing():
    assert nbgroups.report(1, 2, note="x") is None
    from nbgroups import reporting

    reporting.enter(None, 0, [("t",)])
    reporting.current.index = 0
    try:
        with pytest.raises(nbgroups.ArgumentTypeError, match="done"):
            nbgroups.report("half")
    finally:
        reporting.leave()


def test_timeline_and_chrome_trace(nb_loky, tmp_path):
    g = nbgroups.sweep(simulate, "tl", k=[0.0, 1.0, 2.0, 3.0], dt=[0.1])
    tasks = nbgroups.fetch_group(g, wait=-1)
    svg = tasks.timeline()._repr_svg_()
    assert svg.startswith("<svg") and svg.count("<rect") == 4
    assert svg.count("#e53935") == 1 and svg.count("#4caf50") == 3
    for wk in {t.worker for t in tasks}:
        assert wk in svg
    path = tasks.to_chrome_trace(tmp_path / "trace.json")
    import json
    from pathlib import Path

    events = json.loads(Path(path).read_text())["traceEvents"]
    runs = [e for e in events if e["ph"] == "X"]
    assert len(runs) == 4 and {e["tid"] for e in runs} <= set(api.runner().executor.worker_pids())
    assert all(e["dur"] >= 0 for e in runs)
    assert sorted(e["cat"] for e in runs) == ["failure", "success", "success", "success"]


def shout(x):
    print(f"item {x}")
    if x == 3:
        raise KeyError(x)
    return x


def test_async_iter_output_joins_its_chunks_in_input_order(nb):
    n = 5000  # cut into several chunks on a pool (~50 KB of output: under the bound)
    tid = nbgroups.async_iter(shout, list(range(n)), group="iter-out")
    t = nbgroups.fetch(tid, wait=-1)
    assert t.success is False
    assert t.stdout == "".join(f"item {x}\n" for x in range(n))
    assert t.worker is not None and "KeyError: 3" in t.traceback


def test_widget_shows_the_timeline_on_demand_and_debugs_a_failure(nb_loky):
    g = nbgroups.sweep(simulate, "wdg", k=[0.0, 1.0, 2.0], dt=[0.1])
    nbgroups.result_group(g, wait=-1)
    view = display.progress(g, mode="widget", display=False)
    view.refresh(force=True)
    adapter = view.adapter
    assert adapter.timeline_html is None  # nothing drawn until asked for
    adapter.timeline_button.value = True  # as a click in the browser sets it
    svg = adapter.timeline_html.value
    assert svg.startswith("<svg") and svg.count("<rect") == 3 and "#e53935" in svg
    assert adapter.timeline_html in adapter.box.children
    adapter.timeline_button.value = False
    assert adapter.timeline_html.layout.display == "none"
    # each failure shown has its Debug button, which runs the call again here
    (button,) = adapter.debug_buttons
    assert "simulate(k=0.0, dt=0.1)" in button.tooltip
    (failed,) = nbgroups.fetch_group(g).filter(success=False)
    with pytest.raises(ValueError, match="k must be > 0"):  # no IPython here: raised
        adapter._debug(failed.id)
