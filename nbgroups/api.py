"""The public face: django-q's task-group API, with DESIGN.md's fixes.

Everything here validates its arguments at the call (before anything is
stored), then talks to the kernel's :class:`~nbgroups.runner.Runner` (to
submit and to wait) and to the store (to read).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import names
from .arguments import (
    OPTION_NAMES,
    build_options,
    check_bool,
    check_count,
    check_func,
    check_group,
    split_kwargs,
    wait_seconds,
)
from .config import CHECK, Settings, from_environment
from .control import owner_alive
from .errors import ArgumentTypeError, ConfigurationError
from .jobs import Options
from .records import State, TaskList, TaskRecord
from .runner import Runner
from .store import Store

_lock = threading.RLock()
_settings: Settings | None = None
_runner: Runner | None = None
_default_group: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nbgroups_default_group", default=None
)
_default_options: contextvars.ContextVar[dict] = contextvars.ContextVar(
    "nbgroups_default_options", default={}  # noqa: B039 - never mutated
)
_submit_listeners: list[Callable[[str | None, int | None], None]] = []
_wait_listeners: list[Callable[[bool], None]] = []  # told when a wait begins/ends


# ---------------------------------------------------------------- configuration
def settings() -> Settings:
    """The settings in force (defaults overridden by ``NBGROUPS_*`` variables)."""
    global _settings
    current = _settings
    if current is not None:  # the hot path: no lock
        return current
    with _lock:
        if _settings is None:
            _settings = from_environment()
        return _settings


def configure(**changes: Any) -> Settings:
    """Change this kernel's settings; returns the settings now in force.

    Keywords: ``store`` (directory), ``workers``, ``backend`` (``'loky'``,
    ``'thread'``, ``'sync'``, ``'dask'``), ``progress`` (``'auto'``,
    ``'widget'``, ``'text'``, ``False``), defaults for ``timeout``,
    ``retries``, ``cached``, ``reuse``, and ``cache_ttl``, ``address``,
    ``client`` (Dask). Each has an environment variable ``NBGROUPS_<NAME>``.
    Tasks already running finish on the previous runner.

    >>> configure(backend="sync", store=str(tmp_store)).backend
    'sync'
    """
    global _settings, _runner
    with _lock:
        new = settings().replace(**changes)
        _check_backend(new)
        rebuild = _runner is None or any(
            getattr(new, k) != getattr(_settings, k)
            for k in ("store", "workers", "backend", "address", "client")
        )
        if rebuild:
            # Opens the store now: a bad directory fails here, and then the
            # settings and the runner in force stay as they were.
            fresh = _new_runner(new)
            old, _runner = _runner, fresh
            if old is not None:
                _retire(old)
        else:
            _runner.settings = new
        _settings = new
        return new


def _check_backend(s: Settings) -> None:
    if s.backend != "dask":
        return
    if s.address is None and s.client is None:
        raise ConfigurationError(
            "backend='dask' needs address='tcp://host:port' or client=Client(...)")
    from .dask_backend import prepare

    prepare(s)  # distributed missing, or a wrong address: fail here, not later


def _new_runner(s: Settings, store: Store | None = None) -> Runner:
    r = Runner(s, store=store)
    r.record_class = Task  # hooks get the api's Task, with its group helpers
    return r


def _retire(runner: Runner) -> None:
    """Let a replaced runner finish what it runs, then stop it, off the caller's thread."""
    def drain() -> None:
        runner.close(wait=True)

    threading.Thread(target=drain, name="nbgroups-retire", daemon=True).start()


def runner() -> Runner:
    """The kernel's runner (created, with its store, on first use)."""
    global _runner
    r = _runner
    if r is not None:
        return r
    with _lock:
        if _runner is None:
            s = settings()
            _check_backend(s)  # NBGROUPS_BACKEND=dask without configure() is checked too
            _runner = _new_runner(s)
        return _runner


@contextlib.contextmanager
def default_group(group: str | None, **options: Any) -> Iterator[None]:
    """Make ``group`` (and ``options``) the default of every submission inside."""
    if group is not None:
        check_group(group)
    token = _default_group.set(group)
    otoken = _default_options.set(options)
    try:
        yield
    finally:
        _default_group.reset(token)
        _default_options.reset(otoken)


# ---------------------------------------------------------------- options
_options_cache: dict = {}


