"""A real Jupyter kernel driven by jupyter_client, for the kernel fault tests.

:func:`kernel` starts the ``python3`` kernelspec (this interpreter, see
``jupyter_env``) with the repository importable; :class:`Kernel` runs code in
it, interrupts it (``interrupt_kernel``: SIGINT to its process group, as
Jupyter's Interrupt button), restarts it gracefully
(``restart_kernel(now=False)``, as Kernel > Restart Kernel) or kills it hard.

Every fault test counts runs with marker files: :func:`runs` reads them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path

from jupyter_client import KernelManager

from tests.jupyter_env import no_running_loop

REPO = Path(__file__).resolve().parents[1]

# Put in a kernel's namespace by Kernel.setup: a call that leaves one marker
# file per run (its name: the call's number, then a unique suffix).
MARKING = """
import os, time, uuid

def slow_until(x, marks, first, fast, starts=None):
    # calls from `first` on wait for the file `fast`: a fault test stops the
    # kernel while they run, never at their end
    if starts:
        with open(os.path.join(starts, f"{x}.{os.getpid()}.{uuid.uuid4().hex}"), "w"):
            pass
    while x >= first and not os.path.exists(fast):
        time.sleep(0.02)
    return mark(x, marks)


def slow_running(starts, first, n=2):
    # until n calls from `first` on have begun (the workers are all inside one)
    while sum(int(p.split(".")[0]) >= first for p in os.listdir(starts)) < n:
        time.sleep(0.02)


def mark(x, marks, seconds=0.0, starts=None):
    if starts:  # a run that began (the marker in `marks`: a run that ended)
        with open(os.path.join(starts, f"{x}.{os.getpid()}.{uuid.uuid4().hex}"), "w"):
            pass
    if seconds:
        time.sleep(seconds)
    with open(os.path.join(marks, f"{x}.{uuid.uuid4().hex}"), "w"):
        pass
    return x
"""


class Kernel:
    """A running kernel and its client."""

    def __init__(self, km: KernelManager) -> None:
        self.km = km
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        return self.km.provisioner.pid  # type: ignore[union-attr]

    def run(self, code: str, timeout: float = 60) -> str:
        """Run ``code``; its stdout. Raises AssertionError with the traceback on an error."""
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content["name"] == "stdout":
                out.append(content["text"])
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        for _ in range(20):
            reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
            # Right after a cell that raised (an interrupt), ipykernel aborts the
            # requests already queued: such a request never ran; send it again.
            if reply["content"]["status"] != "aborted":
                break
            time.sleep(0.05)
        assert reply["content"]["status"] == "ok", "\n".join(errors) or reply
        return "".join(out)

    def start(self, code: str) -> str:
        """Send ``code`` without waiting; its message id (see :meth:`reply`)."""
        return self.kc.execute(code)

    def reply(self, msg_id: str, timeout: float = 60) -> dict:
        """The execute reply of ``msg_id`` (the content)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no reply to {msg_id} in {timeout} s"
            try:
                msg = self.kc.get_shell_msg(timeout=left)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]

    def setup(self, store: Path, marks: Path, workers: int = 2) -> None:
        """configure() and the marking function, in the kernel."""
        self.run(MARKING + f"""
import nbgroups
nbgroups.configure(store={str(store)!r}, workers={workers}, progress=False)
MARKS = {str(marks)!r}
""")


@contextlib.contextmanager
def kernel(cwd: Path) -> Iterator[Kernel]:
    """A fresh ``python3`` kernel in ``cwd``, shut down (or found dead) after."""
    no_running_loop()
    km = KernelManager(kernel_name="python3")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    km.start_kernel(cwd=str(cwd), env=env)
    k = None
    try:
        k = Kernel(km)
        yield k
    finally:
        if k is not None:
            k.kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
        km.cleanup_resources()


def runs(marks: Path) -> dict[int, int]:
    """How many times each call ran, by its number (one marker file per run)."""
    counts: dict[int, int] = {}
    for p in marks.iterdir():
        x = int(p.name.split(".", 1)[0])
        counts[x] = counts.get(x, 0) + 1
    return counts


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: it runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
