"""Live output through a real kernel (jupyter_client): a cell submits a task that
prints and then waits for a file; the printed lines reach the progress view in
that cell (widget updates on iopub, parented to the cell) while the task still
runs, and only then does the test create the file that lets it finish."""

from __future__ import annotations

import queue
import time

import pytest

from tests.kernels import kernel

pytestmark = pytest.mark.timeout(300)

SETUP = """
%load_ext nbgroups
import os, time
import nbgroups
nbgroups.configure(store={store!r}, workers=2, live_output=True, progress='widget')

def talk(gate):
    for i in range(3):
        print(f'step {{i}} of the task')
    while not os.path.exists(gate):
        time.sleep(0.01)
    print('released')
    return 'done'
"""


def _widget_values(msg: dict) -> list[str]:
    """The string values a widget message sets (comm_open / comm_msg state)."""
    content = msg["content"]
    state = content.get("data", {}).get("state", {})
    return [v for v in state.values() if isinstance(v, str)]


def test_printed_lines_reach_the_submitting_cell_while_the_task_runs(tmp_path):
    gate = tmp_path / "gate"
    with kernel(tmp_path) as k:
        k.run(SETUP.format(store=str(tmp_path / "store")))
        cell = k.start(f"t = nbgroups.async_task(talk, {str(gate)!r}, group='live')\n"
                       "nbgroups.result(t, wait=-1)")
        deadline = time.monotonic() + 120
        seen = None
        while seen is None:
            left = deadline - time.monotonic()
            assert left > 0, "the task's lines never reached the cell's view"
            try:
                msg = k.kc.get_iopub_msg(timeout=min(left, 1))
            except queue.Empty:
                continue
            if msg["msg_type"] not in ("comm_msg", "comm_open"):
                continue
            for value in _widget_values(msg):
                if "step 2 of the task" in value:
                    seen = msg
        # the view is in the cell that submitted, which still runs (it waits on the
        # task, which waits on the gate): the output came while the task ran
        assert seen["parent_header"].get("msg_id") == cell
        assert "talk(" in next(v for v in _widget_values(seen) if "step 2" in v)
        gate.touch()
        reply = k.reply(cell, timeout=60)
        assert reply["status"] == "ok"
        out = k.run("print(nbgroups.fetch(t).stdout)")
        assert "step 0 of the task\nstep 1 of the task\nstep 2 of the task\nreleased" in out


def test_debug_button_raises_in_the_kernel_for_pdb(tmp_path):
    """The failure view's Debug button, clicked in a real kernel: the call runs again
    there, and its exception is kept for ``%debug`` from the call's own frame on."""
    with kernel(tmp_path) as k:
        k.run(SETUP.format(store=str(tmp_path / "store")) + """
def simulate(k):
    if k <= 0:
        raise ValueError(f'k must be > 0, got k={k}')
    return k
""")
        k.run("g = nbgroups.sweep(simulate, 'dbg', k=[0, 1])\n"
              "nbgroups.result_group('dbg', wait=-1)\n"
              "from nbgroups import display\n"
              "view = display.progress('dbg', mode='widget', display=False)\n"
              "view.refresh(force=True)")
        out = k.run("import sys\n"
                    "(button,) = view.adapter.debug_buttons\n"
                    "button.click()\n"
                    "print(type(sys.last_value).__name__, sys.last_value)\n"
                    "print(sys.last_traceback.tb_frame.f_code.co_name)")
        # (what the button printed goes to its Output widget in a front end; here the
        # client gets it as the cell's stream)
        assert "Run %debug in a cell" in out
        assert out.splitlines()[-2:] == ["ValueError k must be > 0, got k=0", "simulate"], out
