"""Completion, mixed into the runner: what happens when a batch comes back.

The executor's done-callback only queues the batch and wakes the runner
thread (:meth:`Completion._on_done`); there :meth:`Completion._collect` takes
every batch that came back since the last look, learns the function's speed
and result size, and :meth:`Completion._finish` records them: failed runs with
retries left go back to the queue, ``async_iter`` chunks are merged into their
task, and the outcomes (already in the store's layout, from the worker) are
written in one transaction per layer. Only then do the jobs take their final
state, waiters wake and hooks run (:meth:`Completion._settle`). A failed write
keeps the outcomes in memory and retries them on the runner's next turns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

from .jobs import FINAL, QUEUED, STATE_OF, Batch, Job, outcome_of
from .store import LARGE_RESULT

log = logging.getLogger("nbgroups")

RECENT_MAX = 1024  # finished jobs kept with their outcome: result(id) without a store read


class Completion:
    """Mixed into :class:`~nbgroups.runner.Runner`: batches back from the executor."""

    def _on_done(self, batch: Batch) -> None:
        self._done.append((batch, None))
        self._wake.set()

    def _collect(self) -> None:
        finished: list[tuple[Job, tuple]] = []
        broken = False
        while self._done:
            batch, ready = self._done.popleft()
            if batch is None:
                finished += ready
                continue
            self._inflight.pop(batch.id, None)
            if batch.cancelled:  # by cancel(): its jobs are recorded already
                batch.future = None
                self._drop_monitor(batch)
                continue
            try:
                outs = batch.future.result()
            except BaseException as exc:
                # Only a break of the current pool restarts it: batches of a pool
                # already replaced come back broken too, and must not cost the
                # fresh pool its workers.
                if self._executor is not None and self._executor.is_broken(exc) and \
                        batch.pool == self._executor.generation:
                    broken = True
                finished += self._salvage(batch, exc)  # reads the monitor file
                self._drop_monitor(batch)
                continue
            finally:
                # future -> done callback -> batch -> future is a cycle: broken
                # here, the results go as soon as they are stored, not at the
                # next garbage collection (20 x 50 MB results: 1 GB otherwise).
                batch.future = None
            if batch.monitor:
                # Its worker is done with the file: the next batch reuses it (a
                # stamp names its batch; creating and removing a file per batch
                # was ~30 us of a round trip). Not after a cancel flag was set.
                if batch.flagged:
                    self._drop_monitor(batch)
                else:
                    self._monitors.append(batch.monitor)
            self._learn(batch, outs)
            finished += zip(batch.jobs, outs, strict=True)  # one outcome per call, in order
        if broken:
            self._recover()
        if finished:
            self._finish(finished)

    @staticmethod
    def _drop_monitor(batch: Batch) -> None:
        if batch.monitor:
            with contextlib.suppress(OSError):
                os.unlink(batch.monitor)

    def _learn(self, batch: Batch, outs: list[tuple]) -> None:
        """Update the function's ``[seconds per call, result bytes]`` (moving averages)."""
        first, last = outs[0], outs[-1]
        if first[3] is None or last[4] is None:
            return
        # the calls of a batch ran one after the other in one worker
        per = max(last[4] - first[3], 0.0) / len(outs)
        step = max(1, len(outs) // 64)  # result sizes: a sample is enough
        size = max((len(o[5]) for o in outs[::step] if type(o[5]) is bytes), default=0)
        name = batch.jobs[0].func[0]
        stats = self._stats.get(name)
        if stats is None:
            self._stats[name] = [per, size]
        else:
            stats[0] = 0.7 * stats[0] + 0.3 * per
            stats[1] = max(size, int(0.7 * stats[1] + 0.3 * size))

    def _finish(self, finished: list[tuple[Job, tuple]]) -> None:
        """Record finished runs: retries re-queued, iter chunks merged, outcomes stored.

        ``finished``: ``(job, outcome)`` pairs, outcomes in the store's layout
        (the worker builds them). Runs once per completed batch over every call
        in it, so the loops do per-call work only and store the outcome tuples
        as they are; what depends on the options is looked up once per run of
        calls sharing them.
        """
        final: list[tuple[Job, tuple]] = []
        append = final.append
        with self._lock:
            for pair in finished:
                job, out = pair
                if out[1] == "failure" and 0 < job.attempt <= job.options.retries:
                    self._ready.append(job)
                    continue
                if job.parent is not None:
                    pair = self._merge_chunk(job, out)
                    if pair is None:
                        continue
                    job = pair[0]
                if job.state not in FINAL:
                    append(pair)
        if self._unstored:  # runs whose outcome write failed earlier: tried again first
            final, self._unstored = self._unstored + final, []
        if not final:
            return
        by_layer: dict[int | None, dict[tuple, tuple[list, list]]] = {}
        options, gen = None, 0
        for job, o in final:
            if job.options is not options or job.gen != gen:
                options, gen = job.options, job.gen
                groups = by_layer.get(options.ttl)
                if groups is None:
                    groups = by_layer[options.ttl] = {}
                rows, prevs = groups.setdefault((options.group, gen), ([], []))
                save = options.save
            rows.append(o if save else (*o[:5], None, *o[6:]))  # save=False: hooks still see it
            if job.prev:
                prevs.append(job.prev)
        try:
            for ttl, groups in by_layer.items():
                self.store_for(ttl).write_outcomes(
                    [(group, gen, rows, prevs) for (group, gen), (rows, prevs) in groups.items()],
                    ttl=ttl)
        except Exception as exc:
            # Not counted as finished until stored: kept here, written again on
            # the runner's next turns; waiters are told (Runner.wait raises).
            self._unstored = final
            self.store_error = exc
            self._notify()
            log.error("nbgroups: %d finished task(s) could not be stored (%s); retrying",
                      len(final), exc)
            return
        self.store_error = None
        del by_layer, rows, o  # large results are released as soon as they are stored
        if self._settle(final):
            del final
            release_memory()

    def _merge_chunk(self, job: Job, out: tuple) -> tuple[Job, tuple] | None:
        """An ``async_iter`` chunk ended: ``(its task, the task's outcome)`` once
        every chunk did, else None."""
        state, started, result, error, tb = out[1], out[3], out[5], out[6], out[7]
        top, ci = job.parent
        it = top.chunks
        it.results[ci] = result
        it.started = started if it.started is None else min(it.started, started)
        if state == "failure" and not it.failed:
            it.failed, it.error, it.traceback = True, error, tb
        it.remaining -= 1
        top.attempt = max(top.attempt, job.attempt)
        if it.remaining:
            return None
        return top, outcome_of(top, "failure" if it.failed else "success", it.started,
                               time.time(), it.results, it.error, it.traceback)

    def _settle(self, final: list[tuple[Job, tuple]]) -> bool:
        """Stored: the jobs take their final state, waiters and hooks are told.
        Returns whether a large result went by (then memory is worth releasing)."""
        hooks = []
        recent = self._recent
        active = self._active
        release = False
        keep_from = len(final) - RECENT_MAX  # only the last ones could stay in `recent`
        options = live = None
        with self._lock:
            for n, (job, o) in enumerate(final):
                if job.options is not options:
                    options = job.options
                    live = self._live.get((options.ttl is not None, options.group))
                    keep, hook = options.save, options.hook
                if live is not None:
                    live[0 if job.state is QUEUED else 1] -= 1
                job.state = STATE_OF[o[1]]
                active.pop(job.id, None)
                if job.prev:
                    self._end_rerun(job)
                blob = o[5]
                if type(blob) is bytes and len(blob) >= LARGE_RESULT:
                    release = True  # large results are read from the store
                elif n >= keep_from and keep:
                    recent[job.id] = (job, o)
                if hook is not None:
                    hooks.append((job, o))
            while len(recent) > RECENT_MAX:
                recent.popitem(last=False)
        self._notify(final)
        for job, o in hooks:
            self._call_hook(job, o)
        return release

    def _call_hook(self, job: Job, o: tuple) -> None:
        hook = job.options.hook
        try:
            if isinstance(hook, str):
                from .worker import resolve

                hook = resolve(hook)
            hook(self.record_of(job, o, self.record_class))
        except BaseException:  # even SystemExit: a hook must not stop the runner
            log.exception("nbgroups: hook %r failed for task %s", job.options.hook, job.id)


def release_memory() -> None:
    """Give freed memory back to the OS after large results were stored.

    loky receives results in growing buffers on its own thread; glibc keeps
    the freed pages in that thread's arena, so without this a sweep of 50 MB
    results grows the kernel by every result it ever received (measured: 20 x
    50 MB -> 1 GB kept; after malloc_trim, none). Costs ~0.1 ms.
    """
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_libc = _load_libc() if os.name == "posix" else None
