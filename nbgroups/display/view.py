"""The live view of one group: counts in, a widget or a text line out.

A :class:`ProgressView` is fed by a callable returning the group's counts
(by default the session's :meth:`~nbgroups.api.Session.live_counts`, which
never starts a runner); :func:`~.formatting.meter` turns them into what is
shown, and an adapter (:mod:`.widget` or :mod:`.text`) lays it out.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import api, arguments
from ..errors import ConfigurationError
from ..records import GroupCounts
from .formatting import Failure, Meter, format_html, format_line, format_text, meter

if TYPE_CHECKING:
    from .renderer import Renderer

CountsSource = Callable[[str, "int | None"], "tuple[GroupCounts, bool] | None"]
"""``source(group, ttl) -> (counts, busy here)``, or None when there is nothing to read."""

MIN_INTERVAL = 0.1  # seconds between two draws of a view: ~10 updates a second at most
FAILURE_RELOAD = 1.0  # seconds between two reloads of a growing failure list
MAX_FAILURES_LOADED = 50


def choose_mode(mode: Any = None) -> str:
    """``'widget'`` or ``'text'``: ``mode`` if given, else the ``progress`` setting;
    ``'auto'`` (and ``False``, for an explicit call) means a widget inside a
    Jupyter kernel with ipywidgets installed, text anywhere else."""
    if mode is None:
        mode = api.settings().progress
    if mode in ("widget", "text"):
        return mode
    if mode not in ("auto", False):
        raise ConfigurationError(
            f"mode must be 'auto', 'widget', 'text' or False, got {mode!r}")
    if kernel() is None:
        return "text"
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return "text"
    return "widget"


def shell() -> Any:
    """The running IPython shell, if IPython is already loaded (never imports it)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        return ipython.get_ipython()
    except Exception:  # a half-initialized IPython: no shell
        return None


def kernel() -> Any:
    """The Jupyter kernel of the running shell, or None (a terminal IPython, a script)."""
    return getattr(shell(), "kernel", None)


def _generation(group: str, ttl: int | None) -> int | None:
    """The group's label generation (``delete_group`` bumps it); None while no runner
    was started (reading never starts one)."""
    r = api.SESSION.current_runner()
    return None if r is None else r.store_for(ttl).gen(group)


def is_terminal(ip: Any) -> bool:
    """Whether ``ip`` is terminal IPython (a prompt on the terminal text views use)."""
    return ip is not None and type(ip).__name__ == "TerminalInteractiveShell"


def load_failures(group: str, ttl: int | None = None,
                  limit: int = MAX_FAILURES_LOADED) -> list[Failure]:
    """The first ``limit`` failed tasks of ``group``: name, exception line, traceback,
    the call with its arguments, id and output."""
    return [Failure(t.name, t.error or "failed", t.traceback or "", t.call, t.id,
                    t.stdout, t.stderr)
            for t in api.failed_tasks(group, cached=ttl if ttl is not None else False,
                                      limit=limit)]