def _options(raw: dict) -> tuple[Options, dict]:
    """Validate submission options, fill defaults; returns (Options, flags).

    Memoized on the raw options and the defaults in force: a loop of ten
    thousand ``async_task(..., group=g)`` validates once.
    """
    s = settings()
    defaults = _default_options.get()
    try:
        # the common case, group= alone, keys on the string: no nested tuple to hash
        # (True == 1 and hash alike: the value's type is part of the key)
        items = raw.get("group") if len(raw) == 1 and "group" in raw else \
            tuple((k, type(v), v) for k, v in raw.items())
        key = (items, _default_group.get(), id(defaults), id(s))
        hit = _options_cache.get(key)
    except TypeError:  # an unhashable option value: validate every time
        key, hit = None, None
    if hit is not None and hit[2] is defaults and hit[3] is s:
        return hit[0], hit[1]
    opts, flags = build_options(raw, s, defaults, _default_group.get())
    if key is not None:
        if len(_options_cache) > 256:
            _options_cache.clear()
        _options_cache[key] = (opts, flags, defaults, s)
    return opts, flags  # shared, read-only


def _submitted(group: str | None, ttl: int | None) -> None:
    if _submit_listeners:
        for listener in list(_submit_listeners):
            listener(group, ttl)


def _wait(r: Runner, predicate: Callable[[], bool], timeout: float | None) -> bool:
    """``r.wait``, with the wait listeners told when it begins and ends: a text view
    draws while a wait blocks, and has drawn its last line when the wait returns."""
    listeners = list(_wait_listeners)
    for listener in listeners:
        listener(True)
    try:
        return r.wait(predicate, timeout)
    finally:
        for listener in listeners:
            listener(False)


# ---------------------------------------------------------------- submission
def async_task(func: Callable | str, *args: Any, **kwargs: Any) -> str:
    """Submit one call of ``func``; returns the task id (32 hex digits).

    ``func`` is a callable (lambdas and notebook functions work) or a dotted
    path (``'math.modf'``) resolved in the worker. The keywords ``group``,
    ``cached``, ``timeout``, ``retries``, ``hook``, ``sync``, ``save``,
    ``task_name``, ``reuse`` are options; the others go to ``func``. Pass
    ``q_options={...}`` when ``func`` itself takes one of those keywords.

    >>> tid = async_task('math.modf', 2.5, group='doc', sync=True)
    >>> result(tid)
    (0.5, 2.0)
    """
    check_func(func)
    raw, fkwargs = split_kwargs(kwargs)
    opts, flags = _options(raw)
    if flags["reuse"]:
        from .reuse import submit_reusing

        ids = submit_reusing(runner(), func, [(args, fkwargs)], opts, inline=flags["sync"])
    else:
        ids = runner().submit(func, [(args, fkwargs)], opts, inline=flags["sync"],
                              raise_errors=flags["sync"])
    _submitted(opts.group, opts.ttl)
    return ids[0]


def async_iter(func: Callable | str, args_iter: Iterable, **options: Any) -> str:
    """Submit ``func`` over every item of ``args_iter`` as one task; returns its id.

    Tuples are unpacked into positional arguments. ``result(id)`` is the list
    of results in input order; the task succeeded only if every item did.
    Items go to the workers in batches: much faster than one task per item.

    >>> result(async_iter('math.floor', [1.5, 2.5], sync=True))
    [1, 2]
    """
    check_func(func)
    if not isinstance(args_iter, Iterable) or isinstance(args_iter, str | bytes):
        raise ArgumentTypeError(f"args_iter must be an iterable of arguments, got {args_iter!r}")
    opts, flags = _options(options)
    items = list(args_iter)
    if flags["reuse"]:  # the whole iterable is one call: the same items reuse the task
        from .reuse import submit_reusing

        ids = submit_reusing(runner(), func, [(items, None)], opts, inline=flags["sync"],
                             iterable=True)
    else:
        ids = runner().submit(func, [(items, None)], opts, iterable=True,
                              inline=flags["sync"], raise_errors=flags["sync"])
    _submitted(opts.group, opts.ttl)
    return ids[0]


