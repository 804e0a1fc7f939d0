"""Reading: task records and results, of one task or a whole group, waiting if asked.

Reads flush the runner's open pages first (a task is visible as soon as its
id was returned), then read the store of the layer asked for (``cached=``),
with what this kernel finished lately or still runs laid over it.
"""

from __future__ import annotations

import dataclasses
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

    def history(self, cached: bool | int = False) -> TaskList:
        """Every finished run of this task, oldest first. A task run again under its id
        (``retry_group``, ``reuse=True`` after a failure) keeps its earlier failures here."""
        r = SESSION.runner()
        r.flush()
        return r.store_for(SESSION.layer(cached)).task_history(self.id, Task) or TaskList()


def _find(r: Runner, task_id: str, ttl: int | None) -> Task | None:
    hit = r.recent(task_id, ttl, Task)
    if hit is not None:
        return hit  # type: ignore[return-value]  # built with cls=Task
    store = r.store_for(ttl)
    if names.looks_like_id(task_id):
        return store.task(task_id, Task)  # type: ignore[return-value]
    return store.task_by_name(task_id, Task)  # type: ignore[return-value]


def fetch(task_id: str, wait: int = 0, cached: bool | int = False) -> Task | None:
    """The task record for an id or a name (newest of that name), or None.

    With ``wait`` (ms; -1 without limit) waits for the task to finish.
    """
    if not isinstance(task_id, str):
        raise ArgumentTypeError(f"task_id must be a task id or name (str), got {task_id!r}")
    timeout = wait_seconds(wait)
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
        found = box[0] = _find(r, tid, ttl)
        return found is not None and found.state.final

    if not r.wait(finished, timeout) and box[0] is None:
        box[0] = _find(r, tid, ttl)  # not finished in time: its record as it stands
    return box[0]


def result(task_id: str, wait: int = 0, cached: bool | int = False) -> Any:
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
        r.wait(lambda: r.counts(group, ttl).finished >= count, timeout)
    elif wait != 0:
        r.flush()
        r.wait(lambda: not r.busy(group, ttl) and r.store_for(ttl).counts(group).settled,
               timeout)


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
                 count: int | None = None, cached: bool | int = False) -> list | None:
    """Results of the group in submission order; None if the group is unknown.

    Failures are left out unless ``failures=True`` (then their result is the
    exception). ``count=N`` waits until at least N tasks finished (failures
    count too); ``wait`` (ms, -1 without limit) alone waits until every task
    submitted so far finished or was cancelled.
    """
    return _waited_store(group_id, failures, wait, count, cached).group_results(
        group_id, failures)


def fetch_group(group_id: str, failures: bool = True, wait: int = 0,
                count: int | None = None, cached: bool | int = False) -> TaskList | None:
    """The group's :class:`Task` records in submission order; None if unknown."""
    tasks = _waited_store(group_id, failures, wait, count, cached).group_records(group_id, Task)
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
    """Successes (or failures, with ``failures=True``) of the group; 0 if unknown."""
    check_group(group_id, "group_id")
    check_bool("failures", failures)
    r = SESSION.runner()
    r.flush()
    c = r.store_for(SESSION.layer(cached)).counts(group_id)
    return c.failed if failures else c.done


def group_counts(group_id: str, cached: bool | int = False) -> GroupCounts:
    """A :class:`~nbgroups.records.GroupCounts` snapshot (stored + this kernel's live)."""
    check_group(group_id, "group_id")
    return SESSION.runner().counts(group_id, SESSION.layer(cached))


def list_groups() -> list[str]:
    """Names of the groups in the store."""
    r = SESSION.runner()
    r.flush()
    return r.store.groups()
