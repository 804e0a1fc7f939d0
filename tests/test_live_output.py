"""Live output (the ``live_output`` setting, :mod:`nbgroups.forward`): what running
tasks print reaches their group's view while they still run, bounded whatever
they print. A real loky pool (and the thread backend) on a real store; a real
kernel in ``test_live_output_kernel.py``."""

from __future__ import annotations

import io
import os
import time

import pytest

import nbgroups
from nbgroups import api, display, forward, monitor
from tests.conftest import _configured


def talk(lines, gate):
    for i in range(lines):
        print(f"line {i}")
    while not os.path.exists(gate):  # runs on until the test has seen its lines
        time.sleep(0.01)
    print("after the gate")
    return lines


def flood(megabytes, gate):
    line = "x" * 999 + "\n"
    for _ in range(megabytes * 1000):
        print(line, end="")
    print("last line")
    while not os.path.exists(gate):
        time.sleep(0.01)
    return megabytes


def _seen(group, text, timeout=60):
    """Wait until ``text`` is in a line of the group's live output (reading it, as
    the view does at each tick)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = api.SESSION.live_output(group)
        if out is not None and any(text in line for line in (*out.lines, *out.open)):
            return out
        time.sleep(0.05)  # the view's own cadence: nothing to wait on but the worker
    raise AssertionError(f"{text!r} never shown live in {group!r}: {out}")


def _live(store_dir, backend):
    _configured(store_dir, backend)
    nbgroups.configure(live_output=True)
    return nbgroups


@pytest.fixture(params=["loky", "thread"])
def live(request, store_dir):
    yield _live(store_dir, request.param)
    api.reset()


def test_output_reaches_the_view_while_the_task_runs(live, tmp_path):
    gate = str(tmp_path / "gate")
    tid = nbgroups.async_task(talk, 3, gate, group="live")
    view = display.progress("live", mode="widget", display=False)
    out = _seen("live", "line 2")
    assert nbgroups.fetch(tid).success is None  # still running: it waits for the gate
    assert [line.split(" │ ")[1] for line in out.lines] == ["line 0", "line 1", "line 2"]
    assert out.lines[0].startswith("talk(3, ")  # each line names its call
    view.refresh(force=True)
    assert "line 2" in view.adapter.output_html.value
    open(gate, "w").close()
    assert nbgroups.result(tid, wait=-1) == 3
    # what it wrote last, just before it ended, is read when its batch comes back
    assert api.SESSION.live_output("live").lines[-1].endswith("after the gate")
    view.refresh(force=True)
    assert "after the gate" in view.adapter.output_html.value
    assert nbgroups.fetch(tid).stdout == "line 0\nline 1\nline 2\nafter the gate\n"


def test_a_long_first_value_leaves_the_other_arguments_in_the_label(live, tmp_path):
    # A sweep passing a large DataFrame first named every line
    # `fit(df=<stored DataFrame (1310720, 5) 5… │`: the argument that tells the
    # calls apart was cut off. The long value is cut now, not the others.
    gate = tmp_path / ("a-long-directory-name-" * 4) / "gate"
    gate.parent.mkdir()
    # timeout=: each call ends its batch, so the two run at once on the 2 workers
    tids = [nbgroups.async_task(talk, gate=str(gate), lines=n, group="named", timeout=120)
            for n in (1, 2)]
    _seen("named", "lines=1) │ line 0")
    out = _seen("named", "lines=2) │ line 1")
    labels = {line.split(" │ ")[0] for line in out.lines}
    assert {label.rsplit(", ", 1)[1] for label in labels} == {"lines=1)", "lines=2)"}
    assert all(label.startswith("talk(gate='") and len(label) <= forward.LABEL_MAX
               for label in labels)
    gate.touch()
    assert [nbgroups.result(t, wait=-1) for t in tids] == [1, 2]


def test_ten_megabytes_live_are_bounded_and_do_not_stall_the_group(live, tmp_path):
    gate = str(tmp_path / "gate")
    big = nbgroups.async_task(flood, 10, gate, group="flood")
    out = _seen("flood", "last line")
    # the group goes on meanwhile: other tasks of it run and finish beside the flood
    done = tmp_path / "open"
    done.touch()
    others = [nbgroups.async_task(talk, 1, str(done), group="flood") for _ in range(4)]
    assert [nbgroups.result(t, wait=-1) for t in others] == [1] * 4
    assert nbgroups.fetch(big).success is None
    assert len(out.lines) <= forward.LINES
    assert all(len(line) <= forward.LINE_MAX + forward.LABEL_MAX + 4 for line in out.lines)
    # most of it was dropped on the way, and the view says so
    assert any("not shown live" in line for line in out.lines)
    open(gate, "w").close()
    assert nbgroups.result(big, wait=-1) == 10
    t = nbgroups.fetch(big)
    assert t.stdout.endswith("last line\n") and len(t.stdout) < 70_000


def test_live_output_is_off_by_default(nb_loky, tmp_path):
    assert api.settings().live_output is False
    gate = tmp_path / "gate"
    gate.touch()
    tid = nbgroups.async_task(talk, 2, str(gate), group="quiet")
    nbgroups.result(tid, wait=-1)
    assert api.SESSION.live_output("quiet").lines == ()


def test_text_view_prints_the_lines_above_its_line(store_dir, tmp_path):
    _live(store_dir, "loky")
    gate = str(tmp_path / "gate")
    stream = io.StringIO()
    tid = nbgroups.async_task(talk, 2, gate, group="txt")
    view = display.progress("txt", mode="text", stream=stream, display=False)
    _seen("txt", "line 1")
    view.refresh(force=True)
    open(gate, "w").close()
    nbgroups.result(tid, wait=-1)
    view.refresh(force=True)
    text = stream.getvalue()
    assert text.count("│ line 0\n") == 1 and text.count("│ line 1\n") == 1
    assert text.index("│ line 1") < text.index("│ after the gate")


def test_a_torn_slot_is_read_again_later(tmp_path):
    path = str(tmp_path / "m")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        monitor.write_live(fd, 7, 1, 0, 0, "one\n")
        monitor.write_live(fd, 7, 2, 0, 0, "two\n")
        # chunk 2 half rewritten: its CRC no longer matches, so it waits for the next read
        at = monitor.LIVE_AT + 2 * monitor.LIVE_SLOT + monitor.LIVE.size
        os.pwrite(fd, b"X", at)
        assert [c.text for c in monitor.read_live(path, 7, 0)] == ["one\n"]
        monitor.write_live(fd, 7, 2, 0, 0, "two\n")
        assert [c.text for c in monitor.read_live(path, 7, 1)] == ["two\n"]
        assert monitor.read_live(path, 8, 0) == []  # another batch's chunks
    finally:
        os.close(fd)


def test_live_output_setting_is_checked(store_dir):
    with pytest.raises(nbgroups.ArgumentTypeError, match="live_output"):
        nbgroups.configure(store=str(store_dir), live_output="yes")


def test_the_ring_keeps_the_last_chunks_and_the_gap_shows(tmp_path):
    path = str(tmp_path / "m")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for seq in range(1, 11):  # two more than the ring holds, none read meanwhile
            monitor.write_live(fd, 3, seq, 0, 0, f"chunk {seq}\n")
    finally:
        os.close(fd)
    chunks = monitor.read_live(path, 3, 0)
    assert [c.seq for c in chunks] == list(range(3, 11))  # the oldest two overwritten
    assert len(chunks) == monitor.LIVE_SLOTS


def test_unfinished_lines_are_bounded_per_group():
    lines = forward._GroupLines()
    for i in range(100):  # 100 tasks, each ending without a newline
        lines.add(f"t{i}", 0, f"partial {i}")
    now = lines.now()
    assert len(now.open) == forward.OPEN_MAX and now.open[-1] == "t99 │ partial 99"
    assert len(now.lines) == forward.LINES and now.lines[-1] == "t91 │ partial 91"
    lines.add("t99", 0, " done\n")
    assert lines.now().lines[-1] == "t99 │ partial 99 done"