def sweep(func: Callable | str, group: str, **grid: Any) -> str:
    """One task per point of the Cartesian product of the keyword lists; returns ``group``.

    Option keywords (``reuse``, ``timeout``, ...) are options, not grid axes.
    With ``reuse=True`` a point already done successfully in the group is not
    run again, so a sweep cell can be re-run after extending a list.

    >>> g = sweep(pow, 'doc-sweep', base=[2, 3], exp=[2], sync=True)
    >>> result_group(g)
    [4, 9]
    """
    check_func(func)
    check_group(group)
    raw = {k: grid.pop(k) for k in list(grid) if k in OPTION_NAMES}
    raw["group"] = group
    axes = {}
    for name, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise ArgumentTypeError(f"sweep axis {name!r} must be a list of values, got {values!r}")
        axes[name] = list(values)
    if not axes:
        raise ConfigurationError("sweep() needs at least one keyword list, e.g. x=[1, 2, 3]")
    opts, flags = _options(raw)
    calls = [((), dict(zip(axes, point, strict=True)))
             for point in itertools.product(*axes.values())]
    if flags["reuse"]:
        from .reuse import submit_reusing

        submit_reusing(runner(), func, calls, opts, inline=flags["sync"])
    else:
        runner().submit(func, calls, opts, inline=flags["sync"], raise_errors=flags["sync"])
    _submitted(opts.group, opts.ttl)
    return group


# ---------------------------------------------------------------- reading
class Task(TaskRecord):
    """A task record with django-q's group helpers."""

    def group_result(self, failures: bool = False) -> list | None:
        """Results of this task's group (:func:`result_group`); None if it has none."""
        return result_group(self.group, failures=failures) if self.group else None

    def group_count(self, failures: bool = False) -> int:
        """Successes (or failures) of this task's group (:func:`count_group`)."""
        return count_group(self.group, failures=failures) if self.group else 0

    def group_delete(self, tasks: bool = False) -> int:
        """Delete this task's group label, or its tasks (:func:`delete_group`)."""
        return delete_group(self.group, tasks=tasks) if self.group else 0

    def history(self, cached: bool = False) -> TaskList:
        """Every finished run of this task, oldest first. A task run again under its id
        (``retry_group``, ``reuse=True`` after a failure) keeps its earlier failures here."""
        r = runner()
        r.flush()
        return r.store_for(_layer(cached)).task_history(self.id, Task) or TaskList()


def _layer(cached: Any) -> int | None:
    if isinstance(cached, bool):
        return settings().cache_ttl if cached else None
    CHECK.cached("cached", cached)
    return cached


def _find(r: Runner, task_id: str, ttl: int | None) -> Task | None:
    hit = r.recent(task_id, ttl, Task)
    if hit is not None:
        return hit
    store = r.store_for(ttl)
    if names.looks_like_id(task_id):
        return store.task(task_id, Task)
    return store.task_by_name(task_id, Task)


def fetch(task_id: str, wait: int = 0, cached: bool = False) -> Task | None:
    """The task record for an id or a name (newest of that name), or None.

    With ``wait`` (ms; -1 without limit) waits for the task to finish.
    """
    if not isinstance(task_id, str):
        raise ArgumentTypeError(f"task_id must be a task id or name (str), got {task_id!r}")
    timeout = wait_seconds(wait)
    ttl = _layer(cached)
    r = runner()
    if wait != 0 and r.pending(task_id):
        # Queued or running here: nothing to read yet. Not even a flush: the
        # runner thread writes the page, and store writes from one thread keep
        # SQLite's page cache warm (another connection's write invalidates it).
        task = None
    else:
        r.flush()
        task = _find(r, task_id, ttl)
        if wait == 0:
            return task
    tid = task.id if task is not None else task_id
    box: list[Task | None] = [task]

    def finished() -> bool:
        # Not running here first, then read: a re-run (retry_group) that ends
        # between the two is then read with its new outcome, never the old one.
        if r.pending(tid):
            return False
        box[0] = _find(r, tid, ttl)
        return box[0] is not None and box[0].state.final

    if not _wait(r, finished, timeout) and box[0] is None:
        box[0] = _find(r, tid, ttl)  # not finished in time: its record as it stands
    return box[0]


def result(task_id: str, wait: int = 0, cached: bool = False) -> Any:
    """The result of a task (id or name), or None if unknown or not finished within ``wait`` ms.

    A failed task's result is its exception.
    """
    task = fetch(task_id, wait=wait, cached=cached)
    return task.result if task is not None and task.state.finished else None


