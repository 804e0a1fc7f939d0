"""Live progress views of groups: ipywidgets in a notebook, one text line elsewhere.

One module per concept:

- :mod:`.view`: :class:`ProgressView`, one group's view, fed by a callable that
  returns its counts (the session's :meth:`~nbgroups.api.Session.live_counts`);
- :mod:`.renderer`: :class:`Renderer`, which draws the views, rate-limited, from
  the right thread (its docstring has the picture);
- :mod:`.autoshow`: :class:`AutoShow`, a view per group a cell submits to;
- :mod:`.formatting` turns counts into what is shown (pure, doctested);
  :mod:`.widget` and :mod:`.text` only lay it out; :mod:`.table` is
  ``%nbgroups``' table of groups.

Each view's output also carries a static rendering of its state (text/html,
text/plain), replaced when the group settles, for readers without a kernel.
A view shows the run it was made for: the submissions of its cell (and what
its own buttons re-run). Once its cell ended and it showed the group settled,
it keeps that state when another cell runs the group again (that cell gets a
view of its own); when the group's label is deleted, it keeps its last state
and says "group deleted" instead of falling back to zero. In terminal IPython
the text views draw only while a wait blocks (:mod:`.text`), never over the
prompt.

The renderer and the auto-show are the session's display part
(:func:`state`): :func:`nbgroups.api.reset` forgets them with the rest. A
refresh that would show the same thing sends nothing, and a widget refresh is
a handful of comm messages, so the traffic is bounded by the rate, not by the
task count.
"""

from __future__ import annotations

import atexit
from typing import Any

from .. import api, arguments
from .autoshow import AutoShow
from .formatting import Failure, Meter, format_line, meter
from .renderer import Renderer
from .view import ProgressView, choose_mode, is_terminal, load_failures, shell

__all__ = ["AutoShow", "Failure", "Meter", "ProgressView", "Renderer", "choose_mode", "flush",
           "format_line", "hook_shell", "load_failures", "meter", "progress", "reset",
           "state", "unhook_shell", "view_of", "views"]


class Display:
    """The session's display part: its renderer and its auto-show."""

    def __init__(self, session: api.Session) -> None:
        self.renderer = Renderer(session)
        self.auto = AutoShow(session, _auto_show)
        atexit.register(self.renderer.at_exit)  # the final state of every view, at exit

    def reset(self) -> None:
        """Forget every view (called by the session's reset)."""
        self.renderer.reset()
        self.auto.shown.clear()


def state() -> Display:
    """The session's display part (made on first use)."""
    return api.SESSION.part("display", lambda: Display(api.SESSION))


def _auto_show(group: str, ttl: int | None) -> None:
    progress(group, cached=ttl if ttl is not None else False)


def progress(group_id: str, *, display: bool = True, mode: str | None = None,
             cached: bool | int = False, stream: Any = None) -> ProgressView | None:
    """Show the live progress view of ``group_id`` (or, ``display=False``, return it).

    ``mode``: ``'widget'``, ``'text'`` or ``'auto'`` (default: the ``progress``
    setting; ``'auto'`` is a widget inside a Jupyter kernel, a line on stderr
    elsewhere). ``stream`` is the text view's stream (default ``sys.stderr``).
    A returned view displays itself when it is a cell's value.
    """
    arguments.check_group(group_id, "group_id")
    ttl = api.SESSION.layer(cached)
    view = ProgressView(group_id, ttl=ttl, mode=choose_mode(mode), stream=stream)
    api.runner()  # a view of a stored group in a fresh kernel: open the store to read it
    renderer = state().renderer
    renderer.hook_shell(shell())
    key = (group_id, ttl)
    view.on_own_rerun = lambda: state().auto.shown.add(key)  # its own view shows it
    renderer.add(view)
    if view.mode == "text" and is_terminal(shell()):
        from . import text

        text.snapshot()  # asked for now: shown now, on lines of its own
    if display and view.widget is not None:
        view.show()
    return None if display else view


def views(group: str | None = None) -> list[ProgressView]:
    """The live views (of ``group``), oldest first."""
    return [v for v in state().renderer.snapshot() if group is None or v.group == group]


def view_of(group: str) -> ProgressView | None:
    """The newest live view of ``group``, or None."""
    found = views(group)
    return found[-1] if found else None


def flush() -> None:
    """Draw every live view now."""
    state().renderer.flush()


def reset() -> None:
    """Forget every view (tests, and when the runner is replaced)."""
    state().reset()


def hook_shell(ip: Any, auto: bool = True) -> None:
    """Follow ``ip``'s cells (draw at each cell's end); ``auto``: show a view of
    every group a cell submits to (``%load_ext nbgroups``)."""
    s = state()
    s.renderer.hook_shell(ip)
    if auto:
        s.auto.enable(ip)


def unhook_shell(ip: Any) -> None:
    """Stop following ``ip``'s cells and showing views on submission."""
    s = state()
    s.auto.disable(ip)
    s.renderer.unhook_shell(ip)
