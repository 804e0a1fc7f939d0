"""Managing groups: delete, cancel, retry (failed tasks), resume (unfinished tasks)."""

from __future__ import annotations

from ..arguments import check_bool, check_group
from ..control import owner_alive
from .session import SESSION


def delete_group(group_id: str, tasks: bool = False, cached: bool | int = False) -> int:
    """Remove the group label (tasks stay, ``group=None``), or with ``tasks=True``
    the tasks too, cancelling those not started. Returns how many tasks."""
    check_group(group_id, "group_id")
    check_bool("tasks", tasks)
    ttl = SESSION.layer(cached)
    r = SESSION.runner()
    if tasks:
        r.cancel(group_id, ttl)
    r.flush()
    return int(r.store_for(ttl).delete_group(group_id, tasks))


def cancel_group(group_id: str, cached: bool | int = False) -> int:
    """Cancel the group's tasks not yet started; returns how many were cancelled."""
    check_group(group_id, "group_id")
    ttl = SESSION.layer(cached)
    n = SESSION.runner().cancel(group_id, ttl)
    if n:
        SESSION.submitted(group_id, ttl)  # the cell's view (``%load_ext``) shows what ended
    return n


def retry_group(group_id: str, cached: bool | int = False) -> int:
    """Re-submit the group's failed tasks (same callable and arguments); returns how many.

    Each keeps its id; its ``attempt_count`` goes on from the failed runs.
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
    """Re-submit the group's tasks that never finished (e.g. after a kernel restart).

    Each runs once: tasks this kernel is still running are left alone, and so
    are those of another kernel on this machine that is still running.
    """
    check_group(group_id, "group_id")
    r = SESSION.runner()
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
        SESSION.submitted(group_id, None)  # a re-submission shows its view, as a submission does
    return n
