"""Live progress views of groups: ipywidgets in a notebook, one text line elsewhere.

::

    runner thread ──listener()──▶ Renderer: mark dirty (cheap, never draws)
                                     │ renderer thread: at most every 0.1 s, only on change
                                     ▼
             kernel idle: kernel event loop ──▶ ProgressView.refresh()
             cell running (a blocking wait): renderer thread ──▶ ProgressView.refresh()
             end of every cell (post_run_cell), interpreter exit ──▶ refresh (final state)

    ProgressView.refresh: runner.counts(group) ──▶ meter() (pure) ──▶ WidgetView | TextView

:mod:`.formatting` turns counts into what is shown (pure, doctested);
:mod:`.widget` and :mod:`.text` only lay it out. A refresh that would show
the same thing sends nothing, and a widget refresh is a handful of comm
messages, so the traffic is bounded by the rate, not by the task count.

A view shows the run it was made for: the submissions of its cell (and what
its own buttons re-run). Once its cell ended and it showed the group settled,
it keeps that state when another cell runs the group again (that cell gets a
view of its own); when the group's label is deleted, it keeps its last state
and says "group deleted" instead of falling back to zero.

Drawing from the kernel's event loop while it is idle keeps updates on the
kernel's main thread (ipykernel 7.0 dropped display messages sent from other
threads). While a cell blocks that loop (``result_group(..., wait=-1)``) the
renderer thread draws (ipykernel >= 7.1 routes those messages to the running
cell); the end of every cell draws once more on the main thread, so the state
a notebook saves is the final one.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import api, arguments, names
from ..records import Call
from ..store import build_record
from .formatting import Failure, Meter, format_line, meter

__all__ = ["Failure", "Meter", "ProgressView", "choose_mode", "flush", "format_line",
           "meter", "progress", "view_of", "views"]

log = logging.getLogger("nbgroups")

MIN_INTERVAL = 0.1  # seconds between two draws of a view: ~10 updates a second at most
FAILURE_RELOAD = 1.0  # seconds between two reloads of a growing failure list
TICK = 1.0  # while a group runs, redraw elapsed/ETA at least this often
MAX_FAILURES_LOADED = 50
MAX_VIEWS = 200


def choose_mode(mode: Any = None) -> str:
    """``'widget'`` or ``'text'``: ``mode`` if given, else the ``progress`` setting;
    ``'auto'`` (and ``False``, for an explicit call) means a widget inside a
    Jupyter kernel with ipywidgets installed, text anywhere else."""
    if mode is None:
        mode = api.settings().progress
    if mode in ("widget", "text"):
        return mode
    if mode not in ("auto", False):
        raise ValueError(f"mode must be 'auto', 'widget' or 'text', got {mode!r}")
    if _kernel() is None:
        return "text"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "text"
    return "widget"


def _shell():
    """The running IPython shell, if IPython is already loaded (never imports it)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        return ipython.get_ipython()
    except Exception:  # a half-initialized IPython: no shell
        return None


def _kernel():
    return getattr(_shell(), "kernel", None)


def _is_terminal(shell) -> bool:
    """Whether ``shell`` is terminal IPython (a prompt on the terminal text views use)."""
    return shell is not None and type(shell).__name__ == "TerminalInteractiveShell"


_waits = 0  # waits (api) blocking now, in any thread
_waits_lock = threading.Lock()


def _on_wait(started: bool) -> None:
    """A wait begins or ends (``api._wait_listeners``). Text views draw while it
    blocks; before it returns their last state is drawn and the lines ended, so
    the final 100 % line is on screen before the result, and what is printed
    next (``Out[n]:``, the prompt) starts on a line of its own."""
    global _waits
    from . import text

    terminal = _is_terminal(_shell())
    with _waits_lock:
        _waits += 1 if started else -1
        first, last = started and _waits == 1, not started and _waits == 0
    try:
        if first and terminal:
            text.release()
        if last:
            for v in views():
                if v.mode == "text":
                    v.refresh(force=True)
            text.end_lines()
            if terminal:
                text.hold()
    except Exception:  # drawing must never break a wait
        log.debug("nbgroups: drawing at a wait's end failed", exc_info=True)


