"""What other processes run now, seen by the dashboard: a busy runner keeps a
short-lived entry in the store (nbgroups.presence). The owner is a real Python
process on a real loky pool, sharing a real diskcache store with this one."""

from __future__ import annotations

import json
import time

from nbgroups import presence
from nbgroups.dashboard import views
from nbgroups.presence import PresenceReporter
from nbgroups.store import MemoryStore
from nbgroups.stores import Stores
from tests.dashboard_env import SWEEP, release_owner, start_owner


def test_a_runner_reports_what_it_holds_and_removes_it_when_idle():
    store = MemoryStore()
    held = {(False, "g"): (3, 2, ["a", "b"]), (False, None): (1, 0, []),
            (True, "c"): (1, 1, ["c"])}
    idle = [False]
    reporter = PresenceReporter(Stores(store), "me", lambda: dict(held), lambda: idle[0])
    reporter.poll()
    assert presence.elsewhere(store) == {"g": (3, 2)}  # the cache layer: not opened
    assert presence.running_elsewhere(store, "g") == {"a", "b"}
    assert presence.elsewhere(store, "me") == {}  # a reader leaves its own process out
    assert presence.running_elsewhere(store, "g", "me") == set()
    held[(False, "g")] = (0, 1, ["b"])
    reporter.poll()  # within REPORT_SECONDS: not rewritten
    assert presence.elsewhere(store) == {"g": (3, 2)}
    reporter._next = 0.0  # the next period, without waiting for it
    reporter.poll()
    assert presence.elsewhere(store) == {"g": (0, 1)}
    held.clear()
    idle[0] = True
    reporter.poll()  # idle: removed at once, whatever the period
    assert presence.elsewhere(store) == {}


def test_entries_of_several_processes_add_up_and_junk_is_ignored():
    store = MemoryStore()
    # "a" as an earlier version wrote it (no ids), "b" with the ids of what it runs
    for owner, rows in [("a", [["g", 1, 2]]),
                        ("b", [["g", 0, 1], ["h", 4, 0], {"running": {"g": ["x"]}}])]:
        store._set(f"h\x00{owner}", json.dumps(rows), presence.LIFETIME)
    store._set("h\x00junk", "not json", presence.LIFETIME)
    store._set("h\x00short", json.dumps([["g"]]), presence.LIFETIME)
    store._set("h\x00odd", json.dumps([["g", 1, 1], {"running": ["x"]}]), presence.LIFETIME)
    assert presence.elsewhere(store) == {"g": (1, 3), "h": (4, 0)}
    assert presence.running_elsewhere(store, "g") == {"x"}
    # an earlier version's reader sums the rows and stops at the ids: counts unchanged
    old_reader: dict = {}
    for _key, value in store._scan("h\x00"):
        try:
            for group, queued, running in json.loads(value):
                q, r = old_reader.get(group, (0, 0))
                old_reader[group] = (q + int(queued), r + int(running))
        except (ValueError, TypeError):
            continue
    assert old_reader == {"g": (2, 4), "h": (4, 0)}  # "odd"'s row too: it is one of theirs




def far(runner) -> dict:
    [g] = [g for g in views.group_list(runner) if g["group"] == "far"]
    return g


def test_the_dashboard_counts_what_another_process_runs(tmp_path, here):
    owner, _starts, go, _ = start_owner(tmp_path, "loky")  # call 0 runs, the rest wait
    try:
        deadline = time.monotonic() + 30
        while far(here)["running"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # another process's entry: nothing to wait on but the store
        g = far(here)
        assert (g["running"], g["queued"], g["done"]) == (1, SWEEP - 1, 0)
        summary = views.group_summary(here, "far")
        assert (summary["running"], summary["queued"]) == (1, SWEEP - 1)
        # the task table marks the call the other process's worker runs, not queued
        page = views.group_page(here, "far", 0, 100)
        assert [row["state"] for row in page["rows"]] == ["running"] + ["queued"] * (SWEEP - 1)
        go.touch()
        assert json.loads(owner.stdout.readline()) == ["success"] * SWEEP
        assert owner.wait(60) == 0
    finally:
        release_owner(owner, go)
    g = far(here)  # finished: nothing runs, whatever an entry still says
    assert (g["running"], g["queued"], g["done"]) == (0, 0, SWEEP)


def test_resume_leaves_alone_the_tasks_of_a_kernel_on_another_host_that_holds_them(here):
    """A kernel on another host cannot be seen by pid: it used to count as gone,
    and resume_group ran its queued tasks a second time (and, on Dask, would end
    the workers running its calls). A fresh presence entry says it is alive."""
    from nbgroups import names, resume_group

    store = here.store_for(None)
    owner = "another-host:4242:1"
    opts = {"timeout": None, "retries": 0, "save": True, "ttl": None, "hook": None,
            "owner": owner}
    calls = tuple((i, 0, (float(i),), None, None, False) for i in range(3))
    store.write_pages([dict(prefix=names.new_prefix(), group="remote", created=time.time(),
                            funcs=(("math.floor", None),), calls=calls, options=opts)])
    store._set(f"h\x00{owner}", json.dumps([["remote", 2, 1]]), presence.LIFETIME)
    assert resume_group("remote") == 0  # alive elsewhere: its tasks are its own
    store._delete([f"h\x00{owner}"])  # its entry gone (it died, or is idle): orphans
    assert resume_group("remote") == 3
    import nbgroups

    assert nbgroups.result_group("remote", wait=60_000) == [0, 1, 2]
