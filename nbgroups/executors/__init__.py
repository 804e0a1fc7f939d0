"""Executor backends, by name: where the runner's batches run.

=========  ====================================================================
``loky``   a process pool (the default): :mod:`nbgroups.executors.loky`
``thread`` a thread pool in the kernel: :mod:`nbgroups.executors.thread`
``sync``   inline, in the submitting thread: :mod:`nbgroups.executors.sync`
``dask``   a ``distributed`` cluster: :mod:`nbgroups.executors.dask`
=========  ====================================================================

Every backend implements :class:`~nbgroups.executors.base.Executor`. A backend
module is imported only when its name is first used, so ``import nbgroups``
(and a pool worker) loads neither loky nor distributed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError
from .base import Executor

__all__ = ["BACKENDS", "Executor", "make_executor", "register"]

Factory = Callable[[Any], Executor]  # settings -> executor

#: backend name -> ``(module, class)``, imported on first use
BACKENDS: dict[str, tuple[str, str]] = {
    "loky": ("nbgroups.executors.loky", "LokyExecutor"),
    "thread": ("nbgroups.executors.thread", "ThreadExecutor"),
    "sync": ("nbgroups.executors.sync", "SyncExecutor"),
    "dask": ("nbgroups.executors.dask", "DaskExecutor"),
}
_factories: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make ``factory(settings)`` the executor of backend ``name``."""
    _factories[name] = factory


def make_executor(settings: Any) -> Executor:
    """The executor of the backend ``settings.backend`` names."""
    name = settings.backend
    factory = _factories.get(name)
    if factory is None:
        where = BACKENDS.get(name)
        if where is None:
            raise ConfigurationError(
                f"backend must be one of {sorted({*BACKENDS, *_factories})}, got {name!r}")
        module, cls = where
        factory = _factories[name] = getattr(importlib.import_module(module), cls).from_settings
    return factory(settings)