class ProgressView:
    """The live view of one group: an adapter (widget or text) fed by :func:`meter`.

    ``refresh()`` redraws if what it would show changed; the renderer calls
    it. ``widget`` is the ipywidgets tree (``None`` in text mode).
    """

    def __init__(self, group: str, *, ttl: int | None = None, mode: str = "widget",
                 stream=None, clock: Callable[[], float] = time.time) -> None:
        arguments.check_group(group)
        self.group = group
        self.ttl = ttl
        self.mode = mode
        self.clock = clock
        if mode == "widget":
            from .widget import WidgetView

            self.adapter: Any = WidgetView(group, on_cancel=self.cancel, on_retry=self.retry)
        else:
            from .text import TextView

            self.adapter = TextView(stream)
        self.min_interval = MIN_INTERVAL
        self.meter: Meter | None = None
        self.failures: tuple[Failure, ...] = ()
        self.draws = 0  # refreshes that changed what is shown
        self.busy = False  # this process had tasks of the group queued or running
        self._lock = threading.RLock()
        self._key: tuple | None = None
        self._drawn_at = 0.0
        self._failures_for: tuple | None = None
        self._failures_at = 0.0
        self._handle = None  # the output showing the widget (display_id), once shown
        self._static_for: tuple | None = None  # the state its static rendering shows
        # A view shows the run it was made for (module docstring): the label
        # generation it follows, whether the cell that made it ended, and whether
        # it stopped following the group (``frozen``).
        self.gen: int | None = None
        self.cell_ended = False
        self.frozen = False
        self._following = False  # its own button re-ran tasks: follow them

    @property
    def widget(self):
        return getattr(self.adapter, "box", None)

    @property
    def _cached(self) -> int | bool:
        return self.ttl if self.ttl is not None else False

    @property
    def active(self) -> bool:
        """Worth refreshing: running here, or not yet seen settled (and not frozen)."""
        return not self.frozen and (self.busy or self.meter is None or not self.meter.settled)

    def refresh(self, force: bool = False) -> bool:
        """Redraw if the group changed (``force``: also within the rate limit).

        Returns whether anything was drawn.
        """
        with self._lock:
            now = time.monotonic()
            if not force and now - self._drawn_at < self.min_interval:
                return False
            r = api._runner  # never start a runner (or a store) just to draw
            if r is None or (self.meter is not None and self.meter.deleted):
                return False
            gen = r.store_for(self.ttl).gen(self.group)
            if self.gen is None:
                self.gen = gen
            elif gen != self.gen:  # the label was deleted: what was shown stays, marked
                return self._freeze_deleted()
            if self.frozen:
                return False
            m = meter(r.counts(self.group, self.ttl), self.clock())
            if self.cell_ended and not self._following and self.meter is not None \
                    and self.meter.settled and m.key() != self._key:
                self.frozen = True  # another cell ran the group again: keep this run's end
                return False
            self.busy = r.busy(self.group, self.ttl)
            if m.settled and not self.busy:
                self._following = False
            failures = self._failures_if_changed(m, now, force)
            if m.key() == self._key and failures is None:
                return False
            if not force and not m.settled and self.mode == "text" and \
                    now - self._drawn_at < self.adapter.min_interval:
                return False
            self._key = m.key()
            self.meter = m
            self._drawn_at = now
            self.draws += 1
            self.adapter.update(m, failures)
            if self._handle is not None and m.settled and self._static_for != self._static_key():
                self._handle.update(self._bundle(), raw=True)  # the output's final state
            return True

    def _freeze_deleted(self) -> bool:
        """Stop following a group whose label was deleted; say so beside the last state."""
        from dataclasses import replace

        from ..records import GroupCounts

        self.frozen = True
        last = self.meter or meter(GroupCounts(self.group), self.clock())
        m = self.meter = replace(last, deleted=True)
        self._key = m.key()
        self.draws += 1
        self.adapter.update(m, None)
        if self._handle is not None:
            self._handle.update(self._bundle(), raw=True)
        return True

    def _failures_if_changed(self, m: Meter, now: float, force: bool):
        """The failure list, reloaded when the failure count or the settledness changed
        (at most every FAILURE_RELOAD s while the group runs); None if unchanged."""
        want = (m.failed, m.settled)
        if want == self._failures_for:
            return None
        if not (force or m.settled) and now - self._failures_at < FAILURE_RELOAD:
            return None
        self._failures_for = want
        self._failures_at = now
        self.failures = tuple(load_failures(self.group, self.ttl)) if m.failed else ()
        return self.failures

    def cancel(self) -> int:
        """Cancel the group's tasks not yet started (the Cancel button)."""
        self._following = True  # this view's own re-run: it follows it
        self.frozen = bool(self.meter and self.meter.deleted)
        AUTO.shown.add((self.group, self.ttl))  # this view shows it: no second one
        n = api.cancel_group(self.group, cached=self._cached)
        self.refresh(force=True)
        return n

    def retry(self) -> int:
        """Re-submit the group's failed tasks (the Retry-failed button)."""
        self._following = True  # this view's own re-run: it follows it
        self.frozen = bool(self.meter and self.meter.deleted)
        AUTO.shown.add((self.group, self.ttl))  # this view shows it: no second one
        n = api.retry_group(self.group, cached=self._cached)
        self.busy = self.busy or n > 0
        self.refresh(force=True)
        RENDERER.poke()
        return n

    def close(self) -> None:
        RENDERER.remove(self)
        self.adapter.close()

    def show(self) -> None:
        """Display the view in the cell: the widget, and in the same output a static
        rendering of its state (text/html, text/plain) for readers without a live
        kernel (GitHub, nbviewer, nbconvert), replaced when the group settles."""
        if self.widget is None:
            self.refresh(force=True)
            return
        from IPython.display import display

        self._handle = display(self._bundle(), raw=True, display_id=True)

    def _static_key(self) -> tuple:
        return (self.meter.key() if self.meter else None, self.failures)

    def _bundle(self) -> dict:
        """The widget's mimebundle, its text/plain (the widget's repr) replaced, and
        text/html added, by the view's state."""
        from .formatting import format_html, format_text

        data = dict(self.widget._repr_mimebundle_() or {})
        self._static_for = self._static_key()
        if self.meter is not None:
            data["text/plain"] = format_text(self.meter, self.failures)
            data["text/html"] = format_html(self.meter, self.failures)
        return data

    def _ipython_display_(self) -> None:
        self.show()

    def _repr_pretty_(self, p, cycle: bool) -> None:
        p.text(format_line(self.meter) if self.meter else f"<progress of {self.group!r}>")

    def __repr__(self) -> str:
        return f"<ProgressView {self.group!r} {self.mode}: " + \
            (format_line(self.meter) if self.meter else "not drawn") + ">"


