"""The public face: django-q's task-group API, with the fixes of docs/contract.md.

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


# ---------------------------------------------------------------- configuration
def settings() -> Settings:
    """The settings in force: defaults, overridden by ``NBGROUPS_*`` environment
    variables, then by :func:`configure`.

    Returns:
        A frozen dataclass with one field per setting of :func:`configure`.

    Example:
        >>> import nbgroups
        >>> nbgroups.settings().backend in ('loky', 'thread', 'sync', 'dask')
        True
    """
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

    Tasks already running finish on the previous runner. A setting not given
    keeps its value; each has an environment variable ``NBGROUPS_<NAME>``,
    read once, when the first settings of the process are made.

    Args:
        store: directory of the durable store (default ``./.nbgroups``).
        workers: worker processes (or threads); default: the number of CPUs.
        backend: ``'loky'`` (processes, the default), ``'thread'``, ``'sync'``
            (inline) or ``'dask'``.
        progress: ``'auto'`` (a widget in a notebook, a text line elsewhere),
            ``'widget'``, ``'text'`` or ``False``.
        timeout: default per-task timeout in seconds (``None``: no limit).
        retries: default number of re-runs of a failed task.
        cached: default of the ``cached`` option.
        cache_ttl: seconds a ``cached=True`` result lives (default 3600).
        reuse: default of the ``reuse`` option.
        address: the Dask scheduler's address (``backend='dask'``).
        client: a ``distributed.Client`` to use instead of ``address``.

    Returns:
        The new settings (a frozen dataclass; :func:`settings` returns it too).

    Raises:
        ArgumentTypeError: an unknown setting, or a value of the wrong type.
        ConfigurationError: a value out of range, ``backend='dask'`` without
            distributed installed, or a scheduler that cannot be reached.
        StoreError: the store directory cannot be used.

    Example:
        >>> import nbgroups
        >>> nbgroups.configure(workers=2).workers
        2
        >>> nbgroups.configure(backend='threads')
        Traceback (most recent call last):
        ...
        nbgroups.errors.ConfigurationError: backend must be one of [...], got 'threads'
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


# ---------------------------------------------------------------- submission
def async_task(func: Callable | str, *args: Any, **kwargs: Any) -> str:
    """Submit one call of ``func``; returns the task id at once.

    Option keywords are taken out of ``kwargs``; every other keyword goes to
    ``func``. Pass ``q_options={...}`` (as in django-q) when ``func`` itself
    takes a keyword named like an option: then every plain keyword goes to
    ``func``.

    Args:
        func: a callable (functions, lambdas and closures defined in the
            notebook work: they travel by value) or a dotted path such as
            ``'math.modf'``, imported in the worker.
        *args: positional arguments of the call.
        **kwargs: keyword arguments of the call, and the options ``group``,
            ``cached``, ``timeout``, ``retries``, ``hook``, ``sync``, ``save``,
            ``task_name``, ``reuse`` (see the user guide's table).

    Returns:
        The task id: 32 lowercase hex digits.

    Raises:
        ArgumentTypeError: ``func`` is neither callable nor a string, or an
            option has the wrong type.
        ConfigurationError: a malformed dotted path or an option out of range.
        SerializationError: ``func`` cannot be pickled.

    Example:
        >>> from nbgroups import async_task, result
        >>> tid = async_task('math.modf', 2.5, group='doc-task')
        >>> len(tid)
        32
        >>> result(tid, wait=-1)
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

    A tuple item is unpacked into positional arguments; anything else is one
    argument. Items go to the workers in batches: much faster than one task
    per item.

    Args:
        func: a callable or a dotted path, as for :func:`async_task`.
        args_iter: any iterable of items (generators included; no ``len()``
            needed). Not a string.
        **options: the submission options of :func:`async_task`.

    Returns:
        The task id. Its result is the list of the results **in input order**;
        the task succeeded only if every item did.

    Raises:
        ArgumentTypeError: ``args_iter`` is not an iterable, or ``func`` or an
            option has the wrong type.
        ConfigurationError: an option out of range.

    Example:
        >>> from nbgroups import async_iter, result
        >>> tid = async_iter(pow, [(2, 3), (3, 2), (10, 0)])
        >>> result(tid, wait=-1)
        [8, 9, 1]
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
    """Submit one task per point of the Cartesian product of the keyword lists.

    Each task calls ``func`` with one value of every axis as keyword arguments;
    the tasks are in the order of the product (the last axis varies fastest).
    Option keywords (``reuse``, ``timeout``, ...) are options of every task, not
    axes. With ``reuse=True`` a point already done successfully in the group is
    not run again, so a sweep cell can be re-run after extending a list.

    Args:
        func: a callable or a dotted path, as for :func:`async_task`.
        group: the group of the tasks.
        **grid: axis name -> a list (or any iterable but a string) of values;
            and submission options.

    Returns:
        ``group``.

    Raises:
        ArgumentTypeError: an axis that is not a list of values, a group that
            is not a string.
        ConfigurationError: no axis at all, an empty group name, an option out
            of range.

    Example:
        >>> from nbgroups import sweep, result_group
        >>> sweep(pow, 'doc-sweep', base=[2, 3], exp=[1, 2])
        'doc-sweep'
        >>> result_group('doc-sweep', wait=-1)
        [2, 4, 3, 9]
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
    """A task record, with django-q's group helpers.

    Attributes: ``id``, ``name`` (four words, or ``task_name``), ``func`` (dotted
    name or repr), ``args`` and ``kwargs`` (``None`` in the cache layer),
    ``result`` (the return value, or a failed task's exception), ``group``,
    ``submitted``, ``started`` and ``stopped`` (Unix times), ``success``
    (``True``/``False`` once finished; ``None`` while queued or running, and
    for a cancelled task), ``state`` (a :class:`State`), ``attempt_count``,
    ``traceback`` (text, failures only) and ``error`` (the exception line of a
    failure). Records are frozen: a later read gives a new one.

    Example:
        >>> from nbgroups import async_task, fetch
        >>> task = fetch(async_task('math.floor', 2.5, group='doc-record'), wait=-1)
        >>> task.result, task.success, task.state.value, task.group
        (2, True, 'success', 'doc-record')
        >>> task.time_taken() >= 0
        True
        >>> task.group_count()
        1
    """

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
    """The task record for an id or a name (the newest task of that name).

    Args:
        task_id: a task id, or a task's name.
        wait: milliseconds to wait for the task to finish: ``0`` looks once,
            ``-1`` waits without limit.
        cached: read the cache layer (``cached=True`` tasks) instead of the
            task store.

    Returns:
        The :class:`Task`, or ``None`` for an unknown id or name. When ``wait``
        runs out first, the record as it stands (``state`` queued or running).

    Raises:
        ArgumentTypeError: ``task_id`` is not a string, ``wait`` not a number.
        ConfigurationError: ``wait`` below ``-1``.
        StoreError: the store cannot be read, or the task could not be written.

    Example:
        >>> from nbgroups import async_task, fetch
        >>> task = fetch(async_task('math.sqrt', -1, group='doc-fetch'), wait=-1)
        >>> task.success, task.error
        (False, 'ValueError: math domain error')
        >>> fetch(task.name).id == task.id
        True
        >>> fetch('no-such-task') is None
        True
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

    if not r.wait(finished, timeout) and box[0] is None:
        box[0] = _find(r, tid, ttl)  # not finished in time: its record as it stands
    return box[0]


def result(task_id: str, wait: int = 0, cached: bool = False) -> Any:
    """The result of a task, by id or name.

    Args:
        task_id: a task id, or a task's name.
        wait: milliseconds to wait for the task to finish (``-1``: no limit).
        cached: read the cache layer instead of the task store.

    Returns:
        The return value; a failed task's exception; ``None`` when the task is
        unknown, not finished within ``wait``, or was submitted with
        ``save=False``.

    Raises:
        ArgumentTypeError: ``task_id`` is not a string, ``wait`` not a number.
        ConfigurationError: ``wait`` below ``-1``.

    Example:
        >>> from nbgroups import async_task, result
        >>> result(async_task(divmod, 7, 2, group='doc-result'), wait=-1)
        (3, 1)
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
        r.wait(lambda: r.counts(group, ttl).finished >= count, timeout)
    elif wait != 0:
        r.flush()
        r.wait(lambda: not r.busy(group, ttl) and r.store_for(ttl).counts(group).settled,
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
    """Results of the group, in submission order.

    ``count=N`` waits until at least N tasks finished (failures count too), or
    ``wait`` ran out; ``count`` with ``wait=0`` waits without limit, as in
    django-q. ``wait`` alone waits until every task submitted so far finished
    or was cancelled. When the wait runs out, what is there is returned.

    Args:
        group_id: the group.
        failures: include failed tasks (their entry is their exception).
        wait: milliseconds to wait (``-1``: no limit).
        count: wait for at least this many finished tasks.
        cached: read the group of the cache layer.

    Returns:
        The list of results, or ``None`` if the group is unknown.

    Raises:
        ArgumentTypeError: ``group_id`` not a string, ``failures`` not a bool,
            ``wait`` or ``count`` not an int.
        ConfigurationError: ``wait`` below ``-1``, ``count`` below 1, an empty
            group name.

    Example:
        >>> from nbgroups import async_task, result_group
        >>> for i in range(4):
        ...     _ = async_task('math.modf', i, group='doc-modf')
        >>> result_group('doc-modf', count=4)
        [(0.0, 0.0), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]
        >>> result_group('no-such-group') is None
        True
    """
    return _waited_store(group_id, failures, wait, count, cached).group_results(
        group_id, failures)


def fetch_group(group_id: str, failures: bool = True, wait: int = 0,
                count: int | None = None, cached: bool = False) -> TaskList | None:
    """The group's task records, in submission order.

    Args:
        group_id: the group.
        failures: include failed tasks (``False`` leaves them out).
        wait: milliseconds to wait, as for :func:`result_group`.
        count: wait for at least this many finished tasks.
        cached: read the group of the cache layer.

    Returns:
        A :class:`TaskList` of :class:`Task` (cancelled and unfinished tasks
        included), or ``None`` if the group is unknown.

    Raises:
        ArgumentTypeError: as :func:`result_group`.
        ConfigurationError: as :func:`result_group`.

    Example:
        >>> from nbgroups import async_task, fetch_group
        >>> for x in (4, -1, 9):
        ...     _ = async_task('math.sqrt', x, group='doc-fetch-group')
        >>> tasks = fetch_group('doc-fetch-group', wait=-1)
        >>> [t.result for t in tasks.exclude(success=False)]
        [2.0, 3.0]
        >>> tasks.values('args', 'success')[1]
        {'args': (-1,), 'success': False}
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
    """How many tasks of the group succeeded (or failed). Constant time,
    whatever the group's size.

    Args:
        group_id: the group.
        failures: count failures instead of successes.
        cached: count the group of the cache layer.

    Returns:
        The count; ``0`` for an unknown group. Cancelled and unfinished tasks
        are in neither count.

    Raises:
        ArgumentTypeError: ``group_id`` not a string, ``failures`` not a bool.

    Example:
        >>> from nbgroups import async_task, count_group, result_group
        >>> for x in (1, 0, 2):
        ...     _ = async_task('operator.truediv', 1, x, group='doc-count')
        >>> _ = result_group('doc-count', wait=-1)
        >>> count_group('doc-count'), count_group('doc-count', failures=True)
        (2, 1)
    """
    check_group(group_id, "group_id")
    check_bool("failures", failures)
    r = runner()
    r.flush()
    c = r.store_for(_layer(cached)).counts(group_id)
    return c.failed if failures else c.done


def delete_group(group_id: str, tasks: bool = False, cached: bool = False) -> int:
    """Delete a group: its label, or with ``tasks=True`` its tasks too.

    Args:
        group_id: the group.
        tasks: ``False``: remove the label only; the tasks stay fetchable by id,
            with ``group=None``. ``True``: delete the tasks too, cancelling
            those not started.
        cached: the group of the cache layer.

    Returns:
        The number of tasks affected, always an ``int`` (``0`` for an unknown
        group).

    Raises:
        ArgumentTypeError: ``group_id`` not a string, ``tasks`` not a bool.

    Example:
        >>> from nbgroups import async_task, delete_group, fetch, result_group
        >>> tid = async_task('math.floor', 1.5, group='doc-delete')
        >>> _ = result_group('doc-delete', wait=-1)
        >>> delete_group('doc-delete')
        1
        >>> result_group('doc-delete') is None, fetch(tid).group
        (True, None)
    """
    check_group(group_id, "group_id")
    check_bool("tasks", tasks)
    ttl = _layer(cached)
    r = runner()
    if tasks:
        r.cancel(group_id, ttl)
    r.flush()
    return int(r.store_for(ttl).delete_group(group_id, tasks))


def cancel_group(group_id: str, cached: bool = False) -> int:
    """Cancel the group's tasks not yet started.

    They are recorded as cancelled: listed by :func:`fetch_group`, counted in
    :attr:`GroupCounts.cancelled`, neither successes nor failures, never run.
    Tasks already running finish.

    Args:
        group_id: the group.
        cached: the group of the cache layer.

    Returns:
        How many tasks were cancelled.

    Raises:
        ArgumentTypeError: ``group_id`` is not a string.

    Example:
        >>> from nbgroups import async_task, cancel_group, result_group
        >>> _ = async_task('math.floor', 1.5, group='doc-cancel')
        >>> _ = result_group('doc-cancel', wait=-1)
        >>> cancel_group('doc-cancel')  # nothing left to cancel
        0
    """
    check_group(group_id, "group_id")
    return runner().cancel(group_id, _layer(cached))


def retry_group(group_id: str, cached: bool = False) -> int:
    """Re-run the group's failed tasks, with the same callable and arguments.

    Each keeps its id; its ``attempt_count`` goes on from the failed runs. A
    notebook function runs with the values it captured when first submitted.

    Args:
        group_id: the group.
        cached: the group of the cache layer.

    Returns:
        How many tasks were re-submitted.

    Raises:
        ArgumentTypeError: ``group_id`` is not a string.

    Example:
        >>> from nbgroups import async_task, result_group, retry_group
        >>> _ = async_task('math.sqrt', -1, group='doc-retry')
        >>> result_group('doc-retry', wait=-1)
        []
        >>> retry_group('doc-retry')
        1
    """
    check_group(group_id, "group_id")
    ttl = _layer(cached)
    r = runner()
    r.flush()
    entries = r.store_for(ttl).group_entries(group_id) or []
    todo = [(p, c, "failure", o.attempt) for p, c, o in entries
            if o is not None and o.state == "failure"]
    return r.resubmit(todo, ttl)


def resume_group(group_id: str) -> int:
    """Run the group's tasks that never finished, e.g. after a kernel restart.

    Each runs once: tasks this kernel is still running are left alone, and so
    are those of another kernel on this machine that is still running.

    Args:
        group_id: the group.

    Returns:
        How many tasks were re-submitted.

    Raises:
        ArgumentTypeError: ``group_id`` is not a string.

    Example:
        >>> from nbgroups import async_task, result_group, resume_group
        >>> _ = async_task('math.floor', 1.5, group='doc-resume')
        >>> _ = result_group('doc-resume', wait=-1)
        >>> resume_group('doc-resume')  # everything finished: nothing to resume
        0
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
    return r.resubmit(todo, None)


def group_counts(group_id: str, cached: bool = False):
    """A snapshot of the group's counts: the store's, plus what this kernel is
    running now.

    Args:
        group_id: the group.
        cached: the group of the cache layer.

    Returns:
        A :class:`GroupCounts` (all zero for an unknown group).

    Raises:
        ArgumentTypeError: ``group_id`` is not a string.

    Example:
        >>> from nbgroups import async_task, group_counts, result_group
        >>> _ = async_task('math.floor', 1.5, group='doc-counts')
        >>> _ = result_group('doc-counts', wait=-1)
        >>> c = group_counts('doc-counts')
        >>> c.submitted, c.done, c.failed, c.settled
        (1, 1, 0, True)
    """
    check_group(group_id, "group_id")
    return runner().counts(group_id, _layer(cached))


def list_groups() -> list[str]:
    """Names of the groups in the task store (not the cache layer).

    Returns:
        A list of group names.

    Example:
        >>> from nbgroups import async_task, list_groups
        >>> _ = async_task('math.floor', 1.5, group='doc-list')
        >>> 'doc-list' in list_groups()
        True
    """
    r = runner()
    r.flush()
    return r.store.groups()


# ---------------------------------------------------------------- AsyncTask
class AsyncTask:
    """A builder for one task: options as attributes, :meth:`run` submits.

    Args:
        func: a callable or a dotted path, as for :func:`async_task`.
        *args: positional arguments of the call.
        **kwargs: keyword arguments of the call, and submission options, which
            become attributes (``group``, ``cached``, ``timeout``, ...).

    Raises:
        ArgumentTypeError: as :func:`async_task`, at construction.
        ConfigurationError: as :func:`async_task`, at construction.

    Before :meth:`run`, ``id`` is ``None``, ``started`` is ``False`` and the
    readers return ``None``.

    Example:
        >>> from nbgroups import AsyncTask
        >>> a = AsyncTask('math.floor', 2.5, group='doc-builder')
        >>> a.timeout = 30
        >>> a.run() == a.id
        True
        >>> a.result(wait=-1)
        2
        >>> a.result_group(wait=-1), a.group_count()
        ([2], 1)
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
