"""A dashboard of every group in the store, outside the notebook.

::

    browser ──token / Jupyter login──▶ handlers (tornado) ──threads──▶ views ──▶ store
       ▲  pages: escaped templates          │ POST + XSRF: cancel · retry · delete
       └──── /api/groups every second ──────┘            (the public api functions)

Two servers, one set of pages: ``nbgroups dashboard`` (:mod:`.server`: its
own port, a fresh token in the printed URL) and the Jupyter server extension
at ``<jupyter-url>/nbgroups`` (:mod:`.extension`: behind Jupyter's login).
:mod:`.handlers` holds the routes and security rules, :mod:`.views` reads the
store into plain values, ``templates/`` and ``static/`` lay them out (a little
vanilla JavaScript polls the JSON endpoints; nothing is fetched from the web).
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Where jupyter_server finds the extension (``nbgroups.json`` enables it)."""
    return [{"module": "nbgroups.dashboard"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Called by jupyter_server at start: add the dashboard's pages."""
    from .extension import load

    load(serverapp)
