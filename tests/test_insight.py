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
import types
import warnings

import pytest

import nbgroups
from nbgroups import api, capture, outcome
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
