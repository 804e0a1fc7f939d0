"""The dashboard as a Jupyter server extension, at ``<jupyter-url>/nbgroups``.

Installing nbgroups enables it: the package ships
``etc/jupyter/jupyter_server_config.d/nbgroups.json``, which names the module
``nbgroups.dashboard`` in ``ServerApp.jpserver_extensions``. Its handlers
derive from ``JupyterHandler``, so Jupyter's own login (token, password,
JupyterHub's OAuth) and XSRF check guard every page and action; no extra port.

The store is ``NbgroupsDashboard.store`` in Jupyter's config, else
``NBGROUPS_STORE``, else ``<root_dir>/.nbgroups`` (where a notebook in the
server's root directory keeps its results). It is opened on the first
request, and only if it exists: the extension never creates a store.
``NbgroupsDashboard.read_only = True`` serves no action. Both are read as
traitlets (``jupyter lab --NbgroupsDashboard.read_only=True``, or
``c.NbgroupsDashboard.read_only = True`` in ``jupyter_server_config.py``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any


def settings_class() -> type:
    """The extension's traitlets settings (a class made on first use: traitlets
    is imported only when Jupyter loads the extension)."""
    from traitlets import Bool, Unicode
    from traitlets.config import Configurable

    class NbgroupsDashboard(Configurable):
        """Settings of the nbgroups dashboard in Jupyter."""

        store = Unicode(None, allow_none=True, config=True,
                        help="The store directory (default: $NBGROUPS_STORE, else "
                             "<root_dir>/.nbgroups).")
        read_only = Bool(False, config=True, help="Serve no action (cancel, retry, delete).")

    return NbgroupsDashboard


def load(serverapp: Any) -> None:
    """Register the dashboard's handlers on a running ``jupyter_server``."""
    from jupyter_server.base.handlers import JupyterHandler
    from jupyter_server.utils import url_path_join

    from .. import api
    from .handlers import Dashboard, routes

    conf = settings_class()(config=serverapp.config)
    store = Path(conf.store or os.environ.get("NBGROUPS_STORE")
                 or Path(serverapp.root_dir) / ".nbgroups").expanduser()
    lock = threading.Lock()
    opened: list[Any] = []

    def runner() -> Any:
        with lock:
            if not opened:
                if not (store / "cache.db").exists():
                    return None
                api.configure(store=str(store), progress=False)
                opened.append(api)
            return api.runner()

    root = url_path_join(serverapp.web_app.settings.get("base_url", "/"), "nbgroups")
    dash = Dashboard(root=root, read_only=conf.read_only, runner=runner, api=api)
    serverapp.web_app.add_handlers(".*$", routes(JupyterHandler, dash))
    mode = ", read-only" if conf.read_only else ""
    serverapp.log.info("nbgroups dashboard at %s (store %s%s)", root, store, mode)
