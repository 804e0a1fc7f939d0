"""The dashboard's speed over HTTP, on a real ``nbgroups dashboard`` process.

Targets (issue 17): the groups page of a store of 10,000 groups in under a
second; a page of a 1,000,000-task group in under a second. Also the time
from a task stored by another process to the groups JSON showing it (the
page itself asks once a second). The stores are written through the store's
public write path (``write_pages``/``write_outcomes``), as the runner writes
them. Exits 1 if a target is missed.

    .venv/bin/python benchmarks/bench_dashboard.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

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


def main() -> int:
    missed = []
    with tempfile.TemporaryDirectory(prefix="nbgroups-bench-dash-") as tmp:
        os.environ.setdefault("XDG_CONFIG_HOME", os.path.join(tmp, "xdg"))  # a throwaway key
        many, big = os.path.join(tmp, "many"), os.path.join(tmp, "big")
        t0 = time.perf_counter()
        store = DiskStore(many)
        for i in range(10_000):
            write_group(store, f"sweep-{i:05d}", 2)
        store.close()
        store = DiskStore(big)
        write_group(store, "million", 1_000_000)
        store.close()
        print(f"stores written in {time.perf_counter() - t0:.1f} s")

        with dashboard_process(many) as dash:
            c = dash.client()
            c.get(f"/?token={dash.token}")
            t_json = median_get(c, "/api/groups")
            t_page = median_get(c, "/")
            print(f"10,000 groups: /api/groups {t_json:.3f} s, groups page {t_page:.3f} s "
                  "(median of 5)")
            if max(t_json, t_page) >= TARGET:
                missed.append(f"10,000 groups page {max(t_json, t_page):.3f} s")
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
            print(f"store write -> /api/groups shows it: median {statistics.median(lags):.3f} s "
                  "(one request of a 10,000-group store; the page polls every 1 s on top)")

        with dashboard_process(big) as dash:
            c = dash.client()
            c.get(f"/?token={dash.token}")
            for offset in (0, 500_000, 999_900):
                t = median_get(c, f"/group?name=million&offset={offset}")
                print(f"1,000,000-task group, page at offset {offset:,}: {t:.3f} s (median of 5)")
                if t >= TARGET:
                    missed.append(f"1M group page at {offset}: {t:.3f} s")
    print("missed: " + "; ".join(missed) if missed else "all targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
