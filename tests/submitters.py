"""A submitting process for the kill tests: a Python process playing a kernel
that submits work and is then killed with SIGKILL, as the out-of-memory killer
or `kill -9` would (tests/test_fault_kernel_kill.py, test_futures_resume.py,
test_fault_dask_kernel_kill.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def submitter(code: str, *args: str) -> Iterator[subprocess.Popen]:
    """Run ``code`` (``python -c``, the repository on its path, in a session of its
    own) with ``args``; yield the process once it printed ``submitted``. At the
    end of the block it is killed if it still runs, and its pipes are closed."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == "submitted", proc.stderr.read()
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def kill_hard(proc: subprocess.Popen) -> None:
    """SIGKILL to the process's whole group (the kernel and the workers it forked),
    then reap it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
