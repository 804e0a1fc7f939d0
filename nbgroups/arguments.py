"""Arguments: every check of what a user passed, with the message naming the
argument and what it accepts (DESIGN: bad input raises at the call, before
anything is stored), and submission options resolved against the defaults.
"""

from __future__ import annotations

import math
from typing import Any

from .config import CHECK, Settings
from .errors import ArgumentTypeError, ConfigurationError
from .jobs import Options

OPTION_NAMES = frozenset(
    {"group", "cached", "timeout", "retries", "hook", "sync", "save", "task_name", "reuse"}
)


def check_group(group: Any, name: str = "group") -> None:
    """A group label (or a ``task_name``): a non-empty str without NUL."""
    if not isinstance(group, str):
        raise ArgumentTypeError(
            f"{name} must be a non-empty str, got {type(group).__name__} {group!r}")
    if not group or "\x00" in group:
        raise ConfigurationError(
            f"{name} must be a non-empty str without NUL characters, got {group!r}")


_valid_paths: set[str] = set()


def check_func(func: Any) -> None:
    """A callable, or a dotted path like ``'math.modf'`` (resolved in the worker)."""
    if isinstance(func, str):
        if func in _valid_paths:
            return
        if not func or any(not part.isidentifier() for part in func.split(".")):
            raise ConfigurationError(f"func as a string must be a dotted path like 'math.modf', "
                                     f"got {func!r}")
        if len(_valid_paths) < 1024:
            _valid_paths.add(func)
    elif not callable(func):
        raise ArgumentTypeError(
            f"func must be a callable or a dotted path string, got {type(func).__name__} {func!r}"
        )


def wait_seconds(wait: Any) -> float | None:
    """``wait`` in ms -> seconds to wait (None: without limit)."""
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        raise ArgumentTypeError(
            f"wait must be milliseconds (an int >= 0, or -1 to wait without limit), "
            f"got {wait!r}")
    if wait != -1 and not (wait >= 0 and math.isfinite(wait)):
        raise ConfigurationError(f"wait must be >= 0 milliseconds, or -1 to wait without limit, "
                                 f"got {wait!r}")
    return None if wait == -1 else wait / 1000


def check_count(count: Any) -> None:
    """``count=`` of a group read: None or an int >= 1."""
    if count is None:
        return
    if isinstance(count, bool) or not isinstance(count, int):
        raise ArgumentTypeError(f"count must be None or an int >= 1, got {count!r}")
    if count < 1:
        raise ConfigurationError(f"count must be None or an int >= 1, got {count!r}")


def check_bool(name: str, value: Any) -> None:
    """A flag: exactly True or False (1 and "yes" are refused)."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be True or False, got {value!r}")


def build_options(raw: dict, s: Settings, defaults: dict, default_group: str | None
                  ) -> tuple[Options, dict]:
    """Submission options from the call (``raw``) over ``defaults`` (``%%group``,
    ``default_group``) and the settings: ``(Options, {sync, save, reuse})``."""
    merged = {**defaults, **raw}
    unknown = sorted(set(merged) - OPTION_NAMES)
    if unknown:
        raise ArgumentTypeError(f"unknown option(s) {unknown}; accepted: {sorted(OPTION_NAMES)}")
    group = merged.get("group", default_group)
    if group is not None:
        check_group(group)
    cached = merged.get("cached", s.cached)
    CHECK.cached("cached", cached)
    timeout = merged.get("timeout", s.timeout)
    CHECK.timeout("timeout", timeout)
    retries = merged.get("retries", s.retries)
    CHECK.non_negative_int("retries", retries)
    hook = merged.get("hook")
    if hook is not None and not (callable(hook) or isinstance(hook, str)):
        raise ArgumentTypeError(f"hook must be a callable or a dotted path, got {hook!r}")
    flags = {}
    for flag, default in (("sync", False), ("save", True), ("reuse", s.reuse)):
        value = merged.get(flag, default)
        check_bool(flag, value)
        flags[flag] = value
    task_name = merged.get("task_name")
    if task_name is not None:
        check_group(task_name, "task_name")
    ttl = None if cached is False else (s.cache_ttl if cached is True else cached)
    opts = Options(group=group, ttl=ttl, timeout=timeout, retries=retries, hook=hook,
                   save=flags["save"], task_name=task_name)
    return opts, flags


def split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """``async_task``'s keyword arguments: ``(options, the call's own kwargs)``;
    ``q_options=`` (django-q) holds the options when the call needs their names."""
    if "q_options" in kwargs:
        kwargs = dict(kwargs)
        q = kwargs.pop("q_options")
        if not isinstance(q, dict):
            raise ArgumentTypeError(f"q_options must be a dict of options, got {q!r}")
        return q, kwargs
    if not kwargs:
        return kwargs, kwargs
    opts: dict = {}
    rest: dict = {}
    for k, v in kwargs.items():
        (opts if k in OPTION_NAMES else rest)[k] = v
    return opts, rest
