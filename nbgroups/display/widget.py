"""The ipywidgets adapter: lays out a :class:`~.formatting.Meter` and a failure list.

Thin on purpose: every number and word comes from :mod:`.formatting`. Each update
sets only the traits that changed, grouped per widget with ``hold_sync()``,
so one refresh is at most a handful of comm messages whatever the group size.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import ipywidgets as w

from .formatting import Failure, Meter

MAX_FAILURES_SHOWN = 20


class WidgetView:
    """The widget tree of one group's progress view.

    ``on_cancel`` and ``on_retry`` are called (with no argument) when the
    buttons are clicked.
    """

    def __init__(self, group: str, on_cancel: Callable[[], None],
                 on_retry: Callable[[], None]) -> None:
        self.title = w.HTML(f"<b>{html.escape(group)}</b>",
                            layout=w.Layout(min_width="8em", max_width="24em"))
        self.bar = w.IntProgress(value=0, min=0, max=1, bar_style="",
                                 layout=w.Layout(flex="1 1 auto", min_width="10em"))
        self.percent = w.HTML("0%", layout=w.Layout(min_width="3.5em"))
        self.counts = w.HTML("")
        self.times = w.HTML("")
        self.cancel_button = w.Button(description="Cancel", icon="stop",
                                      tooltip="Cancel the group's tasks not yet started",
                                      layout=w.Layout(width="auto"))
        self.retry_button = w.Button(description="Retry failed", icon="redo",
                                     tooltip="Re-submit the group's failed tasks",
                                     layout=w.Layout(width="auto"), disabled=True)
        self.cancel_button.on_click(lambda _b: on_cancel())
        self.retry_button.on_click(lambda _b: on_retry())
        self.failures_title = w.HTML("")
        self.failure_list = w.Accordion(children=())
        self.failure_box = w.VBox([self.failures_title, self.failure_list],
                                  layout=w.Layout(display="none"))
        self.box = w.VBox([
            w.HBox([self.title, self.bar, self.percent],
                   layout=w.Layout(align_items="center")),
            w.HBox([self.counts, self.times, self.cancel_button, self.retry_button],
                   layout=w.Layout(align_items="center", grid_gap="1em")),
            self.failure_box,
        ])
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
        _set(self.percent, f"{m.percent}%")
        _set(self.counts, _counts_html(m))
        times = f"elapsed {m.elapsed_text}" + ("" if m.settled else f" · ETA {m.eta_text}")
        _set(self.times, f"<span style='opacity:.75'>{times}</span>")
        cancel_disabled = m.running + m.queued == 0
        if self.cancel_button.disabled != cancel_disabled:
            self.cancel_button.disabled = cancel_disabled
        if self.retry_button.disabled != (m.failed == 0):
            self.retry_button.disabled = m.failed == 0
        if failures is not None:
            self._show_failures(m.failed, tuple(failures))

    def _show_failures(self, failed: int, failures: tuple[Failure, ...]) -> None:
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
            self.failure_box.children = (self.failures_title, new)
            _close_accordion(old)
        more = failed - min(len(failures), MAX_FAILURES_SHOWN)
        title = f"<b>{failed} failed</b>" + (f" (first {MAX_FAILURES_SHOWN} shown)"
                                             if more > 0 else "")
        _set(self.failures_title, title if failed else "")
        display = None if failed else "none"
        if self.failure_box.layout.display != display:
            self.failure_box.layout.display = display

    def close(self) -> None:
        _close_accordion(self.failure_list)
        self.box.close()


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
