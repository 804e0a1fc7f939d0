"""The dashboard's speed over HTTP, on a real ``nbgroups dashboard`` process.

Targets (issue 17): the groups page of a store of 10,000 groups in under a
second; a page of a 1,000,000-task group in under a second. Also the time
from a task stored by another process to the groups JSON showing it (the
page itself asks once a second). The stores are written through the store's
public write path (``write_pages``/``write_outcomes``), as the runner writes
them. Exits 1 if a target is missed. The same rows are ``run.py --only dashboard``.

    .venv/bin/python benchmarks/bench_dashboard.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nbgroups.store import DiskStore
from tests.dashboard_env import dashboard_process, write_group

TARGET = 1.0


def median_get(client, path: str, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - t0)
        assert answer.status == 200, (path, answer.status)
    return statistics.median(times)


def measure(tmp: str, report: Callable[[str, float, float | None], None]) -> None:
    """Write the two stores under ``tmp`` and time the dashboard on them:
    ``report(label, seconds, goal)`` for each figure (``goal`` None: no target)."""
    many, big = os.path.join(tmp, "many"), os.path.join(tmp, "big")
    t0 = time.perf_counter()
    store = DiskStore(many)
    for i in range(10_000):
        write_group(store, f"sweep-{i:05d}", 2)
    store.close()
    store = DiskStore(big)
    write_group(store, "million", 1_000_000)
    store.close()
    print(f"  (stores written in {time.perf_counter() - t0:.1f} s)", flush=True)

    with dashboard_process(many) as dash:
        c = dash.client()
        c.get(f"/?token={dash.token}")
        report("dashboard: /api/groups of 10,000 groups (median of 5)",
               median_get(c, "/api/groups"), TARGET)
        report("dashboard: groups page of 10,000 groups (median of 5)",
               median_get(c, "/"), TARGET)
        # another process stores a task: how long until the JSON shows it
        writer = DiskStore(many)
        lags = []
        for i in range(5):
            write_group(writer, f"late-{i}", 1)
            t0 = time.perf_counter()
            while f'"late-{i}"' not in c.get("/api/groups").body:
                pass
            lags.append(time.perf_counter() - t0)
        writer.close()
        report("dashboard: store write -> /api/groups shows it (median; page polls 1 s)",
               statistics.median(lags), None)

    with dashboard_process(big) as dash:
        c = dash.client()
        c.get(f"/?token={dash.token}")
        for offset in (0, 500_000, 999_900):
            report(f"dashboard: 1,000,000-task group, page at {offset:,} (median of 5)",
                   median_get(c, f"/group?name=million&offset={offset}"), TARGET)


def main() -> int:
    missed = []

    def report(label: str, seconds: float, goal: float | None) -> None:
        print(f"{label}: {seconds:.3f} s")
        if goal is not None and seconds >= goal:
            missed.append(f"{label}: {seconds:.3f} s")

    with tempfile.TemporaryDirectory(prefix="nbgroups-bench-dash-") as tmp:
        os.environ.setdefault("XDG_CONFIG_HOME", os.path.join(tmp, "xdg"))  # a throwaway key
        measure(tmp, report)
    print("missed: " + "; ".join(missed) if missed else "all targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
