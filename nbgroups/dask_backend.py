"""Where ``nbgroups.api`` finds the Dask backend's configuration check.

The backend itself is :mod:`nbgroups.executors.dask`; this module only keeps
``from .dask_backend import prepare`` working until the api imports it from
there (then delete this file and its RANK entry).
"""

from __future__ import annotations

from .executors.dask import DaskExecutor, prepare, require_distributed

__all__ = ["DaskExecutor", "prepare", "require_distributed"]