def _wait_group(r: Runner, group: str, wait: Any, count: Any, ttl: int | None) -> None:
    timeout = wait_seconds(wait)
    check_count(count)
    if count is not None:
        if wait == 0:
            timeout = None  # django-q: count without wait waits without limit
        r.flush()
        # r.counts: a task being re-run (retry_group) is not finished yet
        _wait(r, lambda: r.counts(group, ttl).finished >= count, timeout)
    elif wait != 0:
        r.flush()
        _wait(r, lambda: not r.busy(group, ttl) and r.store_for(ttl).counts(group).settled,
               timeout)


def _waited_store(group_id: str, failures: Any, wait: Any, count: Any, cached: Any) -> Store:
    """Check a group read's arguments, wait as asked, return the layer's store."""
    check_group(group_id, "group_id")
    check_bool("failures", failures)
    ttl = _layer(cached)
    r = runner()
    _wait_group(r, group_id, wait, count, ttl)
    r.flush()
    return r.store_for(ttl)


def result_group(group_id: str, failures: bool = False, wait: int = 0,
                 count: int | None = None, cached: bool = False) -> list | None:
    """Results of the group in submission order; None if the group is unknown.

    Failures are left out unless ``failures=True`` (then their result is the
    exception). ``count=N`` waits until at least N tasks finished (failures
    count too); ``wait`` (ms, -1 without limit) alone waits until every task
    submitted so far finished or was cancelled.
    """
    return _waited_store(group_id, failures, wait, count, cached).group_results(
        group_id, failures)


def fetch_group(group_id: str, failures: bool = True, wait: int = 0,
                count: int | None = None, cached: bool = False) -> TaskList | None:
    """The group's :class:`Task` records in submission order.

    ``None`` if the store has no group of that name (as django-q returns): a
    misspelt group then fails one step later, ``'NoneType' object has no attribute
    'to_dataframe'``. ``nbgroups.list_groups()`` (or ``%nbgroups``, ``nbgroups
    list``) shows the names; ``fetch_group(g) or []`` reads an unknown group as empty.
    """
    tasks = _waited_store(group_id, failures, wait, count, cached).group_records(group_id, Task)
    if tasks is None:
        return None
    if not failures:
        tasks = tasks.exclude(success=False)
    return _with_running(runner(), tasks)


def _with_running(r: Runner, tasks: TaskList) -> TaskList:
    """Mark the tasks this process is running (the store only knows queued)."""
    import dataclasses

    running = r.running_ids()
    if not running:
        return tasks
    return TaskList(
        dataclasses.replace(t, state=State.RUNNING)
        if t.state is State.QUEUED and t.id in running else t
        for t in tasks
    )


def count_group(group_id: str, failures: bool = False, cached: bool = False) -> int:
    """Successes (or failures, with ``failures=True``) of the group; 0 if unknown."""
    check_group(group_id, "group_id")
    check_bool("failures", failures)
    r = runner()
    r.flush()
    c = r.store_for(_layer(cached)).counts(group_id)
    return c.failed if failures else c.done


def delete_group(group_id: str, tasks: bool = False, cached: bool = False) -> int:
    """Remove the group label (tasks stay, ``group=None``), or with ``tasks=True``
    the tasks too, cancelling those not started. Returns how many tasks."""
    check_group(group_id, "group_id")
    check_bool("tasks", tasks)
    ttl = _layer(cached)
    r = runner()
    if tasks:
        r.cancel(group_id, ttl)
    r.flush()
    return int(r.store_for(ttl).delete_group(group_id, tasks))


def cancel_group(group_id: str, cached: bool = False) -> int:
    """Cancel the group's tasks not yet started; returns how many were cancelled."""
    check_group(group_id, "group_id")
    ttl = _layer(cached)
    n = runner().cancel(group_id, ttl)
    if n:
        _submitted(group_id, ttl)  # the cell's view (``%load_ext``) shows what ended
    return n


def retry_group(group_id: str, cached: bool = False) -> int:
    """Re-submit the group's failed tasks (same callable and arguments); returns how many.

    Each keeps its id; its ``attempt_count`` goes on from the failed runs.
    """
    check_group(group_id, "group_id")
    ttl = _layer(cached)
    r = runner()
    r.flush()
    entries = r.store_for(ttl).group_entries(group_id) or []
    todo = [(p, c, "failure", o.attempt) for p, c, o in entries
            if o is not None and o.state == "failure"]
    n = r.resubmit(todo, ttl)
    if n:
        _submitted(group_id, ttl)  # a re-submission shows its view, as a submission does
    return n


