"""Open pages: submitted calls gathering until a flush writes them to the store.

Submission (the caller's thread) only appends a call to the *open page* of its
group and options and returns the id: ids and names are derived from the
page, so nothing is written per task. A page is *sealed* when it is full or
another page of its group opens (submission order is kept). A *flush* takes
every open and sealed page, writes them to their layers' stores in one
transaction each (:class:`PageWriter`), and hands back their jobs to queue.
A burst of submissions first *lingers* a moment, so that pages hold many calls.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from . import names
from .errors import SerializationError
from .funcstate import Watched
from .jobs import RUNNING, Job, OpenPage, Options, failed
from .outcome import Row
from .records import Call
from .serialize import callable_name, dumps
from .stores import Stores
from .tracebacks import remember
from .values import Writer

LINGER_SECONDS = 0.02
LINGER_CALLS = 4096


class Written(NamedTuple):
    """What a page write gives the runner: jobs to queue, and calls that failed
    already (an argument that cannot be pickled), with their outcomes."""

    jobs: list[Job]
    failed: list[tuple[Job, Row]]
    pages: list[OpenPage]  # the pages these jobs came in


class PageBuffer:
    """Open and sealed pages, per (layer, group); what a flush takes and gives back."""

    def __init__(self, lock: threading.RLock,
                 values: Callable[[Options], Writer | None] = lambda options: None) -> None:
        self.lock = lock
        self.values = values  # the value writer for a page's options (large_value), or None
        self._open: dict[int, OpenPage] = {}  # id(options) -> its open page
        self._last: dict[tuple, int] = {}  # (layer, group) -> key of its open page
        self._sealed: list[OpenPage] = []
        self._writing: list[OpenPage] = []  # taken by the flush writing them
        self._watched: dict[int, Watched] = {}  # id(func) -> what its pickle takes
        self.pending = 0  # calls added since the last take (read without the lock)

    def add(self, func: Any, calls: Sequence[tuple[Any, dict | None]], options: Options,
            iterable: bool, running: bool = False) -> list[Job]:
        """Append calls of ``func`` to the open page of ``options``; their new jobs
        (``running``: they run inline, in the caller's thread)."""
        n = len(calls)
        fkey, held = self._func_key(func)
        pickled = self._pickled_func(func, fkey, options)  # raises before anything is registered
        where = (options.cached, options.group)
        with self.lock:
            key = id(options)  # api memoizes Options; the open page keeps it alive
            page = self._open.get(key)
            if page is None:
                # One open page per group and layer: other options (task_name=,
                # timeout=...) seal the group's open page first, or a later page
                # would be numbered before earlier calls (submission order lost).
                last = self._last.get(where)
                if last is not None and last in self._open:
                    self._seal(last)
                self._last[where] = key
            if page is None or len(page.jobs) + n > names.PAGE_CAPACITY:
                if page is not None:
                    self._seal(key)
                page = self._open[key] = OpenPage(names.new_prefix(), options, time.time())
            fref = self._func_ref(page, func, fkey, held, pickled)
            prefix = page.prefix
            task_name = options.task_name
            new = []
            for i, (args, kwargs) in enumerate(calls, len(page.jobs)):
                job = Job(f"{prefix}{i:08x}", fref, args, kwargs, options, prefix, task_name)
                if iterable:
                    job.items = args
                if running:  # runs inline: a flush must not queue it for the pool
                    job.state = RUNNING
                new.append(job)
            # The one change a submission makes: a single call, so a Ctrl-C lands
            # before it (no id, nothing submitted) or after it (the ids are in a
            # page, and counted from there: see queued()).
            page.jobs.extend(new)
            self.pending += n
            return new

    def _func_key(self, func: Any) -> tuple[Any, tuple]:
        """The key of ``func`` in a page's function table, and what the page must
        keep alive for it: a notebook function is keyed by the identities of the
        globals and closure cells its pickle takes (:mod:`nbgroups.funcstate`),
        so that a call made after a global was rebound gets it pickled again."""
        if isinstance(func, str):
            return func, ()
        w = self._watched.get(id(func))
        if w is None or w.func is not func:
            w = self._watched[id(func)] = Watched(func)
            if len(self._watched) > 256:  # functions of earlier cells
                # (several threads may submit: Executor, joblib's callback thread)
                with contextlib.suppress(RuntimeError, StopIteration):
                    self._watched.pop(next(iter(self._watched)), None)
        if not (w.names or w.cells):
            return id(func), ()
        held = w.values()
        return (id(func), *map(id, held)), held

    def _pickled_func(self, func: Any, key: Any, options: Options) -> tuple | None:
        """The callable pickled for its page: once per page and state of its
        globals (``key``), not cached across pages (a notebook function's
        globals may change between cells). None for a dotted path, or when the
        open page has it already."""
        if isinstance(func, str):
            return None
        page = self._open.get(id(options))
        if page is not None and key in page.func_index:
            return None
        remember(func)  # where its code came from: tracebacks name the cell (tracebacks)
        return self._dumps_func(func, options)

    def _dumps_func(self, func: Any, options: Options) -> tuple:
        """``(pickle,)``, or ``(pickle, stored values)`` when ``func`` captures large
        values and the page's layer stores them (:meth:`nbgroups.values.Writer.dumps_func`):
        they are then stored once by digest, not pickled into every page and batch."""
        try:
            writer = self.values(options)
            if writer is None:
                return (dumps(func),)
            blob, stored = writer.dumps_func(func)
            return (blob, stored) if stored else (blob,)
        except Exception as exc:
            raise SerializationError(
                f"func {callable_name(func)} cannot be pickled to be sent to a worker "
                f"({type(exc).__name__}: {exc}); it may hold a lock, a file or a "
                "connection: create those inside the function") from None

    def _func_ref(self, page: OpenPage, func: Any, key: Any, held: tuple,
                  pickled: tuple | None) -> tuple:
        """The page's entry for ``func`` (``key``: see :meth:`_func_key`): ``(name,
        pickle or None for a dotted path[, stored values it captures])``, made on
        its first call in the page with those globals."""
        ref = page.func_index.get(key)
        if ref is None:
            if isinstance(func, str):
                ref = (func, None)
            else:  # (pickled again if another page was open when it was pickled)
                ref = (callable_name(func),
                       *(pickled if pickled is not None else self._dumps_func(func, page.options)))
            page.func_index[key] = ref
            page.funcs.append((func, held))  # keeps the ids in the key valid while open
        return ref

    def _seal(self, key: int) -> None:
        """Close an open page so that new calls start a new one (flushed later)."""
        self._sealed.append(self._open.pop(key))

    def take(self) -> list[OpenPage]:
        """Every open and sealed page, for a flush to write (held as *writing*)."""
        with self.lock:
            pages = [*self._sealed, *self._open.values()]
            self._writing = pages  # first: idle() reads these three without the lock
            self._open = {}
            self._sealed = []
            self.pending = 0
            return pages

    def put_back(self, pages: list[OpenPage]) -> None:
        """Pages a flush could not write: the next flush tries them first."""
        with self.lock:
            self._sealed[:0] = pages

    def written(self) -> None:
        """The flush that took the pages is over."""
        with self.lock:
            self._writing = []

    def queued(self, where: tuple[bool, str | None]) -> int:
        """Calls of ``(layer, group)`` in pages not stored yet: queued (the runner
        tracks and counts them once their page is stored). The caller holds the lock."""
        cached, group = where
        return sum(len(p.jobs) for p in itertools.chain(self._open.values(), self._sealed,
                                                       self._writing)
                   if p.options.group == group and p.options.cached == cached)

    def places(self) -> set[tuple[bool, str | None]]:
        """The (layer, group) of every page not stored yet. The caller holds the lock."""
        return {(p.options.cached, p.options.group) for p in
                itertools.chain(self._open.values(), self._sealed, self._writing)}

    def stored(self, pages: list[OpenPage]) -> None:
        """These pages are stored and their jobs tracked: no longer counted here.
        The caller holds the lock (with the tracking: counted once, always)."""
        self._writing = [p for p in self._writing if all(p is not q for q in pages)]

    def idle(self) -> bool:
        """Whether no page is open, sealed or being written (read without the lock:
        a flush moves pages from one list to the other under it)."""
        return not (self._open or self._sealed or self._writing)

    def unwritten(self) -> bool:
        """Whether pages wait to be written (put back by a failed flush, or new)."""
        with self.lock:
            return bool(self._open or self._sealed)

    def holds(self, prefix: str) -> bool:
        """Whether a page not yet stored has this prefix."""
        with self.lock:
            return any(p.prefix == prefix for p in
                       itertools.chain(self._open.values(), self._sealed, self._writing))

    def __bool__(self) -> bool:
        return bool(self._open or self._sealed)

    def linger(self) -> None:
        """Let a burst of submissions settle, so that pages hold many calls.

        A page write costs ~0.2 ms whatever its size: a loop of ``async_task``
        calls should make a few large pages, not one per call. A lone call is
        flushed at once (latency); a burst until it pauses for a millisecond,
        reaches LINGER_CALLS, or has waited LINGER_SECONDS.
        """
        seen = self.pending
        if seen <= 1:
            return
        deadline = time.monotonic() + LINGER_SECONDS
        while seen < LINGER_CALLS and time.monotonic() < deadline:
            time.sleep(0.001)
            if self.pending == seen:
                return
            seen = self.pending


class PageWriter:
    """Writes pages to their layers' stores; remembers this kernel's hooks."""

    def __init__(self, stores: Stores, owner: str) -> None:
        self.stores = stores
        self.owner = owner  # recorded with every page: resume_group elsewhere asks
        self._hooks: dict[str, Any] = {}  # page prefix -> hook, for pages made here

    def hook_of(self, prefix: str, stored: Any) -> Any:
        """The hook of a page: this kernel's own object if it made the page (a
        copy restored from the store would mutate copies of notebook state)."""
        return self._hooks.get(prefix, stored)

    def write(self, pages: list[OpenPage], put_back: Callable[[list[OpenPage]], None],
              stored: Callable[[Written], None]) -> None:
        """Write pages, layer by layer; each layer's jobs (their generation and
        date set) go to ``stored`` as soon as that layer is written.

        If a layer's store fails, the pages not written yet go back
        (``put_back``) and the error is raised: nothing is dropped.
        """
        by_layer: dict[int | None, list[OpenPage]] = {}
        for p in pages:
            by_layer.setdefault(p.options.ttl, []).append(p)
        unwritten = list(pages)
        for ttl, layer_pages in by_layer.items():
            drafts = [self._draft(p) for p in layer_pages]
            failed_here: list[tuple[Job, Row]] = []
            try:
                try:
                    specs = self.stores.layer(ttl).write_pages(drafts, ttl=ttl)
                except Exception:
                    specs, failed_here = self._write_salvaging(layer_pages, drafts, ttl)
            except BaseException:  # whatever stops the write: nothing is dropped
                put_back(unwritten)
                raise
            unwritten = [p for p in unwritten if all(p is not q for q in layer_pages)]
            jobs: list[Job] = []
            for p, sp in zip(layer_pages, specs, strict=True):
                gen, created = sp.gen, sp.created
                for j in p.jobs:
                    j.gen = gen
                    j.submitted = created
                jobs += p.jobs
            stored(Written(jobs, failed_here, layer_pages))

    def _draft(self, p: OpenPage) -> dict:
        """An open page as the store's ``write_pages`` takes it."""
        funcs = list(p.func_index.values())  # in order of first use, as the jobs name them
        index = {f: i for i, f in enumerate(funcs)}
        calls = tuple(  # plain tuples in Call's layout: fast to pickle
            (i, index[j.func], j.args if j.items is None else j.items,
             j.kwargs, j.task_name, j.items is not None)
            for i, j in enumerate(p.jobs)
        )
        opts = p.options
        if opts.hook is not None:
            self._hooks[p.prefix] = opts.hook
        return dict(
            prefix=p.prefix, group=opts.group, created=p.created, funcs=tuple(funcs),
            calls=calls, options={"timeout": opts.timeout, "retries": opts.retries,
                                  "save": opts.save, "ttl": opts.ttl, "hook": opts.hook,
                                  "owner": self.owner},
        )

    def _write_salvaging(self, layer_pages: list[OpenPage], drafts: list[dict],
                         ttl: int | None) -> tuple[list, list[tuple[Job, Row]]]:
        """A page write failed. If calls whose arguments cannot be pickled are the
        cause, their pages are stored with those calls' arguments left out and
        those calls fail (returned as finished runs); the rest goes on. If not
        (the store itself failed), the error is raised again."""
        bad: dict[str, str] = {}
        for d in drafts:
            calls = []
            for c in d["calls"]:
                call = Call._make(c)
                try:
                    dumps((call.args, call.kwargs))
                    calls.append(c)
                except Exception as exc:
                    bad[names.task_id(d["prefix"], call.index)] = f"{type(exc).__name__}: {exc}"
                    calls.append(tuple(call._replace(args=None, kwargs=None)))
            d["calls"] = tuple(calls)
            try:
                dumps(d["options"]["hook"])
            except Exception:  # kept for this kernel's re-runs only (hook_of)
                d["options"] = {**d["options"], "hook": None}
        written = self.stores.layer(ttl).write_pages(drafts, ttl=ttl)  # may raise: store error
        unsent = [
            (j, failed(j, SerializationError(
                f"an argument of this task cannot be pickled to be sent to a worker "
                f"({bad[j.id]}); it was not run")))
            for p in layer_pages for j in p.jobs if j.id in bad]
        return written, unsent
