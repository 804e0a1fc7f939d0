"""Worker side: run a batch of calls and report how each one ended. Never raises.

A batch arrives as one cloudpickled payload ``(batch_id, funcs, calls[, options])``:

* ``funcs``: ``[(display name, pickled callable or None[, stored values])]`` —
  None means the name is a dotted path resolved here (``'math.modf'``); the
  stored values are the large ones the callable captures, which its pickle
  refers to by digest (read from the batch's value directory: :mod:`nbgroups.values`);
* ``calls``: ``[(task id, func index, args, kwargs, iterable, attempts)]`` —
  for an ``async_iter`` chunk ``iterable`` is true and ``args`` is the list of
  items; ``attempts`` is the run's number, echoed back;
* ``options`` (optional): ``(capture, log level[, live output[, values]])``:
  whether each call's output is captured (:mod:`nbgroups.capture`), from which
  logging level, and whether it is also forwarded live (:mod:`nbgroups.forward`);
  where the large arguments stored by digest are read from (the store's value
  directory: :mod:`nbgroups.values`);
* ``split`` (optional): when true, ``calls`` holds ``(task id, pickled call,
  attempts)`` instead: each call is unpickled on its own (see :func:`run_batch`).

It returns one row per call, in order, already in the store's outcome layout
(built by :mod:`nbgroups.outcome`): ``result`` is the pickled return value
(for a chunk, the pickled list of the items' results, exceptions in place of
failures) and ``error`` the pickled exception. The runner stores these rows
as they come: no per-call rebuilding in the kernel. Every failure — an exception, an unpicklable
result, a dotted path that does not resolve — becomes data.

``monitor`` (optional) is a file the worker stamps before each call with
``(batch id, call index, pid, start time)``: if the process dies, the runner
reads it to learn which call killed the worker and which calls of the batch
never ran.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from . import capture, forward, outcome, reporting, values
from . import monitor as monitor_file
from .errors import ArgumentTypeError, SerializationError, TaskError, UnresolvedPath
from .serialize import UnloadableArgument, dumps_result, loads

_func_cache: dict[str | bytes, Any] = {}  # callables of recent batches, loaded once
_pool_worker = False  # this process is a pool worker (init_worker ran): its logging is ours
_whoami: list = [None, ""]  # (pid, 'host:pid'): computed again in a forked child

try:
    from resource import RUSAGE_SELF, getrusage
except ImportError:  # not on Windows: no peak memory there
    getrusage = None  # type: ignore[assignment]
# ru_maxrss is in kilobytes on Linux, in bytes on macOS
_RSS_UNIT = 1 if os.uname().sysname == "Darwin" else 1024


_parent = 0  # the pid of the kernel that started this pool worker (0: not a pool worker)
ORPHAN_CHECK_SECONDS = 0.2


def init_worker(parent: int | None = None) -> None:
    """Pool initializer: ignore the kernel's SIGINT (Jupyter interrupts the whole
    process group; a worker must neither die nor print a traceback for it), and
    exit when the kernel is gone.

    A kernel killed hard (kill -9, the out-of-memory killer) leaves its loky
    workers behind, reparented: they went on running the batches already in
    loky's queue, for good, and a resume from the next kernel ran those calls a
    second time. Now a worker checks its parent before each call (one
    ``getppid``: no new call starts once the kernel is gone) and a watchdog
    thread ends the process within ORPHAN_CHECK_SECONDS even inside a call (its
    task stays unfinished in the store: ``resume_group`` runs it).

    ``parent`` is the kernel's pid, passed by the pool: a worker that starts
    after the kernel was killed (reparented already) exits at once, where
    taking ``getppid()`` then would have kept it forever (seen: two idle
    orphans left by a test that kills its kernel right after submitting).
    """
    global _parent, _pool_worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pool_worker = True  # its logging is ours (see start_capture)
    _parent = parent if parent is not None else os.getppid()
    if os.getppid() != _parent:
        os._exit(0)
    threading.Thread(target=_watch_parent, name="nbgroups-orphan-watch", daemon=True).start()


def _watch_parent() -> None:
    while True:
        time.sleep(ORPHAN_CHECK_SECONDS)  # no event tells a child its parent died
        if os.getppid() != _parent:
            os._exit(0)


def worker_name() -> str:
    """``'host:pid'`` of this process."""
    pid = os.getpid()
    if _whoami[0] != pid:
        _whoami[0], _whoami[1] = pid, f"{socket.gethostname()}:{pid}"
    return _whoami[1]


RSS_EVERY = 0.005  # seconds: calls ending closer together share one reading of ru_maxrss
_last: list = [0.0, None, None]  # when ru_maxrss was read, its value, the quiet info tuple


def _info(cap: capture.Capture | None) -> tuple:
    """``(stdout, stderr, worker, peak memory)`` of the call that just ended.

    Tiny calls cost ~1 us each here, not ~5: ru_maxrss is read again only after
    RSS_EVERY seconds (a peak cannot drop, and a few ms of tiny calls barely
    move it), and calls that printed nothing share one tuple (pickled once).
    """
    if cap is None:
        out = err = None
    else:
        if cap.live is not None:
            cap.live.end_call()  # its last live chunk, before the outcome goes back
        out, err = capture.take(cap)
    last = _last
    now = time.monotonic()
    if now - last[0] >= RSS_EVERY or last[2] is None:
        rss = getrusage(RUSAGE_SELF).ru_maxrss * _RSS_UNIT if getrusage is not None else None
        last[0] = now
        if rss != last[1] or last[2] is None or last[2][2] != worker_name():
            last[1], last[2] = rss, (None, None, worker_name(), rss)
    if out is None and err is None:
        return last[2]
    return (out, err, last[2][2], last[1])


def start_capture(options: tuple | None, inline: bool = False, own_process: bool = False
                  ) -> bool | None:
    """Install the capture a batch's ``options`` ask for: its ``tee`` flag for
    :func:`run_one` (None: capture off). Inline runs also show output as usual."""
    if options is not None and not options[0]:
        return None
    capture.install(options[1] if options is not None else None,
                    own_process=own_process or _pool_worker)
    return inline


def resolve(path: str) -> Any:
    """Import ``'package.module.attr'`` (attributes may be nested)."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    if len(parts) == 1:
        import builtins

        return getattr(builtins, path)
    raise UnresolvedPath(f"no module found for {path!r}")


