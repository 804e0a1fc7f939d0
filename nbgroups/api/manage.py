"""Managing groups: delete, cancel, retry (failed tasks), resume (unfinished tasks)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import monitor, names, presence
from ..arguments import check_bool, check_group
from ..control import owner_alive, owner_local
from .session import SESSION

if TYPE_CHECKING:
    from ..runner import Runner

ORPHAN_WAIT_SECONDS = 5.0  # a dead kernel's workers exit within ~0.2 s (worker.init_worker)


log = logging.getLogger("nbgroups")


def delete_group(group_id: str, tasks: bool = False, cached: bool | int = False) -> int:
    """Delete a group: its label, or with ``tasks=True`` its tasks too.

    Args:
        group_id: the group.
        tasks: ``False``: remove the label only; the tasks stay fetchable by id,
            with ``group=None``. ``True``: delete the tasks too, cancelling
            those not started, and the large arguments stored for them
            (``large_value``) that no other stored task takes and none was
            passed in the last minute.
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
    ttl = SESSION.layer(cached)
    r = SESSION.runner()
    if tasks:
        r.cancel(group_id, ttl)
    r.flush()
    count = int(r.store_for(ttl).delete_group(group_id, tasks))
    if tasks and ttl is None:
        try:
            r.store.collect_values(keep=r.values_held())
        except OSError as exc:  # the tasks are deleted: values left behind are only space
            log.warning("nbgroups: stored values not removed (%s); the next "
                        "delete_group(..., tasks=True) tries again", exc)
    return count


def cancel_group(group_id: str, cached: bool | int = False) -> int:
    """Cancel the group's tasks not yet started.

    They are recorded as cancelled: listed by :func:`fetch_group`, counted in
    :attr:`GroupCounts.cancelled`, neither successes nor failures, never run.
    Tasks already running finish. Tasks another kernel or script sharing the
    store holds are cancelled by it, asked on the store's board as the
    dashboard's Cancel does (this takes a second or so); unfinished tasks of a
    process that is gone (a restarted kernel) are recorded cancelled here.

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
    ttl = SESSION.layer(cached)
    r = SESSION.runner()
    if _held_elsewhere(r, group_id, ttl):
        from ..cancelling import cancel_everywhere

        n = cancel_everywhere(r, group_id, ttl).total
    else:
        n = r.cancel(group_id, ttl)
    if n:
        SESSION.submitted(group_id, ttl)  # the cell's view (``%load_ext``) shows what ended
    return n


def _held_elsewhere(r: Runner, group: str, ttl: int | None) -> bool:
    """Whether the store holds unfinished tasks of ``group`` that this runner does
    not: another process's, live or gone. (Before, ``cancel_group`` cancelled only
    this kernel's: from a second notebook, or after a restart, it returned 0 and
    the view's Cancel button did nothing while tasks stayed queued.) This runner's
    count is read first: a task leaves it only once its outcome is stored, so a
    task finishing meanwhile is never taken for another process's."""
    held = r.unfinished().get((ttl is not None, group), 0)
    c = r.store_for(ttl).counts(group)
    return c.submitted - c.done - c.failed - c.cancelled > held


def retry_group(group_id: str, cached: bool | int = False) -> int:
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
    ttl = SESSION.layer(cached)
    r = SESSION.runner()
    r.flush()
    entries = r.store_for(ttl).group_entries(group_id) or []
    todo = [(p, c, "failure", o.attempt) for p, c, o in entries
            if o is not None and o.state == "failure"]
    n = r.resubmit(todo, ttl)
    if n:
        SESSION.submitted(group_id, ttl)  # a re-submission shows its view, as a submission does
    return n


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
    r = SESSION.runner()
    r.flush()
    entries = r.store.group_entries(group_id) or []
    alive: dict[str | None, bool] = {}
    # A kernel on another host cannot be seen by pid; while it holds tasks it keeps
    # a fresh presence entry. (Here the pid decides: a kernel just killed leaves
    # its entry for a few seconds.)
    busy = presence.present(r.store)
    todo = []
    for p, c, o in entries:
        owner = p.options.get("owner")
        if owner not in alive:
            alive[owner] = owner != r.owner and (
                owner_alive(owner) if owner_local(owner) else owner in busy)
        if o is None and not alive[owner]:
            todo.append((p, c, None))
    theirs = {names.task_id(p.prefix, c.index) for p, c, _ in todo
              if p.options.get("owner") != r.owner}
    if theirs:
        # A killed kernel's workers may still be inside a call: they exit within
        # a second (and start no new call); wait, so that no call runs twice.
        monitor.clean_orphans(wait=ORPHAN_WAIT_SECONDS, kill=True)
        # A Dask cluster outlives the kernel: its calls there end, or are stopped, first.
        still = r.end_orphans(theirs, ORPHAN_WAIT_SECONDS)
        if still:
            log.warning("nbgroups: resume_group(%r) leaves out %d call(s) a gone kernel "
                        "still runs on the cluster (a worker without a nanny cannot be "
                        "restarted); resume again once they end", group_id, len(still))
            todo = [e for e in todo if names.task_id(e[0].prefix, e[1].index) not in still]
    n = r.resubmit(todo, None)
    if n:
        SESSION.submitted(group_id, None)  # a re-submission shows its view, as a submission does
    return n
