"""The session: one kernel's nbgroups state, in one object.

The settings in force, the runner (created with its store on first use, and
replaced by :meth:`Session.configure`), the submission defaults of
``default_group``/``%%group``, the memo of validated options, the reuse
machinery, and the seams the edge (display, magics) uses: listeners of
submissions and of runner changes, and counts that never start a runner.

Everything above (submit, read, manage) asks :data:`SESSION` for these; no
module of nbgroups keeps mutable state of its own beyond memos of pure
functions.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import forward
from ..arguments import build_options, check_group
from ..config import CHECK, Settings, from_environment
from ..errors import ConfigurationError, StoreError
from ..jobs import Options
from ..records import GroupCounts, TaskRecord
from ..runner import Runner
from ..store import DiskStore, Store

log = logging.getLogger("nbgroups")

if TYPE_CHECKING:
    from ..reuse import Reuser

SubmitListener = Callable[[str | None, int | None], None]
"""Called as ``listener(group, ttl)`` after every submission (``ttl``: the cache layer's)."""

_MEMO_SIZE = 256  # distinct option sets remembered; a loop uses one


class Session:
    """One kernel's nbgroups state (module docstring). :data:`SESSION` is the kernel's.

    The hot path (``settings()``, ``runner()``, ``options()``) reads attributes
    without a lock; changes happen under one.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._settings: Settings | None = None
        self._runner: Runner | None = None
        self._record_class: type[TaskRecord] = TaskRecord
        self.default_group_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            "nbgroups_default_group", default=None)
        self.default_options_var: contextvars.ContextVar[dict] = contextvars.ContextVar(
            "nbgroups_default_options", default={})  # noqa: B039 - never mutated
        self._options_memo: dict[Any, tuple[Options, dict, dict, Settings]] = {}
        self._submit_listeners: list[SubmitListener] = []
        self._change_listeners: list[Callable[[], None]] = []
        self._wait_listeners: list[Callable[[bool], None]] = []
        self._reuser: Reuser | None = None
        self._parts: dict[str, Any] = {}

    # ------------------------------------------------------------ settings and runner
    def settings(self) -> Settings:
        """The settings in force: defaults, overridden by ``NBGROUPS_*`` environment
        variables, then by :func:`configure`.

        Returns:
            A frozen dataclass with one field per setting of :func:`configure`.

        Example:
            >>> import nbgroups
            >>> nbgroups.settings().backend in ('loky', 'thread', 'sync', 'dask')
            True
        """
        current = self._settings
        if current is not None:  # the hot path: no lock
            return current
        with self._lock:
            if self._settings is None:
                self._settings = from_environment()
            return self._settings

    def configure(self, **changes: Any) -> Settings:
        """Change the settings; a new runner when the store or backend changed
        (:func:`nbgroups.configure` documents the keywords)."""
        with self._lock:
            new = _pinned(self.settings().replace(**changes))
            _check_backend(new)
            old = self._runner
            if old is not None and "store" in changes and old.store_failed and all(
                    getattr(new, k) == getattr(self._settings, k)
                    for k in ("workers", "backend", "address", "client")):
                # The store failed (removed?) and one is named again, the same or
                # another: the runner carries on there, with the tasks it holds and
                # the results it kept in memory (what its StoreError promised).
                old.reopen(DiskStore(new.store))
                old.settings = new
            elif old is None or any(getattr(new, k) != getattr(self._settings, k)
                                    for k in ("store", "workers", "backend", "address", "client")):
                # Opens the store now: a bad directory fails here, and then the
                # settings and the runner in force stay as they were.
                self._runner = self._new_runner(new)
                if old is not None:
                    _retire(old)
            else:
                old.settings = new
            self._settings = new
            return new

    def runner(self) -> Runner:
        """The kernel's runner (created, with its store, on first use)."""
        r = self._runner
        if r is not None:
            return r
        with self._lock:
            if self._runner is None:
                s = _pinned(self.settings())
                _check_backend(s)  # NBGROUPS_BACKEND=dask without configure() is checked too
                self._runner = self._new_runner(s)
                self._settings = s
            return self._runner

    def current_runner(self) -> Runner | None:
        """The runner if one was started, else None (a view never starts one)."""
        return self._runner

    def _new_runner(self, s: Settings, store: Store | None = None) -> Runner:
        r = Runner(s, store=store)
        r.record_class = self._record_class
        for listener in self._change_listeners:
            r.add_listener(listener)
        return r

    @property
    def record_class(self) -> type[TaskRecord]:
        """The class of the records hooks receive (the api's ``Task``)."""
        return self._record_class

    @record_class.setter
    def record_class(self, cls: type[TaskRecord]) -> None:
        self._record_class = cls
        if self._runner is not None:
            self._runner.record_class = cls

    # ------------------------------------------------------------ submission defaults
    @contextlib.contextmanager
    def default_group(self, group: str | None, **options: Any) -> Iterator[None]:
        """Make ``group`` (and ``options``) the default of every submission inside."""
        if group is not None:
            check_group(group)
        token = self.default_group_var.set(group)
        otoken = self.default_options_var.set(options)
        try:
            yield
        finally:
            self.default_group_var.reset(token)
            self.default_options_var.reset(otoken)

    def defaults(self) -> tuple[str | None, dict]:
        """The default group and options in force here (``%%group``, ``default_group``)."""
        return self.default_group_var.get(), dict(self.default_options_var.get())

    def options(self, raw: dict) -> tuple[Options, dict]:
        """Validate submission options, fill defaults; returns ``(Options, flags)``.

        Memoized on the raw options and the defaults in force: a loop of ten
        thousand ``async_task(..., group=g)`` validates once. Both are shared:
        read-only.
        """
        s = self.settings()
        defaults = self.default_options_var.get()
        group = self.default_group_var.get()
        memo = self._options_memo
        try:
            # the common case, group= alone, keys on the string: no nested tuple to hash
            # (True == 1 and hash alike: the value's type is part of the key)
            items = raw.get("group") if len(raw) == 1 and "group" in raw else \
                tuple((k, type(v), v) for k, v in raw.items())
            key: Any = (items, group, id(defaults), id(s))
            hit = memo.get(key)
        except TypeError:  # an unhashable option value: validate every time
            key, hit = None, None
        if hit is not None and hit[2] is defaults and hit[3] is s:
            return hit[0], hit[1]
        opts, flags = build_options(raw, s, defaults, group)
        if key is not None:
            if len(memo) > _MEMO_SIZE:
                memo.clear()
            memo[key] = (opts, flags, defaults, s)
        return opts, flags

    def layer(self, cached: Any) -> int | None:
        """The store layer a ``cached=`` argument names: None (the task store) or a TTL."""
        if isinstance(cached, bool):
            return self.settings().cache_ttl if cached else None
        CHECK.cached("cached", cached)
        return cached

    def reuser(self) -> Reuser:
        """The ``reuse=True`` submitter (loaded on first use: keying is not light)."""
        r = self._reuser
        if r is None:
            from ..reuse import Reuser

            with self._lock:
                if self._reuser is None:
                    self._reuser = Reuser()
                r = self._reuser
        return r

    # ------------------------------------------------------------ seams for the edge
    def on_submit(self, listener: SubmitListener) -> None:
        """Call ``listener(group, ttl)`` after every submission (once per call)."""
        with self._lock:
            if listener not in self._submit_listeners:
                self._submit_listeners.append(listener)

    def off_submit(self, listener: SubmitListener) -> None:
        """Stop calling ``listener`` after submissions."""
        with self._lock, contextlib.suppress(ValueError):
            self._submit_listeners.remove(listener)

    def submitted(self, group: str | None, ttl: int | None) -> None:
        """Tell the submit listeners (called by the submit API after each call)."""
        if self._submit_listeners:
            for listener in list(self._submit_listeners):
                listener(group, ttl)

    def on_wait(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(True)`` when a wait (``result_group(wait=...)``, ...) begins
        to block and ``listener(False)`` when it returns: a text view draws while a
        wait blocks, and has drawn its last line when the wait returns."""
        with self._lock:
            if listener not in self._wait_listeners:
                self._wait_listeners.append(listener)

    def off_wait(self, listener: Callable[[bool], None]) -> None:
        """Stop telling ``listener`` about waits."""
        with self._lock, contextlib.suppress(ValueError):
            self._wait_listeners.remove(listener)

    def wait(self, r: Runner, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """``r.wait(predicate, timeout)``, the wait listeners told when it begins and ends."""
        listeners = list(self._wait_listeners)
        for listener in listeners:
            listener(True)
        try:
            return r.wait(predicate, timeout)
        finally:
            for listener in listeners:
                listener(False)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (from the runner thread) after every state change of
        the runner in force, and of every runner that replaces it. Never draws:
        a listener should only note that something changed."""
        with self._lock:
            if listener in self._change_listeners:
                return
            self._change_listeners.append(listener)
            if self._runner is not None:
                self._runner.add_listener(listener)

    def off_change(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener`` on state changes."""
        with self._lock:
            with contextlib.suppress(ValueError):
                self._change_listeners.remove(listener)
            if self._runner is not None:
                self._runner.remove_listener(listener)

    def live_counts(self, group: str, ttl: int | None = None
                    ) -> tuple[GroupCounts, bool] | None:
        """``(counts, busy)`` of ``group``: stored plus this kernel's queued/running
        counts, and whether this kernel still has tasks of it queued or running.
        None while no runner was started (reading never starts one)."""
        r = self._runner
        if r is None:
            return None
        return r.counts(group, ttl), r.busy(group, ttl)

    def task_progress(self, group: str) -> list[tuple]:
        """The running tasks of ``group`` and what they last reported of themselves
        (:meth:`nbgroups.runner.Runner.task_progress`); empty without a runner."""
        r = self._runner
        return [] if r is None else r.task_progress(group)

    def live_output(self, group: str) -> Any:
        """What the running tasks of ``group`` wrote lately, a :class:`nbgroups.forward.Lines`
        (:meth:`nbgroups.runner.Runner.live_output`); None without a runner."""
        r = self._runner
        return None if r is None else r.live_output(group)

    def part(self, name: str, factory: Callable[[], Any]) -> Any:
        """The session's ``name`` component (the display's renderer, ...), made by
        ``factory()`` on first use; :meth:`reset` calls its ``reset()``."""
        found = self._parts.get(name)
        if found is None:
            with self._lock:
                found = self._parts.get(name)
                if found is None:
                    found = self._parts[name] = factory()
        return found

    # ------------------------------------------------------------ reset
    def reset(self) -> None:
        """Stop the runner and forget settings, listeners and memos (tests; a fresh start)."""
        with self._lock:
            parts = list(self._parts.values())
        for p in parts:  # the edge first: it listens to the runner
            reset = getattr(p, "reset", None)
            if reset is not None:
                reset()
        with self._lock:
            if self._runner is not None:
                self._runner.close()
            self._runner = None
            self._settings = None
            self._submit_listeners.clear()
            self._change_listeners.clear()
            self._wait_listeners.clear()
            self._options_memo.clear()
            self._reuser = None
        forward.HUB.clear()  # the groups' live output lines


def _pinned(s: Settings) -> Settings:
    """``s`` with its store directory made absolute, against the working directory
    of now: a store is opened once, where it was named. Kept relative, the default
    ``.nbgroups`` moved with the notebook's ``os.chdir``: the next runner (any
    ``configure(workers=...)``) opened an empty store in the new directory, and every
    group seemed gone."""
    return s if os.path.isabs(s.store) else s.replace(store=os.path.abspath(s.store))


def _check_backend(s: Settings) -> None:
    if s.backend != "dask":
        return
    if s.address is None and s.client is None:
        raise ConfigurationError(
            "backend='dask' needs address='tcp://host:port' or client=Client(...)")
    from ..executors.dask import prepare

    prepare(s)  # distributed missing, or a wrong address: fail here, not later


def _retire(runner: Runner) -> None:
    """Let a replaced runner finish what it runs, then stop it, off the caller's thread."""
    def drain() -> None:
        while True:
            try:
                runner.close(wait=True)
                return
            except StoreError as exc:  # kept in memory, retried: wait again, quietly
                if not getattr(runner, "_drain_told", False):
                    runner._drain_told = True  # type: ignore[attr-defined]
                    log.error("nbgroups: a replaced runner cannot store its tasks (%s); "
                              "it keeps them and retries", exc)
                time.sleep(1.0)  # the runner retries each second too

    threading.Thread(target=drain, name="nbgroups-retire", daemon=True).start()


SESSION = Session()
"""The kernel's session: every public function of :mod:`nbgroups.api` uses it."""