def _load_func(entry: tuple, src: Any = None) -> Any:
    """A batch's callable: ``entry`` is ``(name, pickle or None)``, or ``(name,
    pickle, stored values)`` when it captures large values stored by digest
    (read from ``src``: once per process, since the loaded callable is kept)."""
    name, blob = entry[0], entry[1]
    key = name if blob is None else blob  # a dotted path, or the pickled callable
    func = _func_cache.get(key)
    if func is not None:
        return func
    if blob is not None and len(entry) > 2:
        func = values.load_func(blob, src)
    elif blob is None:
        try:
            func = resolve(name)
        except (ImportError, AttributeError, UnresolvedPath) as exc:
            raise UnresolvedPath(f"cannot resolve dotted path {name!r}: {exc}") from None
        if not callable(func):
            raise ArgumentTypeError(
                f"dotted path {name!r} names a {type(func).__name__}, not a callable")
    else:
        func = loads(blob)
    if len(_func_cache) > 64:
        _func_cache.clear()
    _func_cache[key] = func
    return func


def run_one(call: tuple, funcs: list, loaded: dict, passthrough: tuple = (),
            tee: bool | None = None, live: Any = None, src: Any = None) -> tuple:
    """One call of a batch (``loaded``: the batch's callables loaded so far);
    ``tee``: from :func:`start_capture` (None: output not captured); ``live``:
    the batch's live-output sink (:mod:`nbgroups.forward`), or None; ``src``:
    where its stored arguments are read (:func:`nbgroups.values.source`)."""
    key, fidx, args, kwargs, iterable, attempts = call
    cap = None if tee is None else capture.start(tee, live)
    try:
        func = loaded.get(fidx)
        if func is None:
            func = loaded[fidx] = _load_func(funcs[fidx], src)
        if src is not None:  # each call rebuilds its own objects over the shared maps
            if iterable:
                args = values.resolve_items(args, src)
            else:
                args, kwargs = values.resolve_call(args, kwargs, src)
        if UnloadableArgument in map(type, args) or (
                kwargs and UnloadableArgument in map(type, kwargs.values())):
            bad = next(a for a in (*args, *(kwargs or {}).values())
                       if type(a) is UnloadableArgument)
            raise unloadable(bad.message)
    except BaseException as exc:
        return outcome.failure(key, attempts, None, exc, info=_info(cap))
    if iterable:
        return run_items(key, attempts, func, args, passthrough, cap)
    return run_call(key, attempts, func, args, kwargs, passthrough, cap)


def run_call(key: str, attempts: int, func: Callable[..., Any], args: tuple,
             kwargs: dict | None, passthrough: tuple = (),
             cap: capture.Capture | None = None) -> tuple:
    """One call: its outcome tuple (the result pickled, or the failure)."""
    started = time.time()
    try:
        value = func(*args, **(kwargs or {}))
    except passthrough:
        if cap is not None:
            capture.take(cap)
        raise
    except BaseException as exc:  # a task's own SystemExit is a failure too
        return outcome.failure(key, attempts, started, exc, info=_info(cap))
    info = _info(cap)
    try:  # framed: large buffers (an ndarray) raw, so that a read may map them
        blob = dumps_result(value, frame=True)
    except BaseException as exc:  # whatever pickling the result raises
        return outcome.failure(key, attempts, started, exc, info=info)
    return outcome.success(key, attempts, started, blob, info)


