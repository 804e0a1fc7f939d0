"""nbgroups on Dask vs plain ``client.submit``: 10,000 tiny calls, same cluster, same run.

A 2-worker ``LocalCluster`` on 127.0.0.1. Timed from the first submission to
the last result back in the notebook's process (for nbgroups: in its store).
Target: nbgroups at least 10x faster (it batches tiny calls; Dask schedules
each ``submit`` as its own task). Exits 1 if the target is missed.

    .venv/bin/python benchmarks/bench_dask.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time

TARGET = 10.0


def tiny(x):
    return x + 1


def main(n: int = 10_000) -> int:
    import distributed

    import nbgroups
    from nbgroups import api

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as lc, \
            distributed.Client(lc, set_as_default=False) as client, \
            tempfile.TemporaryDirectory() as store:
        client.wait_for_workers(2)
        client.submit(tiny, 0, pure=False).result()  # warm both sides up

        t0 = time.perf_counter()
        futures = [client.submit(tiny, i, pure=False) for i in range(n)]
        out = client.gather(futures)
        t_dask = time.perf_counter() - t0
        assert out == [i + 1 for i in range(n)]
        del futures, out

        nbgroups.configure(store=store, backend="dask", client=client, progress=False)
        nbgroups.result(nbgroups.async_task(tiny, 0), wait=-1)  # warm up
        t0 = time.perf_counter()
        for i in range(n):
            nbgroups.async_task(tiny, i, group="bench")
        res = nbgroups.result_group("bench", wait=-1)
        t_nb = time.perf_counter() - t0
        assert res == [i + 1 for i in range(n)], "wrong results"
        api.reset()

    ratio = t_dask / t_nb
    print(f"{n} tiny calls on a 2-worker LocalCluster")
    print(f"  client.submit + gather : {t_dask:8.3f} s  ({n / t_dask:10.0f} calls/s)")
    print(f"  nbgroups async_task    : {t_nb:8.3f} s  ({n / t_nb:10.0f} calls/s)")
    print(f"  nbgroups is {ratio:.1f}x faster (target >= {TARGET:g}x): "
          f"{'OK' if ratio >= TARGET else 'MISSED'}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
