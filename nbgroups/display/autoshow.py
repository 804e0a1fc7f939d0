"""Auto-show: a group's view appears the first time a cell submits to it
(``%load_ext nbgroups``), through the session's submit listeners."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ..api import Session


class AutoShow:
    """Shows a group's view the first time a cell submits to it.

    ``show(group, ttl)`` displays the view; the set of groups shown is
    cleared before every cell.
    """

    def __init__(self, session: Session, show: Callable[[str, int | None], Any]) -> None:
        self.session = session
        self.show = show
        self.shown: set[tuple[str, int | None]] = set()
        self.enabled = False

    def _pre_run_cell(self, info: Any = None) -> None:
        self.shown.clear()

    def __call__(self, group: str | None, ttl: int | None) -> None:
        if group is None or not self.enabled or self.session.settings().progress is False:
            return
        key = (group, ttl)
        if key in self.shown:
            return
        self.shown.add(key)
        self.show(group, ttl)

    def enable(self, shell: Any) -> None:
        """Show views of the groups cells submit to (``shell``: clear per cell)."""
        self.session.on_submit(self)
        if not self.enabled and shell is not None:
            shell.events.register("pre_run_cell", self._pre_run_cell)
        self.enabled = True
        self.shown.clear()

    def disable(self, shell: Any) -> None:
        """Stop showing views on submission."""
        self.session.off_submit(self)
        if self.enabled and shell is not None:
            with contextlib.suppress(ValueError):
                shell.events.unregister("pre_run_cell", self._pre_run_cell)
        self.enabled = False