class ProgressView:
    """The live view of one group: an adapter (widget or text) fed by :func:`meter`.

    ``refresh()`` redraws if what it would show changed; the renderer calls
    it. ``widget`` is the ipywidgets tree (``None`` in text mode). ``source``
    gives the counts (module docstring); ``clock`` the time shown as elapsed.
    """

    def __init__(self, group: str, *, ttl: int | None = None, mode: str = "widget",
                 stream: Any = None, clock: Callable[[], float] = time.time,
                 source: CountsSource | None = None) -> None:
        arguments.check_group(group)
        self.group = group
        self.ttl = ttl
        self.mode = mode
        self.clock = clock
        self.source: CountsSource = source or api.SESSION.live_counts
        self.renderer: Renderer | None = None  # set by the renderer drawing it
        self.adapter: Any
        if mode == "widget":
            from .widget import WidgetView

            self.adapter = WidgetView(group, on_cancel=self.cancel, on_retry=self.retry,
                                      on_timeline=self.timeline_svg, on_debug=self.debug)
        else:
            from .text import TextView

            self.adapter = TextView(stream)
        self.min_interval = MIN_INTERVAL
        self.meter: Meter | None = None
        self.failures: tuple[Failure, ...] = ()
        self.tasks: tuple = ()  # running tasks' reports: (id, call, done, total, note)
        self.output: Any = None  # the group's live output (live_output): forward.Lines
        self.draws = 0  # refreshes that changed what is shown
        self.busy = False  # this process had tasks of the group queued or running
        self._lock = threading.RLock()
        self._key: tuple | None = None
        self._drawn_at = 0.0
        self._failures_for: tuple | None = None
        self._failures_at = 0.0
        self._handle: Any = None  # the output showing the widget (display_id), once shown
        self._static_for: tuple | None = None  # the state its static rendering shows
        # A view shows the run it was made for (:mod:`nbgroups.display`): the label
        # generation it follows, whether the cell that made it ended, and whether
        # it stopped following the group (``frozen``).
        self.gen: int | None = None
        self.cell_ended = False
        self.frozen = False
        self._following = False  # its own button re-ran tasks: follow them
        self.on_own_rerun: Callable[[], None] | None = None  # set by the display: no
        # second view for a re-run this view's buttons made

    @property
    def widget(self) -> Any:
        """The ipywidgets tree shown (None in text mode)."""
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
            if self.meter is not None and self.meter.deleted:
                return False
            gen = _generation(self.group, self.ttl)
            if gen is None:  # no runner yet: nothing to draw
                return False
            if self.gen is None:
                self.gen = gen
            elif gen != self.gen:  # the label was deleted: what was shown stays, marked
                return self._freeze_deleted()
            if self.frozen:
                return False
            live = self.source(self.group, self.ttl)
            if live is None:  # no runner yet: nothing to draw
                return False
            counts, busy = live
            m = meter(counts, self.clock())
            if self.cell_ended and not self._following and self.meter is not None \
                    and self.meter.settled and m.key() != self._key:
                self.frozen = True  # another cell ran the group again: keep this run's end
                return False
            self.busy = busy
            if m.settled and not busy:
                self._following = False
            failures = self._failures_if_changed(m, now, force)
            # each running task's own report (nbgroups.report), under the bar
            tasks = tuple(api.SESSION.task_progress(self.group)) \
                if m.running and self.mode == "widget" else ()
            # what its tasks wrote lately (the live_output setting): read only when on
            output = api.SESSION.live_output(self.group) \
                if api.settings().live_output else self.output
            if m.key() == self._key and failures is None and tasks == self.tasks \
                    and output == self.output:
                return False
            if not force and not m.settled and self.mode == "text" and \
                    now - self._drawn_at < self.adapter.min_interval:
                return False
            self._key = m.key()
            self.meter = m
            self._drawn_at = now
            self.draws += 1
            self.adapter.update(m, failures)
            if tasks != self.tasks and hasattr(self.adapter, "show_tasks"):
                self.tasks = tasks
                self.adapter.show_tasks(tasks)
            if output != self.output:
                self.adapter.show_output(output, self.output)
                self.output = output
            if self._handle is not None and m.settled and self._static_for != self._static_key():
                self._handle.update(self._bundle(), raw=True)  # the output's final state
            return True

    def _freeze_deleted(self) -> bool:
        """Stop following a group whose label was deleted; say so beside the last state."""
        self.frozen = True
        last = self.meter or meter(GroupCounts(self.group), self.clock())
        m = self.meter = dataclasses.replace(last, deleted=True)
        self._key = m.key()
        self.draws += 1
        self.adapter.update(m, None)
        if self._handle is not None:
            self._handle.update(self._bundle(), raw=True)
        return True

    def _failures_if_changed(self, m: Meter, now: float, force: bool
                             ) -> tuple[Failure, ...] | None:
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

    def _own_rerun(self) -> None:
        """This view's button re-runs or cancels: it follows that, and no second view
        of the group is shown for it."""
        self._following = True
        self.frozen = bool(self.meter and self.meter.deleted)
        if self.on_own_rerun is not None:
            self.on_own_rerun()

    def cancel(self) -> int:
        """Cancel the group's tasks not yet started (the Cancel button)."""
        self._own_rerun()
        n = api.cancel_group(self.group, cached=self._cached)
        self.refresh(force=True)
        return n

    def retry(self) -> int:
        """Re-submit the group's failed tasks (the Retry-failed button)."""
        self._own_rerun()
        n = api.retry_group(self.group, cached=self._cached)
        self.busy = self.busy or n > 0
        self.refresh(force=True)
        if self.renderer is not None:
            self.renderer.poke()
        return n

    def timeline_svg(self) -> str:
        """The group's timeline (:meth:`nbgroups.api.TaskList.timeline`) as SVG text
        (the widget's Timeline toggle)."""
        tasks = api.fetch_group(self.group, cached=self._cached)
        from ..timeline import Timeline

        return Timeline(tasks or ()).svg

    def debug(self, task_id: str) -> Any:
        """Run a failed call of the group again here (a failure's Debug button):
        :func:`nbgroups.debug`; what it raises is raised."""
        return api.debug(task_id, cached=self._cached)

    def close(self) -> None:
        """Stop drawing this view and close its widget."""
        if self.renderer is not None:
            self.renderer.remove(self)
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
        data = dict(self.widget._repr_mimebundle_() or {})
        self._static_for = self._static_key()
        if self.meter is not None:
            data["text/plain"] = format_text(self.meter, self.failures)
            data["text/html"] = format_html(self.meter, self.failures)
        return data

    def _ipython_display_(self) -> None:
        self.show()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(format_line(self.meter) if self.meter else f"<progress of {self.group!r}>")

    def __repr__(self) -> str:
        return f"<ProgressView {self.group!r} {self.mode}: " + \
            (format_line(self.meter) if self.meter else "not drawn") + ">"
