"""``AsyncTask``: django-q's builder for one task, over the submit and read API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..arguments import OPTION_NAMES, check_func, split_kwargs
from .manage import delete_group
from .read import Task, count_group, fetch, fetch_group, result, result_group
from .session import SESSION
from .submit import async_task


class AsyncTask:
    """A builder for one task: options as attributes, :meth:`run` submits.

    Args:
        func: a callable or a dotted path, as for :func:`async_task`.
        *args: positional arguments of the call.
        **kwargs: keyword arguments of the call, and submission options, which
            become attributes (``group``, ``cached``, ``timeout``, ...).

    Raises:
        ArgumentTypeError: as :func:`async_task`, at construction.
        ConfigurationError: as :func:`async_task`, at construction.

    Before :meth:`run`, ``id`` is ``None``, ``started`` is ``False`` and the
    readers return ``None``.

    Example:
        >>> from nbgroups import AsyncTask
        >>> a = AsyncTask('math.floor', 2.5, group='doc-builder')
        >>> a.timeout = 30
        >>> a.run() == a.id
        True
        >>> a.result(wait=-1)
        2
        >>> a.result_group(wait=-1), a.group_count()
        ([2], 1)
    """

    # option attributes (set from the call, changeable before run())
    group: Any
    cached: Any
    timeout: Any
    retries: Any
    hook: Any
    sync: Any
    save: Any
    task_name: Any
    reuse: Any

    def __init__(self, func: Callable | str, *args: Any, **kwargs: Any) -> None:
        check_func(func)
        raw, fkwargs = split_kwargs(kwargs, func)
        SESSION.options(raw)  # fail now on a bad option
        self.func = func
        self.args = args
        self.kwargs = fkwargs
        self.id: str | None = None
        self.started = False
        self._layer: int | None = None
        for name in OPTION_NAMES:
            setattr(self, name, raw.get(name))

    def _option_values(self) -> dict:
        return {n: getattr(self, n) for n in OPTION_NAMES if getattr(self, n) is not None}

    def run(self) -> str:
        """Submit the task; returns its id."""
        values = self._option_values()
        opts, _ = SESSION.options(values)  # the defaults in force now: configure(), %%group
        self.id = async_task(self.func, *self.args, q_options=values, **self.kwargs)
        self.group = opts.group
        self._layer = opts.ttl
        self.started = True
        return self.id

    @property
    def _cached(self) -> Any:
        layer = self._layer
        return layer if layer is not None else (self.cached or False)

    def result(self, wait: int = 0) -> Any:
        """The task's result (:func:`result`); None before :meth:`run`."""
        return result(self.id, wait=wait, cached=self._cached) if self.id else None

    def fetch(self, wait: int = 0) -> Task | None:
        """The task's record (:func:`fetch`); None before :meth:`run`."""
        return fetch(self.id, wait=wait, cached=self._cached) if self.id else None

    def result_group(self, failures: bool = False, wait: int = 0, count: int | None = None):
        """Results of the task's group (:func:`result_group`)."""
        if not self.group:
            return None
        return result_group(self.group, failures=failures, wait=wait, count=count,
                            cached=self._cached)

    def fetch_group(self, failures: bool = True, wait: int = 0, count: int | None = None):
        """Records of the task's group (:func:`fetch_group`)."""
        if not self.group:
            return None
        return fetch_group(self.group, failures=failures, wait=wait, count=count,
                           cached=self._cached)

    def group_count(self, failures: bool = False) -> int:
        """Successes (or failures) of the task's group (:func:`count_group`)."""
        return count_group(self.group, failures=failures, cached=self._cached) if self.group \
            else 0

    def group_delete(self, tasks: bool = False) -> int:
        """Delete the task's group label, or its tasks (:func:`delete_group`)."""
        return delete_group(self.group, tasks=tasks, cached=self._cached) if self.group else 0
