"""Reading: task records and results, of one task or a whole group, waiting if asked.

Reads flush the runner's open pages first (a task is visible as soon as its
id was returned), then read the store of the layer asked for (``cached=``),
with what this kernel finished lately or still runs laid over it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .. import names
from ..arguments import check_bool, check_count, check_group, wait_seconds
from ..errors import ArgumentTypeError
from ..records import GroupCounts, State, TaskList, TaskRecord
from ..runner import Runner
from ..store import Store, build_record
from .manage import delete_group
from .session import SESSION


class Task(TaskRecord):
    """A task record, with django-q's group helpers.

    Attributes: ``id``, ``name`` (four words, or ``task_name``), ``func`` (dotted
    name or repr), ``args`` and ``kwargs`` (``None`` in the cache layer),
    ``result`` (the return value, or a failed task's exception), ``group``,
    ``submitted``, ``started`` and ``stopped`` (Unix times), ``success``
    (``True``/``False`` once finished; ``None`` while queued or running, and
    for a cancelled task), ``state`` (a :class:`State`), ``attempt_count``,
    ``traceback`` (text, failures only), ``error`` (the exception line of a
    failure) and ``saved`` (``False`` for a task submitted with ``save=False``:
    its outcome is kept, its return value is not). Records are frozen: a later
    read gives a new one.

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

    def history(self, cached: bool | int = False) -> TaskList:
        """Every finished run of this task, oldest first. A task run again under its id
        (``retry_group``, ``reuse=True`` after a failure) keeps its earlier failures here."""
        r = SESSION.runner()
        r.flush()
        return r.store_for(SESSION.layer(cached)).task_history(self.id, Task) or TaskList()


def _find(r: Runner, task_id: str, ttl: int | None, mmap: bool = False,
          light: bool = False) -> Task | None:
    """The task's record; ``light`` (for :func:`result`): for a task this runner
    finished lately, only its id, state and result (a ``Settled``)."""
    if not mmap:  # (a mapped read reads the store's file)
        hit = r.recent(task_id, ttl, Task, light)
        if hit is not None:
            return hit  # a Task, or a Settled if light
    store = r.store_for(ttl)
    if names.looks_like_id(task_id):
        return store.task(task_id, Task, mmap)  # type: ignore[return-value]
    return store.task_by_name(task_id, Task, mmap)  # type: ignore[return-value]


def fetch(task_id: str, wait: int = 0, cached: bool | int = False,
          mmap: bool = False) -> Task | None:
    """The task record for an id or a name (the newest task of that name).

    Args:
        task_id: a task id, or a task's name.
        wait: milliseconds to wait for the task to finish: ``0`` looks once,
            ``-1`` waits without limit.
        cached: read the cache layer (``cached=True`` tasks) instead of the
            task store.
        mmap: a large ndarray result (1 MiB or more, returned by the task as
            an array or inside a container) is memory-mapped read-only from
            the store's file instead of read into memory.

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
    return _fetch(task_id, wait, cached, mmap)


def _fetch(task_id: str, wait: int, cached: bool | int, mmap: bool,
           light: bool = False) -> Task | None:
    """:func:`fetch`; ``light``: a recently finished task as a ``Settled``
    (id, state, result) instead of its whole record (see :func:`_find`)."""
    if not isinstance(task_id, str):
        raise ArgumentTypeError(f"task_id must be a task id or name (str), got {task_id!r}")
    timeout = wait_seconds(wait)
    check_bool("mmap", mmap)
    ttl = SESSION.layer(cached)
    r = SESSION.runner()
    task: Task | None
    if wait != 0 and r.pending(task_id):
        # Queued or running here: nothing to read yet. Not even a flush: the
        # runner thread writes the page, and store writes from one thread keep
        # SQLite's page cache warm (another connection's write invalidates it).
        task = None
    else:
        r.flush()
        task = _find(r, task_id, ttl, mmap, light)
        if wait == 0:
            return task
    finished, box = task_waiter(r, task_id, ttl, task, light)
    if not SESSION.wait(r, finished, timeout) and box[0] is None:
        # not finished in time: its record as it stands
        box[0] = _find(r, task.id if task is not None else task_id, ttl)
    if mmap and box[0] is not None and box[0].state.final:
        box[0] = _find(r, box[0].id, ttl, mmap)  # read again, mapped
    return box[0]


def task_waiter(r: Runner, task_id: str, ttl: int | None, task: Task | None = None,
                light: bool = False) -> tuple[Callable[[], bool], list[Task | None]]:
    """What :func:`fetch` (and its awaitable twin) waits for: a predicate, true
    once the task (id, or name: its newest task, then that one's id) has a final
    state, and the box holding the record it read last (``task``: read already)."""
    box: list[Task | None] = [task]

    def finished() -> bool:
        # Not running here first, then read: a re-run (retry_group) that ends
        # between the two is then read with its new outcome, never the old one.
        tid = box[0].id if box[0] is not None else task_id
        if r.pending(tid):
            return False
        found = box[0] = _find(r, tid, ttl, light=light)
        return found is not None and found.state.final
    return finished, box


def result(task_id: str, wait: int = 0, cached: bool | int = False, mmap: bool = False) -> Any:
    """The result of a task, by id or name.

    Args:
        task_id: a task id, or a task's name.
        wait: milliseconds to wait for the task to finish (``-1``: no limit).
        cached: read the cache layer instead of the task store.
        mmap: a large ndarray result is memory-mapped read-only from the
            store's file instead of read into memory (see :func:`fetch`).

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
    task = _fetch(task_id, wait, cached, mmap, light=True)
    return task.result if task is not None and task.state.finished else None


def _wait_group(r: Runner, group: str, wait: Any, count: Any, ttl: int | None) -> None:
    timeout = wait_seconds(wait)
    check_count(count)
    predicate, timeout = group_waiter(r, group, wait, count, ttl, timeout)
    if predicate is not None:
        r.flush()
        SESSION.wait(r, predicate, timeout)


def group_waiter(r: Runner, group: str, wait: Any, count: int | None, ttl: int | None,
                 timeout: float | None) -> tuple[Callable[[], bool] | None, float | None]:
    """What a group read (and its awaitable twin) waits for: a predicate and its
    timeout, or None when it does not wait (checked arguments: ``timeout`` is
    ``wait`` in seconds)."""
    if count is not None:
        # r.counts: a task being re-run (retry_group) is not finished yet; and
        # django-q: count without wait waits without limit
        return (lambda: r.counts(group, ttl).finished >= count), (
            None if wait == 0 else timeout)
    if wait != 0:
        return (lambda: not r.busy(group, ttl) and
                r.store_for(ttl).counts(group).settled), timeout
    return None, timeout


def _waited_store(group_id: str, failures: Any, wait: Any, count: Any, cached: Any) -> Store:
    """Check a group read's arguments, wait as asked, return the layer's store."""
    check_group(group_id, "group_id")
    check_bool("failures", failures)
    ttl = SESSION.layer(cached)
    r = SESSION.runner()
    _wait_group(r, group_id, wait, count, ttl)
    r.flush()
    return r.store_for(ttl)


def result_group(group_id: str, failures: bool = False, wait: int = 0,
                 count: int | None = None, cached: bool | int = False,
                 mmap: bool = False) -> list | None:
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
        mmap: large ndarray results (1 MiB or more) are memory-mapped,
            read-only, from the store's files instead of read: reading 20
            results of 50 MB then takes almost no memory until they are used.

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
    check_bool("mmap", mmap)
    return _waited_store(group_id, failures, wait, count, cached).group_results(
        group_id, failures, mmap)


def fetch_group(group_id: str, failures: bool = True, wait: int = 0,
                count: int | None = None, cached: bool | int = False,
                mmap: bool = False) -> TaskList | None:
    """The group's task records, in submission order.


    ``None`` if the store has no group of that name (as django-q returns): a
    misspelt group then fails one step later, ``'NoneType' object has no attribute
    'to_dataframe'``. ``nbgroups.list_groups()`` (or ``%nbgroups``, ``nbgroups
    list``) shows the names; ``fetch_group(g) or []`` reads an unknown group as empty.

    Args:
        group_id: the group.
        failures: include failed tasks (``False`` leaves them out).
        wait: milliseconds to wait, as for :func:`result_group`.
        count: wait for at least this many finished tasks.
        cached: read the group of the cache layer.
        mmap: large ndarray results memory-mapped, as :func:`result_group`.

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
    check_bool("mmap", mmap)
    tasks = _waited_store(group_id, failures, wait, count, cached).group_records(
        group_id, Task, mmap)
    if tasks is None:
        return None
    if not failures:
        tasks = tasks.exclude(success=False)
    return _with_running(SESSION.runner(), tasks)


def _with_running(r: Runner, tasks: TaskList) -> TaskList:
    """Mark the tasks this process is running (the store only knows queued)."""
    running = r.running_ids()
    if not running:
        return tasks
    return TaskList(
        dataclasses.replace(t, state=State.RUNNING)
        if t.state is State.QUEUED and t.id in running else t
        for t in tasks
    )


def failed_tasks(group_id: str, cached: bool | int = False, limit: int | None = None
                 ) -> TaskList:
    """The group's failed tasks (their latest run failed), at most ``limit``, in
    submission order; records are built for the failures only (a progress view
    reads them while a large group runs)."""
    check_group(group_id, "group_id")
    r = SESSION.runner()
    ttl = SESSION.layer(cached)
    out = TaskList()
    for page, call, o in r.store_for(ttl).group_entries(group_id) or ():
        if o is None or o.state != "failure":
            continue
        tid = names.task_id(page.prefix, call.index)
        out.append(build_record(tid, call.task_name or names.name_of(tid),
                                page.funcs[call.func][0], None if call.iterable else call.args,
                                call.kwargs, o, group_id, page.created, Task,
                                items=call.args if call.iterable else None,
                                saved=page.options.get("save", True)))
        if limit is not None and len(out) >= limit:
            break
    return out


def count_group(group_id: str, failures: bool = False, cached: bool | int = False) -> int:
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
    r = SESSION.runner()
    r.flush()
    c = r.store_for(SESSION.layer(cached)).counts(group_id)
    return c.failed if failures else c.done


def group_counts(group_id: str, cached: bool | int = False) -> GroupCounts:
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
    return SESSION.runner().counts(group_id, SESSION.layer(cached))


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
    r = SESSION.runner()
    r.flush()
    return r.store.groups()
