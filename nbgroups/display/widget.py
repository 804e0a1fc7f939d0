"""The ipywidgets adapter: lays out a :class:`~.formatting.Meter` and a failure list.

Thin on purpose: every number and word comes from :mod:`.formatting`. Each update
sets only the traits that changed, grouped per widget with ``hold_sync()``,
so one refresh is at most a handful of comm messages whatever the group size.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import ipywidgets as w
from ipywidgets.widgets.widget_int import ProgressStyle  # not exported by ipywidgets 8
from ipywidgets.widgets.widget_string import HTMLStyle

from .formatting import Failure, Meter

MAX_FAILURES_SHOWN = 20


class WidgetView:
    """The widget tree of one group's progress view.

    One line (the bar titled with the group, the status, Cancel), and under it,
    from the first failure on, the failure section (its title, Retry failed, the
    tracebacks). Made in the cell that submits, where every widget costs
    ~0.25 ms to make (its layout and style are models too): the line is four
    widgets, and the failure section is only made when needed. ``on_cancel``
    and ``on_retry`` are called (with no argument) when the buttons are clicked.
    """

    def __init__(self, group: str, on_cancel: Callable[[], object],
                 on_retry: Callable[[], object]) -> None:
        look = _look()
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="",
                                 description=f"<b>{html.escape(group)}</b>",
                                 description_allow_html=True, style=look["bar_style"],
                                 layout=look["bar"])
        self.counts = w.HTML("", style=look["html_style"], layout=look["plain"])
        self.cancel_button = w.Button(description="Cancel", icon="stop",
                                      tooltip="Cancel the group's tasks not yet started",
                                      style=look["button_style"], layout=look["button"])
        self.cancel_button.on_click(lambda _b: on_cancel())
        self._on_retry = on_retry
        self.retry_button: w.Button | None = None  # these four: at the first failure
        self.failures_title: w.HTML | None = None
        self.failure_list: w.Accordion | None = None
        self.failure_box: w.VBox | None = None
        # the failure section, a child of full width, wraps onto a line of its own
        self.box = w.HBox([self.bar, self.counts, self.cancel_button], layout=look["line"])
        self.box.add_class("nbgroups-progress")
        self.failures: tuple[Failure, ...] = ()

    def update(self, m: Meter, failures: Sequence[Failure] | None) -> None:
        """Show ``m``; ``failures`` (None: unchanged) is the failure list."""
        bar = self.bar
        with bar.hold_sync():
            if bar.max != max(m.max, 1):
                bar.max = max(m.max, 1)
            if bar.value != m.value:
                bar.value = m.value
            if bar.bar_style != m.bar_style:
                bar.bar_style = m.bar_style
        times = f"elapsed {m.elapsed_text}" + ("" if m.settled else f" · ETA {m.eta_text}")
        if m.deleted:
            times += " · <i>group deleted</i>"
        _set(self.counts, f"<b>{m.percent}%</b> &nbsp; {_counts_html(m)} &nbsp; "
                          f"<span style='opacity:.75'>{times}</span>")
        cancel_disabled = m.running + m.queued == 0 or m.deleted
        if self.cancel_button.disabled != cancel_disabled:
            self.cancel_button.disabled = cancel_disabled
        if failures is not None and (m.failed or self.failure_box is not None):
            self._show_failures(m.failed, tuple(failures))
        retry_disabled = m.failed == 0 or m.deleted
        if self.retry_button is not None and self.retry_button.disabled != retry_disabled:
            self.retry_button.disabled = retry_disabled

    def _show_failures(self, failed: int, failures: tuple[Failure, ...]) -> None:
        if self.failure_box is None:
            self.failures_title = w.HTML("")
            self.retry_button = w.Button(description="Retry failed", icon="redo",
                                         tooltip="Re-submit the group's failed tasks",
                                         layout=w.Layout(width="auto"))
            self.retry_button.on_click(lambda _b: self._on_retry())
            self.failure_list = w.Accordion(children=())
            self.failure_box = w.VBox([
                w.HBox([self.failures_title, self.retry_button],
                       layout=w.Layout(align_items="center", grid_gap="1em")),
                self.failure_list,
            ], layout=w.Layout(width="100%"))
            self.box.children = (*self.box.children, self.failure_box)
        if failures != self.failures:
            self.failures = failures
            shown = failures[:MAX_FAILURES_SHOWN]
            # A new Accordion per change, swapped into the box, never an edit of the
            # shown one: setting ``children`` and ``titles`` of a live Accordion (with a
            # failure inserted mid-list, as the list is in submission order) leaves the
            # browser showing some tasks twice and missing others.
            children = [w.HTML(f"<pre style='font-size:85%;white-space:pre-wrap'>"
                               f"{html.escape(f.traceback or f.error)}</pre>") for f in shown]
            new = w.Accordion(children=children,
                              titles=tuple(f"{f.name}: {f.error}" for f in shown))
            old = self.failure_list
            self.failure_list = new
            self.failure_box.children = (self.failure_box.children[0], new)
            _close_accordion(old)
        more = failed - min(len(failures), MAX_FAILURES_SHOWN)
        title = f"<b>{failed} failed</b>" + (f" (first {MAX_FAILURES_SHOWN} shown)"
                                             if more > 0 else "")
        _set(self.failures_title, title if failed else "")
        display = None if failed else "none"
        if self.failure_box.layout.display != display:
            self.failure_box.layout.display = display

    def close(self) -> None:
        if self.failure_list is not None:
            _close_accordion(self.failure_list)
        self.box.close()


_LOOK: dict[str, w.Widget] = {}


def _look() -> dict[str, w.Widget]:
    """Layouts and styles every view shares (ipywidgets lets widgets share them):
    made once per kernel, not once per view, as each is a model of its own."""
    if not _LOOK:
        _LOOK.update(
            bar=w.Layout(flex="1 1 16em", min_width="12em"),
            bar_style=ProgressStyle(description_width="initial"),
            plain=w.Layout(),
            html_style=HTMLStyle(),
            button=w.Layout(width="auto"),
            button_style=w.ButtonStyle(),
            line=w.Layout(align_items="center", flex_flow="row wrap", grid_gap="0.2em 1em"),
        )
    return _LOOK


def _close_accordion(acc: w.Accordion) -> None:
    for child in acc.children:
        child.close()
    acc.close()


def _set(widget: w.HTML, value: str) -> None:
    if widget.value != value:
        widget.value = value


def _counts_html(m: Meter) -> str:
    def item(label: str, n: int, color: str | None = None) -> str:
        style = f" style='color:{color}'" if color and n else ""
        return f"<span{style}>{label} <b>{n}</b></span>"

    parts = [item("done", m.done, "var(--jp-success-color1, green)"),
             item("failed", m.failed, "var(--jp-error-color1, red)"),
             item("running", m.running), item("queued", m.queued)]
    if m.cancelled:
        parts.append(item("cancelled", m.cancelled, "var(--jp-warn-color1, orange)"))
    if m.reused:
        parts.append(item("reused", m.reused))
    return " · ".join(parts)