def run_items(key: str, attempts: int, func: Callable[..., Any], items: list,
              passthrough: tuple = (), cap: capture.Capture | None = None) -> tuple:
    """An ``async_iter`` chunk: results in input order, exceptions in place."""
    started = time.time()
    results: list = []
    first: BaseException | None = None
    for item in items:
        try:
            results.append(func(*item) if isinstance(item, tuple) else func(item))
        except passthrough:
            if cap is not None:
                capture.take(cap)
            raise
        except BaseException as exc:
            if first is None:
                first = exc
            else:
                exc.__traceback__ = None
            results.append(exc)
    info = _info(cap)
    try:
        blob = dumps_result(results)  # the C pickler, else cloudpickle (notebook classes)
    except TaskError:  # some item's result cannot be pickled at all: fail just those
        fixed = []
        for value in results:
            try:
                dumps_result(value)
                fixed.append(value)
            except TaskError as exc:
                if first is None:
                    first = exc
                fixed.append(exc)
        blob = dumps_result(fixed)
    if first is None:
        return outcome.success(key, attempts, started, blob, info)
    return outcome.failure(key, attempts, started, first, result=blob, info=info)


def run_batch(payload: bytes, monitor: str | None = None,
              inline: bool = False) -> list[tuple] | str:
    """Run every call of a batch; one outcome tuple per call, in order.

    If the batch itself cannot be unpickled here (an argument of one call
    names a module the worker cannot import), nothing runs and the reason
    comes back as a string: the runner then sends the batch again with each
    call pickled on its own (``split``), so that only that call fails.

    ``inline`` (the sync backend): a KeyboardInterrupt is the user's Ctrl-C,
    not the task's failure, and propagates. Pool workers ignore SIGINT, so
    there a KeyboardInterrupt can only be the task's own.
    """
    passthrough = (KeyboardInterrupt,) if inline else ()
    try:
        batch = loads(payload)
    except BaseException as exc:  # e.g. an argument's class from a module not importable here
        return f"{type(exc).__name__}: {exc}"
    batch_id, funcs, calls = batch[:3]
    options = batch[3] if len(batch) > 3 else None
    split = len(batch) > 4 and batch[4]  # each call pickled alone: (id, pickled call, attempts)
    tee = start_capture(options, inline)
    src = values.source(options[3]) if options is not None and len(options) > 3 else None
    if options is not None and len(options) > 4 and options[4]:
        _follow_cwd(options[4])
    out: list[tuple] = []
    fd = monitor_file.worker_fd(monitor) if monitor else None
    live = live_sink(options, tee, fd, batch_id, calls, inline)
    reporting.enter(fd, batch_id, calls)
    try:
        _run_calls(batch_id, funcs, calls, fd, passthrough, tee, out, split, live, src)
    finally:
        reporting.leave()
    return out


def _follow_cwd(path: str) -> None:
    """Run the batch in the kernel's working directory (sent with it): a pool's
    workers keep the one they started in, so after a notebook's ``os.chdir``
    a task's relative ``open('data.csv')`` failed. A directory this process
    cannot enter leaves it where it is."""
    try:
        if os.getcwd() != path:
            os.chdir(path)
    except OSError:
        pass


def live_sink(options: tuple | None, tee: bool | None, fd: int | None, batch_id: int,
              calls: list, inline: bool = False) -> Any:
    """The batch's live-output sink when the ``live_output`` setting is on (and output
    is captured), else None: a pool worker's goes to the monitor file, a call in the
    kernel's process (thread backend) straight to the hub; inline calls print as usual."""
    if not live_wanted(options, tee) or inline:
        return None
    return forward.FileSink(fd, batch_id) if fd is not None else forward.LocalSink(calls)


def live_wanted(options: tuple | None, tee: bool | None) -> bool:
    """Whether a batch's ``options`` ask for live output (and its output is captured)."""
    return tee is not None and options is not None and len(options) > 2 and bool(options[2])


def _run_calls(batch_id: int, funcs: list, calls: list, fd: int | None, passthrough: tuple,
               tee: bool | None, out: list, split: bool = False, live: Any = None,
               src: Any = None) -> None:
    """:func:`run_batch`'s loop: each call stamped, then run, its row appended to ``out``."""
    loaded: dict[int, Any] = {}
    where = reporting.current
    pid = os.getpid()
    parent = _parent
    for i, call in enumerate(calls):
        if parent and os.getppid() != parent:
            os._exit(0)  # the kernel is gone: start no new call (see init_worker)
        if fd is not None and monitor_file.stamp_and_check(fd, batch_id, i, pid):
            now = time.time()
            out += [outcome.cancelled(c[0], c[-1], now, now) for c in calls[i:]]
            break
        if split:
            try:
                call = loads(call[1])
            except BaseException as exc:
                out.append(outcome.failure(call[0], call[-1], None, unloadable(exc)))
                continue
        where.index = i  # the call nbgroups.report() speaks for
        out.append(run_one(call, funcs, loaded, passthrough, tee, live, src))


def unloadable(exc: BaseException | str) -> SerializationError:
    """Why a call's arguments could not be unpickled in the worker, as its failure
    (``exc``: the error, or its text)."""
    why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return SerializationError(
        f"the arguments of this task could not be loaded in the worker ({why}); it was "
        "not run. Whatever they hold must be importable in the worker: a class or "
        "function defined in the notebook, or in a module the worker can import (a "
        "sys.path change made in the kernel after the pool started does not reach its "
        "workers); and an object must unpickle from what it pickles (an exception whose "
        "__init__ takes other arguments than its args needs a __reduce__)")
