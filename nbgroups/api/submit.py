"""Submitting: ``async_task``, ``async_iter``, ``sweep``.

Each validates its arguments at the call (options through the session's memo:
a loop of ten thousand calls validates once), hands the calls to the runner
(or, with ``reuse=True``, to the session's :class:`~nbgroups.reuse.Reuser`),
then tells the session's submit listeners. No I/O on this path.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from ..arguments import OPTION_NAMES, check_func, check_group, check_keywords, split_kwargs
from ..errors import ArgumentTypeError, ConfigurationError
from .session import SESSION

_S = SESSION  # one global lookup on the hot path, as before the split


def async_task(func: Callable | str, *args: Any, **kwargs: Any) -> str:
    """Submit one call of ``func``; returns the task id (32 hex digits).

    ``func`` is a callable (lambdas and notebook functions work) or a dotted
    path (``'math.modf'``) resolved in the worker. The keywords ``group``,
    ``cached``, ``timeout``, ``retries``, ``hook``, ``sync``, ``save``,
    ``task_name``, ``reuse`` are options; the others go to ``func``. Pass
    ``q_options={...}`` when ``func`` itself takes one of those keywords.

    >>> tid = async_task('math.modf', 2.5, group='doc', sync=True)
    >>> result(tid)
    (0.5, 2.0)
    """
    check_func(func)
    raw, fkwargs = split_kwargs(kwargs, func)
    opts, flags = _S.options(raw)
    if flags["reuse"]:
        ids = _S.reuser().submit(_S.runner(), func, [(args, fkwargs)], opts,
                                 inline=flags["sync"])
    else:
        ids = _S.runner().submit(func, [(args, fkwargs)], opts, inline=flags["sync"],
                                 raise_errors=flags["sync"])
    _S.submitted(opts.group, opts.ttl)
    return ids[0]


def async_iter(func: Callable | str, args_iter: Iterable, **options: Any) -> str:
    """Submit ``func`` over every item of ``args_iter`` as one task; returns its id.

    Tuples are unpacked into positional arguments. ``result(id)`` is the list
    of results in input order; the task succeeded only if every item did.
    Items go to the workers in batches: much faster than one task per item.

    >>> result(async_iter('math.floor', [1.5, 2.5], sync=True))
    [1, 2]
    """
    check_func(func)
    if not isinstance(args_iter, Iterable) or isinstance(args_iter, str | bytes):
        raise ArgumentTypeError(f"args_iter must be an iterable of arguments, got {args_iter!r}")
    opts, flags = _S.options(options)
    calls: list[tuple[Any, dict | None]] = [(list(args_iter), None)]
    if flags["reuse"]:  # the whole iterable is one call: the same items reuse the task
        ids = _S.reuser().submit(_S.runner(), func, calls, opts,
                                 inline=flags["sync"], iterable=True)
    else:
        ids = _S.runner().submit(func, calls, opts, iterable=True,
                                 inline=flags["sync"], raise_errors=flags["sync"])
    _S.submitted(opts.group, opts.ttl)
    return ids[0]


def sweep(func: Callable | str, group: str, **grid: Any) -> str:
    """One task per point of the Cartesian product of the keyword lists; returns ``group``.

    Option keywords (``reuse``, ``timeout``, ...) are options, not grid axes.
    With ``reuse=True`` a point already done successfully in the group is not
    run again, so a sweep cell can be re-run after extending a list.

    >>> g = sweep(pow, 'doc-sweep', base=[2, 3], exp=[2], sync=True)
    >>> result_group(g)
    [4, 9]
    """
    check_func(func)
    check_group(group)
    raw = {k: grid.pop(k) for k in list(grid) if k in OPTION_NAMES}
    raw["group"] = group
    check_keywords(func, grid)  # an axis func cannot take: a misspelt option, most likely
    axes = {}
    for name, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise ArgumentTypeError(f"sweep axis {name!r} must be a list of values, got {values!r}")
        axes[name] = list(values)
    if not axes:
        raise ConfigurationError("sweep() needs at least one keyword list, e.g. x=[1, 2, 3]")
    opts, flags = _S.options(raw)
    calls: list[tuple[Any, dict | None]] = [
        ((), dict(zip(axes, point, strict=True))) for point in itertools.product(*axes.values())]
    if flags["reuse"]:
        _S.reuser().submit(_S.runner(), func, calls, opts, inline=flags["sync"])
    else:
        _S.runner().submit(func, calls, opts, inline=flags["sync"], raise_errors=flags["sync"])
    _S.submitted(opts.group, opts.ttl)
    return group
