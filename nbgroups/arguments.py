"""Arguments: every check of what a user passed, with the message naming the
argument and what it accepts (DESIGN: bad input raises at the call, before
anything is stored), and submission options resolved against the defaults.
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any

from .config import CHECK, Settings, did_you_mean
from .errors import ArgumentTypeError, ConfigurationError
from .jobs import Options

OPTION_NAMES = frozenset(
    {"group", "cached", "timeout", "retries", "hook", "sync", "save", "task_name", "reuse"}
)


def check_group(group: Any, name: str = "group") -> None:
    """A group label (or a ``task_name``): a non-empty str without NUL, encodable
    as UTF-8 (the store's keys are; a lone surrogate, what ``os.fsdecode`` makes
    of a non-UTF-8 file name, would make every write of the kernel fail)."""
    if not isinstance(group, str):
        raise ArgumentTypeError(
            f"{name} must be a non-empty str, got {type(group).__name__} {group!r}")
    if not group or "\x00" in group:
        raise ConfigurationError(
            f"{name} must be a non-empty str without NUL characters, got {group!r}")
    if not group.isascii():
        try:
            group.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigurationError(
                f"{name} must be text that UTF-8 can encode, got {group!r}: "
                f"{exc.object[exc.start:exc.end]!r} at position {exc.start} is a lone "
                "surrogate (a file name decoded with os.fsdecode? use "
                "os.fsencode(name).decode('utf-8', 'replace'))") from None


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
        raise ArgumentTypeError(f"unknown option(s) {unknown}{did_you_mean(unknown, OPTION_NAMES)}"
                                f"; accepted: {sorted(OPTION_NAMES)}")
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
    if isinstance(hook, str):
        check_hook_path(hook)
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


def check_hook_path(path: str) -> None:
    """A hook named by its dotted path runs in this process: the path must name a
    callable here, now (else the call is refused, as a bad option is; it used to
    be accepted and log a traceback over the prompt when the task ended)."""
    from .worker import resolve

    try:
        hook = resolve(path)
    except Exception as exc:
        raise ConfigurationError(
            f"hook {path!r} cannot be resolved in this kernel ({type(exc).__name__}: {exc}); "
            "pass the function itself, or a dotted path like 'mypackage.module.on_done'"
        ) from None
    if not callable(hook):
        raise ArgumentTypeError(f"hook {path!r} names {type(hook).__name__} {hook!r}, "
                                "not a callable")


def split_kwargs(kwargs: dict, func: Any = None) -> tuple[dict, dict]:
    """``async_task``'s keyword arguments: ``(options, the call's own kwargs)``;
    ``q_options=`` (django-q) holds the options when the call needs their names.

    With ``func``, the call's own keywords are checked against its signature
    (:func:`check_keywords`): a misspelt option fails here, not in the worker.
    """
    if "q_options" in kwargs:
        kwargs = dict(kwargs)
        q = kwargs.pop("q_options")
        if not isinstance(q, dict):
            raise ArgumentTypeError(f"q_options must be a dict of options, got {q!r}")
        if kwargs and func is not None:
            check_keywords(func, kwargs)
        return q, kwargs
    if not kwargs:
        return kwargs, kwargs
    opts: dict = {}
    rest: dict = {}
    for k, v in kwargs.items():
        (opts if k in OPTION_NAMES else rest)[k] = v
    if rest and func is not None:
        check_keywords(func, rest)
    return opts, rest


# (callable or dotted path, its keyword names) -> checked and accepted. A loop of
# ten thousand submissions with the same keywords reads the signature once.
# Bounded: it keeps the callables it holds alive.
_accepted_keywords: dict[tuple, bool] = {}
_ACCEPTED_MAX = 1024


def check_keywords(func: Any, kwargs: dict) -> None:
    """Refuse keywords that ``func`` cannot take, at the call (``TypeError``).

    Only where ``func``'s signature can be read (a dotted path is imported
    here, as the worker would) and it has no ``**kwargs``; the message names
    the keyword and the nearest option (``did you mean group=?``), since a
    misspelt option would otherwise go to ``func``.
    """
    try:
        key = (func, *kwargs)
        if key in _accepted_keywords:
            return
    except TypeError:  # an unhashable callable: checked every time
        key = None
    target = _signature_target(func)
    params = _keyword_parameters(target) if target is not None else None
    if params is not None:
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            raise ArgumentTypeError(_unknown_keyword_message(func, unknown[0], params))
    if key is not None:
        if len(_accepted_keywords) >= _ACCEPTED_MAX:
            _accepted_keywords.clear()
        _accepted_keywords[key] = True


def _signature_target(func: Any) -> Any:
    """The callable whose signature counts: ``func``, or what a dotted path names
    if this process can import it (None if it cannot: the worker may)."""
    if not isinstance(func, str):
        return func
    from .worker import resolve

    try:
        return resolve(func)
    except Exception:  # not importable here (the worker's sys.path may differ)
        return None


def _keyword_parameters(func: Any) -> frozenset[str] | None:
    """The keyword names ``func`` accepts; None if any (``**kwargs``) or unreadable."""
    try:
        # Not through __wrapped__: a decorator's wrapper may take keywords of its own
        # (functools.wraps copies the inner signature); refusing those would be wrong.
        sig = inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):  # builtins without a text signature, odd callables
        return None
    names = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
    return frozenset(names)


def _unknown_keyword_message(func: Any, name: str, params: frozenset[str]) -> str:
    shown = func if isinstance(func, str) else (
        getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func))
    # the nearest of the options and the parameters ('scales' is scale=, not save=)
    nearest = difflib.get_close_matches(name, sorted(OPTION_NAMES | params), n=1, cutoff=0.6)
    if nearest and nearest[0] in OPTION_NAMES:
        hint = f"did you mean the option {nearest[0]}=?"
    elif nearest:
        hint = f"did you mean {nearest[0]}=?"
    else:
        hint = f"options are {', '.join(sorted(OPTION_NAMES))}"
    takes = f"it takes {', '.join(sorted(params))}" if params else "it takes no keywords"
    return (f"{shown}() got an unexpected keyword argument {name!r}: {hint} "
            f"({takes}; nothing was submitted)")