def resume_group(group_id: str) -> int:
    """Re-submit the group's tasks that never finished (e.g. after a kernel restart).

    Each runs once: tasks this kernel is still running are left alone, and so
    are those of another kernel on this machine that is still running.
    """
    check_group(group_id, "group_id")
    r = runner()
    r.flush()
    entries = r.store.group_entries(group_id) or []
    alive: dict[str | None, bool] = {}
    todo = []
    for p, c, o in entries:
        owner = p.options.get("owner")
        if owner not in alive:
            alive[owner] = owner != r.owner and owner_alive(owner)
        if o is None and not alive[owner]:
            todo.append((p, c, None))
    n = r.resubmit(todo, None)
    if n:
        _submitted(group_id, None)  # a re-submission shows its view, as a submission does
    return n


def group_counts(group_id: str, cached: bool = False):
    """A :class:`~nbgroups.records.GroupCounts` snapshot (stored + this kernel's live)."""
    check_group(group_id, "group_id")
    return runner().counts(group_id, _layer(cached))


def list_groups() -> list[str]:
    """Names of the groups in the store."""
    r = runner()
    r.flush()
    return r.store.groups()


# ---------------------------------------------------------------- AsyncTask
class AsyncTask:
    """Builder for one task: options as attributes, ``run()`` submits.

    >>> a = AsyncTask('math.floor', 2.5, group='doc-math', sync=True)
    >>> a.run() == a.id
    True
    >>> a.result()
    2
    """

    def __init__(self, func: Callable | str, *args: Any, **kwargs: Any) -> None:
        check_func(func)
        raw, fkwargs = split_kwargs(kwargs)
        _options(raw)  # fail now on a bad option
        self.func = func
        self.args = args
        self.kwargs = fkwargs
        self.id: str | None = None
        self.started = False
        for name in OPTION_NAMES:
            setattr(self, name, raw.get(name))

    def _option_values(self) -> dict:
        return {n: getattr(self, n) for n in OPTION_NAMES if getattr(self, n) is not None}

    def run(self) -> str:
        """Submit the task; returns its id."""
        values = self._option_values()
        opts, _ = _options(values)  # the defaults in force now: configure(), %%group
        self.id = async_task(self.func, *self.args, q_options=values, **self.kwargs)
        self.group = opts.group
        self._layer = opts.ttl
        self.started = True
        return self.id

    @property
    def _cached(self) -> bool | int:
        layer = getattr(self, "_layer", None)
        return layer if layer is not None else (self.cached or False)

    def result(self, wait: int = 0) -> Any:
        """The task's result (:func:`result`); None before :meth:`run`."""
        return result(self.id, wait=wait, cached=self._cached) if self.id else None

    def fetch(self, wait: int = 0) -> Task | None:
        """The task's record (:func:`fetch`); None before :meth:`run`."""
        return fetch(self.id, wait=wait, cached=self._cached) if self.id else None

    def result_group(self, failures: bool = False, wait: int = 0, count: int | None = None):
        """Results of the task's group (:func:`result_group`)."""
        if not self.group:
            return None
        return result_group(self.group, failures=failures, wait=wait, count=count,
                            cached=self._cached)

    def fetch_group(self, failures: bool = True, wait: int = 0, count: int | None = None):
        """Records of the task's group (:func:`fetch_group`)."""
        if not self.group:
            return None
        return fetch_group(self.group, failures=failures, wait=wait, count=count,
                           cached=self._cached)

    def group_count(self, failures: bool = False) -> int:
        """Successes (or failures) of the task's group (:func:`count_group`)."""
        return count_group(self.group, failures=failures, cached=self._cached) if self.group \
            else 0

    def group_delete(self, tasks: bool = False) -> int:
        """Delete the task's group label, or its tasks (:func:`delete_group`)."""
        return delete_group(self.group, tasks=tasks, cached=self._cached) if self.group else 0


def reset() -> None:
    """Stop the runner and forget settings (tests; a fresh start in one process)."""
    global _runner, _settings
    with _lock:
        if _runner is not None:
            _runner.close()
        _runner = None
        _settings = None
        _submit_listeners.clear()