def load_failures(group: str, ttl: int | None = None,
                  limit: int = MAX_FAILURES_LOADED) -> list[Failure]:
    """The first ``limit`` failed tasks of ``group``: name, exception line, traceback."""
    r = api.runner()
    entries = r.store_for(ttl).group_entries(group) or []
    out = []
    for page, call, o in entries:
        if o is None or o.state != "failure":
            continue
        call = Call._make(call)
        tid = names.task_id(page.prefix, call.index)
        rec = build_record(tid, call.task_name or names.name_of(tid), page.funcs[call.func][0],
                           None, None, o, group, page.created)
        out.append(Failure(rec.name, rec.error or "failed", rec.traceback or ""))
        if len(out) >= limit:
            break
    return out


class Renderer:
    """Draws every active view, rate-limited, from the right thread (module docstring)."""

    def __init__(self) -> None:
        self.views: list[ProgressView] = []
        self._lock = threading.RLock()  # one draw at a time
        self._dirty = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner = None
        self._shells: set[int] = set()
        self.cell_running = False
        self.loop = None
        self._loop_pending = 0.0  # monotonic time a loop callback was posted, 0 if none

    # ---------------------------------------------------------------- views
    def add(self, view: ProgressView) -> None:
        self._attach()
        with self._lock:
            self.views.append(view)
            if len(self.views) > MAX_VIEWS:
                stale = next((v for v in self.views if not v.active), self.views[0])
                self.views.remove(stale)
        view.refresh(force=True)
        self._ensure_thread()
        self.poke()

    def remove(self, view: ProgressView) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self.views.remove(view)

    def _attach(self) -> None:
        """Listen to the current runner (configure() may have replaced it), and to waits."""
        if _on_wait not in api._wait_listeners:
            api._wait_listeners.append(_on_wait)
        r = api.runner()
        if r is not self._runner:
            if self._runner is not None:
                self._runner.remove_listener(self.poke)
            r.add_listener(self.poke)
            self._runner = r

    def hook_shell(self, shell) -> None:
        """Follow the shell's cells: draw from the event loop only while no cell
        runs, and draw every view once at the end of each cell."""
        if shell is None or id(shell) in self._shells:
            return
        self._shells.add(id(shell))
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_run_cell", self._post_run_cell)
        self.cell_running = True  # hooked from inside a cell
        kernel = getattr(shell, "kernel", None)
        self.loop = getattr(kernel, "io_loop", None)
        if _is_terminal(shell):
            from . import text

            text.hold()  # the terminal's prompt: drawn over by nothing (text.py)

    def unhook_shell(self, shell) -> None:
        if shell is None or id(shell) not in self._shells:
            return
        self._shells.discard(id(shell))
        for name, cb in (("pre_run_cell", self._pre_run_cell),
                         ("post_run_cell", self._post_run_cell)):
            with contextlib.suppress(ValueError):
                shell.events.unregister(name, cb)
        self.loop = None
        if _is_terminal(shell):
            from . import text

            text.release()

    def _pre_run_cell(self, info=None) -> None:
        self.cell_running = True
        if _is_terminal(_shell()):
            from . import text

            text.write_pending()  # groups that ended while the prompt was idle

    def _post_run_cell(self, result=None) -> None:
        self.draw(force=True)
        self.cell_running = False
        with self._lock:
            for v in self.views:  # from now on, another cell's run is not theirs
                v.cell_ended = True

    # ---------------------------------------------------------------- drawing
    def poke(self) -> None:
        """Something changed (called from the runner thread): draw soon. Never draws."""
        self._dirty.set()

    def draw(self, force: bool = False) -> None:
        """Refresh every active view (all of them with ``force``)."""
        self._loop_pending = 0.0
        with self._lock:
            views = list(self.views)
        for v in views:
            if force or v.active:
                try:
                    v.refresh(force=force)
                except Exception:  # a closed store must not kill the renderer
                    log.debug("nbgroups: progress refresh of %r failed", v.group, exc_info=True)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="nbgroups-progress",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._lock:
                ticking = any(v.active for v in self.views)
            self._dirty.wait(TICK if ticking else None)
            self._dirty.clear()
            pause = last + MIN_INTERVAL - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            last = time.monotonic()
            self._dispatch()

    def _dispatch(self) -> None:
        loop = self.loop
        if loop is not None and not self.cell_running:
            now = time.monotonic()
            if not self._loop_pending:
                self._loop_pending = now
                try:
                    loop.add_callback(self.draw)
                    return
                except RuntimeError:  # the loop was closed
                    self.loop = None
            elif now - self._loop_pending < 1.0:
                return  # the loop has not drawn the last one yet
            # the loop did not run our callback for a second: it is blocked; draw here
        self.draw()

    def flush(self) -> None:
        """Draw every view now (interpreter exit, tests)."""
        self.draw(force=True)

    def reset(self) -> None:
        with self._lock:
            views, self.views = self.views, []
        for v in views:
            with contextlib.suppress(Exception):
                v.adapter.close()
        if self._runner is not None:
            self._runner.remove_listener(self.poke)
            self._runner = None


