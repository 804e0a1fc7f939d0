"""Exit: the runners stop before loky's own exit hook, and close at exit.

At interpreter exit a runner with calls still queued must neither print
tracebacks (loky's hook makes pools refuse work first) nor hold the exit for
calls nobody will record: what was not run stays queued in the store, and
``resume_group`` runs it later. See :func:`hook_exit`.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import weakref

RUNNERS: weakref.WeakSet = weakref.WeakSet()  # every runner whose thread started


@atexit.register
def close_all() -> None:
    for runner in list(RUNNERS):
        with contextlib.suppress(Exception):
            runner.close()


def stop_all() -> None:
    """At exit, before loky's hook: stop the runners. A pool running calls is
    stopped now (loky's hook would hold the exit until they end, with nobody left
    to record them: they stay queued in the store, resumable); an idle pool is
    left to loky's hook, which ends it gently."""
    for runner in list(RUNNERS):
        with contextlib.suppress(Exception):
            runner.close(pool=runner.in_flight)


_exit_hooks = 0


def hook_exit() -> None:
    """Stop the runners at exit before loky's own exit hook.

    loky (like concurrent.futures) registers that hook with
    ``threading._register_atexit`` when a process's first pool starts: it runs
    before any ``atexit`` handler, while daemon threads still run, and makes
    every pool refuse work. A runner with calls still queued then met "cannot
    schedule new futures after interpreter shutdown" at each batch. Ours is
    registered when the runner thread starts and again after loky's (last
    registered, first run): the runners stop dispatching, and what they had not
    run stays queued in the store, resumable. Idle pools are left to loky's hook
    (then ``close_all``): killing idle workers from here made loky's resource
    tracker warn at exit about a semaphore already gone (4 exits in 110; 0 in 60
    left to loky).
    """
    global _exit_hooks
    _exit_hooks += 1
    register = getattr(threading, "_register_atexit", None)  # CPython >= 3.9
    if register is not None:
        with contextlib.suppress(RuntimeError):  # the interpreter is exiting already
            register(stop_all)


def exiting() -> bool:
    """Whether the interpreter is shutting down (threads' exit hooks running, or later)."""
    return sys.is_finalizing() or getattr(threading, "_SHUTTING_DOWN", False)


def hooks_registered() -> int:
    """How many times :func:`hook_exit` registered the hook in this process."""
    return _exit_hooks
