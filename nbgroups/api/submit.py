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
    """Submit one call of ``func``; returns the task id at once.

    Option keywords are taken out of ``kwargs``; every other keyword goes to
    ``func``. Pass ``q_options={...}`` (as in django-q) when ``func`` itself
    takes a keyword named like an option: then every plain keyword goes to
    ``func``.

    Args:
        func: a callable (functions, lambdas and closures defined in the
            notebook work: they travel by value) or a dotted path such as
            ``'math.modf'``, imported in the worker.
        *args: positional arguments of the call.
        **kwargs: keyword arguments of the call, and the options ``group``,
            ``cached``, ``timeout``, ``retries``, ``hook``, ``sync``, ``save``,
            ``task_name``, ``reuse`` (see the user guide's table).

    Returns:
        The task id: 32 lowercase hex digits.

    Raises:
        ArgumentTypeError: ``func`` is neither callable nor a string, an option
            has the wrong type, or a keyword is neither an option nor accepted by
            ``func``'s signature (a misspelt option: the message names the
            nearest one).
        ConfigurationError: a malformed dotted path or an option out of range.
        SerializationError: ``func`` cannot be pickled.

    Example:
        >>> from nbgroups import async_task, result
        >>> tid = async_task('math.modf', 2.5, group='doc-task')
        >>> len(tid)
        32
        >>> result(tid, wait=-1)
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

    A tuple item is unpacked into positional arguments; anything else is one
    argument. Items go to the workers in batches: much faster than one task
    per item.

    Args:
        func: a callable or a dotted path, as for :func:`async_task`.
        args_iter: any iterable of items (generators included; no ``len()``
            needed). Not a string.
        **options: the submission options of :func:`async_task`.

    Returns:
        The task id. Its result is the list of the results **in input order**;
        the task succeeded only if every item did.

    Raises:
        ArgumentTypeError: ``args_iter`` is not an iterable, or ``func`` or an
            option has the wrong type.
        ConfigurationError: an option out of range.

    Example:
        >>> from nbgroups import async_iter, result
        >>> tid = async_iter(pow, [(2, 3), (3, 2), (10, 0)])
        >>> result(tid, wait=-1)
        [8, 9, 1]
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
    """Submit one task per point of the Cartesian product of the keyword lists.

    Each task calls ``func`` with one value of every axis as keyword arguments;
    the tasks are in the order of the product (the last axis varies fastest).
    Option keywords (``reuse``, ``timeout``, ...) are options of every task, not
    axes. With ``reuse=True`` a point already done successfully in the group is
    not run again, so a sweep cell can be re-run after extending a list.

    Args:
        func: a callable or a dotted path, as for :func:`async_task`.
        group: the group of the tasks.
        **grid: axis name -> a list (or any iterable but a string) of values;
            and submission options.

    Returns:
        ``group``.

    Raises:
        ArgumentTypeError: an axis that is not a list of values, a group that
            is not a string.
        ConfigurationError: no axis at all, an empty group name, an option out
            of range.

    Example:
        >>> from nbgroups import sweep, result_group
        >>> sweep(pow, 'doc-sweep', base=[2, 3], exp=[1, 2])
        'doc-sweep'
        >>> result_group('doc-sweep', wait=-1)
        [2, 4, 3, 9]
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
