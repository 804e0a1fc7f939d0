"""Exit: what happens to submitted tasks when the interpreter or the kernel stops.

* A non-interactive interpreter (a script) waits at exit for what it
  submitted, as ``concurrent.futures`` does (a line of progress on stderr
  when it is a terminal; Ctrl-C stops the wait).
* An interactive one (a Jupyter kernel, ``python -i``, IPython) does not: its
  runners stop, and what was queued or running stays unfinished in the store.
* A kernel's shutdown or restart request (Kernel > Restart) stops the runners
  *before* ipykernel terminates its child processes (:func:`hook_kernel`): the
  workers' deaths then are not recorded as the tasks' failures.

Either way what is left unfinished is named on stderr, with how to resume it.
A runner with calls queued must neither print tracebacks at exit (loky's
hook makes pools refuse work first) nor hold the exit of an interactive
process for calls nobody will record. See :func:`hook_exit`.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

RUNNERS: weakref.WeakSet = weakref.WeakSet()  # every runner whose thread started
PROGRESS_SECONDS = 0.5

_stopping = False  # the kernel was asked to shut down, or the exit wait ended
waiting = False  # the exit waits for tasks now (Ctrl-C stops it)
_reported: set[int] = set()  # runners whose leftovers were named on stderr


@atexit.register
def close_all() -> None:
    for runner in list(RUNNERS):
        with contextlib.suppress(Exception):
            runner.close()
    report_all()


def stop_all() -> None:
    """At exit, before loky's hook: a script first waits for its runners' tasks;
    then the runners stop. A pool running calls is stopped now (loky's hook
    would hold the exit until they end, with nobody left to record them: they
    stay unfinished in the store, resumable); an idle pool is left to loky's
    hook, which ends it gently."""
    global _stopping
    runners = [r for r in list(RUNNERS) if not r.closed]
    late = []
    if runners and not _stopping and not interactive():
        late = _wait_for(runners)
    _stopping = True
    for runner in runners:
        with contextlib.suppress(Exception):
            runner.close(pool=runner.in_flight)
    for hook in reversed(late):  # last registered, first run, as threading does
        with contextlib.suppress(Exception):
            hook()
    report_all()


def interactive() -> bool:
    """Whether this interpreter is interactive (a kernel, IPython, ``python -i``):
    its exit does not wait for tasks."""
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return True
    ipython = sys.modules.get("IPython")
    return ipython is not None and ipython.get_ipython() is not None


def _wait_for(runners: list) -> list:
    """Wait until every runner is idle; Ctrl-C (or a store error) stops the wait.
    A line of progress on stderr when it is a terminal. Returns the exit hooks
    that pools started meanwhile registered (see :func:`_hooks_open`)."""
    global waiting
    tty = _isatty()
    shown = False
    with _hooks_open() as late:
        try:
            waiting = True
            for runner in runners:
                while not runner.wait(runner.idle, PROGRESS_SECONDS):
                    if tty:
                        left = sum(runner.unfinished().values())
                        sys.stderr.write(f"\rnbgroups: waiting for {left} task(s) to finish "
                                         "(Ctrl-C stops waiting; they can be resumed)  ")
                        sys.stderr.flush()
                        shown = True
        except KeyboardInterrupt:
            pass  # what is left is named by report_all, resumable
        except Exception as exc:  # the store failed: what is left is named too
            sys.stderr.write(f"\nnbgroups: {exc}\n")
        finally:
            waiting = False
            if shown:
                sys.stderr.write("\n")
    return late


@contextlib.contextmanager
def _hooks_open() -> Iterator[list]:
    """Let pools start while the exit waits.

    Our hook runs in ``threading._shutdown``, where registering another exit
    hook raises "can't register atexit after shutdown" -- and a pool's first
    start registers one (loky's, ``concurrent.futures``'): a script that
    submits and exits at once starts its pool during the wait. Registration
    is allowed again meanwhile; the hooks registered are taken out of
    threading's list (already being walked) and handed back, for the caller to
    run once its runners are closed (when they would have run)."""
    hooks = getattr(threading, "_threading_atexits", None)
    late: list = []
    if hooks is None or not getattr(threading, "_SHUTTING_DOWN", False):
        yield late
        return
    n = len(hooks)
    threading._SHUTTING_DOWN = False  # type: ignore[attr-defined]
    try:
        yield late
    finally:
        threading._SHUTTING_DOWN = True  # type: ignore[attr-defined]
        late += hooks[n:]
        del hooks[n:]


def report_all() -> None:
    """Name on stderr, once per runner, the tasks left unfinished, and how to resume them."""
    for runner in list(RUNNERS):
        if id(runner) in _reported or not runner.closed:
            continue
        _reported.add(id(runner))
        with contextlib.suppress(Exception):
            for (cached, group), n in sorted(runner.unfinished().items(),
                                             key=lambda kv: str(kv[0][1])):
                if not n:
                    continue
                if cached:
                    how = "(cache layer: submit them again)"
                elif group is None:
                    how = "(no group: resume them by id is not possible; use a group)"
                else:
                    how = f"resume with nbgroups.resume_group({group!r})"
                sys.stderr.write(f"nbgroups: {n} task(s) of group {group!r} left "
                                 f"unfinished; {how}\n")
            sys.stderr.flush()


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def hook_kernel() -> None:
    """In a Jupyter kernel, stop the runners when a shutdown or restart is
    requested: ipykernel then terminates its child processes (SIGTERM, then
    SIGKILL), and a runner still running would record its workers' deaths as
    the tasks' failures (Kernel > Restart failed 3-5 calls of 24; resume did
    not run them). ``do_shutdown`` is ipykernel's documented override point."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    kernel = getattr(shell, "kernel", None)
    original = getattr(kernel, "do_shutdown", None)
    if original is None or getattr(original, "_nbgroups", False):
        return

    def do_shutdown(restart: bool) -> Any:
        global _stopping
        _stopping = True  # the tasks are not waited for: the kernel is going
        with contextlib.suppress(Exception):
            stop_all()
        return original(restart)

    do_shutdown._nbgroups = True  # type: ignore[attr-defined]
    kernel.do_shutdown = do_shutdown  # type: ignore[union-attr]


def stopping() -> bool:
    """Whether the kernel or interpreter is stopping its runners."""
    return _stopping


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