RENDERER = Renderer()


@atexit.register
def _at_exit() -> None:
    """Draw every view's last state, and end the text lines left open, so that the
    shell's prompt after a script starts on a line of its own."""
    RENDERER.flush()
    from . import text

    text.end_lines()


def progress(group_id: str, *, display: bool = True, mode: str | None = None,
             cached: bool | int = False, stream=None) -> ProgressView | None:
    """Show the live progress view of ``group_id`` (or, ``display=False``, return it).

    ``mode``: ``'widget'``, ``'text'`` or ``'auto'`` (default: the ``progress``
    setting; ``'auto'`` is a widget inside a Jupyter kernel, a line on stderr
    elsewhere). ``stream`` is the text view's stream (default ``sys.stderr``).
    A returned view displays itself when it is a cell's value.
    """
    arguments.check_group(group_id, "group_id")
    ttl = api._layer(cached)
    view = ProgressView(group_id, ttl=ttl, mode=choose_mode(mode), stream=stream)
    RENDERER.hook_shell(_shell())
    RENDERER.add(view)
    if view.mode == "text" and _is_terminal(_shell()):
        from . import text

        text.snapshot()  # asked for now: shown now, on lines of its own
    if display and view.widget is not None:
        view.show()
    return None if display else view


def views(group: str | None = None) -> list[ProgressView]:
    """The live views (of ``group``), oldest first."""
    with RENDERER._lock:
        return [v for v in RENDERER.views if group is None or v.group == group]


def view_of(group: str) -> ProgressView | None:
    """The newest live view of ``group``, or None."""
    found = views(group)
    return found[-1] if found else None


def flush() -> None:
    """Draw every live view now."""
    RENDERER.flush()


def reset() -> None:
    """Forget every view (tests, and when the runner is replaced)."""
    RENDERER.reset()
    AUTO.shown.clear()


class AutoShow:
    """Shows a group's view the first time a cell submits to it (``%load_ext nbgroups``)."""

    def __init__(self) -> None:
        self.shown: set[tuple[str, int | None]] = set()
        self.enabled = False

    def _pre_run_cell(self, info=None) -> None:
        self.shown.clear()

    def __call__(self, group: str | None, ttl: int | None) -> None:
        if group is None or not self.enabled or api.settings().progress is False:
            return
        key = (group, ttl)
        if key in self.shown:
            return
        self.shown.add(key)
        progress(group, cached=ttl if ttl is not None else False)

    def enable(self, shell) -> None:
        if self not in api._submit_listeners:
            api._submit_listeners.append(self)
        if not self.enabled and shell is not None:
            shell.events.register("pre_run_cell", self._pre_run_cell)
        self.enabled = True
        self.shown.clear()

    def disable(self, shell) -> None:
        with contextlib.suppress(ValueError):
            api._submit_listeners.remove(self)
        if self.enabled and shell is not None:
            with contextlib.suppress(ValueError):
                shell.events.unregister("pre_run_cell", self._pre_run_cell)
        self.enabled = False


AUTO = AutoShow()
