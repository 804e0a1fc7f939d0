"""Settings (module ``config``, so that it never shadows ``nbgroups.settings()``): one frozen
object, validated when built, environment read in one place.

``configure(**changes)`` in the api builds a new :class:`Settings` from the
current one; :func:`from_environment` reads ``NBGROUPS_<NAME>`` variables once,
when the first settings object of the process is made.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ArgumentTypeError, ConfigurationError

BACKENDS = ("loky", "thread", "sync", "dask")
PROGRESS = ("auto", "widget", "text", False)
DEFAULT_CACHE_TTL = 3600
#: Default ``large_value``: an argument buffer this large is stored once by digest.
DEFAULT_LARGE_VALUE = 1 << 20
#: The smallest ``large_value`` accepted: below it a file per value costs more than it saves.
MIN_LARGE_VALUE = 1 << 10


def did_you_mean(unknown: list[str], known: Iterable[str]) -> str:
    """``' (did you mean timeout=?)'`` for the first unknown name close to a known
    one (difflib, as for a callable's keywords); ``''`` when none is."""
    for name in unknown:
        nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        if nearest:
            return f" (did you mean {nearest[0]}=?)"
    return ""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Settings of this kernel. Build with :func:`nbgroups.configure`.

    store:     directory of the durable store (``./.nbgroups``).
    workers:   worker processes (or threads); default: the number of CPUs.
    backend:   ``'loky'`` (processes), ``'thread'``, ``'sync'`` (inline), ``'dask'``.
    progress:  ``'auto'`` (widget in a notebook, text elsewhere), ``'widget'``,
               ``'text'`` or ``False``.
    timeout:   default per-task timeout in seconds (``None``: no limit).
    retries:   default number of re-runs of a failed task.
    cached:    default for the ``cached`` option (``False``, ``True`` or a TTL).
    cache_ttl: seconds a ``cached=True`` result lives.
    reuse:     default for the ``reuse`` option.
    address:   Dask scheduler address (backend ``'dask'``).
    client:    a ``distributed.Client`` to use instead of ``address``.
    capture:   capture each task's stdout, stderr, logging and warnings
               (``Task.stdout``, ``Task.stderr``; see :mod:`nbgroups.capture`).
    log_level: the lowest logging level captured (``'INFO'``, a level name or number).
    live_output: also forward running tasks' output, as it is written, to their
               group's progress view (rate-limited; see :mod:`nbgroups.forward`).
    large_value: bytes: an argument holding a buffer this large (an array, a
               DataFrame's column...) is stored once in the store by content
               digest and memory-mapped, read-only, by the workers, instead of
               being pickled with every call (:mod:`nbgroups.values`); ``None``
               turns that off. Default 1 MiB.
    """

    store: str = ".nbgroups"
    workers: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    backend: str = "loky"
    progress: Any = "auto"
    timeout: float | None = None
    retries: int = 0
    cached: bool | int = False
    cache_ttl: int = DEFAULT_CACHE_TTL
    reuse: bool = False
    address: str | None = None
    client: Any = None
    capture: bool = True
    log_level: str | int = "INFO"
    live_output: bool = False
    large_value: int | None = DEFAULT_LARGE_VALUE

    def __post_init__(self) -> None:
        check = _Checker()
        check.text("store", self.store)
        check.positive_int("workers", self.workers)
        check.choice("backend", self.backend, BACKENDS)
        check.choice("progress", self.progress, PROGRESS)
        check.timeout("timeout", self.timeout)
        check.non_negative_int("retries", self.retries)
        check.cached("cached", self.cached)
        check.positive_int("cache_ttl", self.cache_ttl)
        check.boolean("reuse", self.reuse)
        if self.address is not None:
            check.text("address", self.address)
        check.boolean("capture", self.capture)
        check.log_level("log_level", self.log_level)
        check.boolean("live_output", self.live_output)
        if self.large_value is not None:
            check.byte_count("large_value", self.large_value, MIN_LARGE_VALUE)

    def worker_options(self) -> tuple[bool, int, bool]:
        """What a batch tells its worker: ``(capture, log level number, live output)``."""
        return (self.capture, level_number(self.log_level), self.live_output)

    def replace(self, **changes: Any) -> Settings:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            names = [f.name for f in dataclasses.fields(self)]
            raise ArgumentTypeError(
                f"configure() got unknown setting(s) {unknown}{did_you_mean(unknown, names)}"
                f"; accepted: {', '.join(names)}")
        return dataclasses.replace(self, **changes)


class _Checker:
    """Argument checks shared by settings and submission options."""

    def text(self, name: str, value: Any) -> None:
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise ArgumentTypeError(f"{name} must be a non-empty string, got {value!r}")

    def positive_int(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(f"{name} must be an int >= 1, got {value!r}")
        if value < 1:
            raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")

    def non_negative_int(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(f"{name} must be an int >= 0, got {value!r}")
        if value < 0:
            raise ConfigurationError(f"{name} must be an int >= 0, got {value!r}")

    def byte_count(self, name: str, value: Any, least: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentTypeError(
                f"{name} must be a number of bytes (int >= {least}) or None, got {value!r}")
        if value < least:
            raise ConfigurationError(
                f"{name} must be a number of bytes >= {least} or None, got {value!r}")

    def timeout(self, name: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArgumentTypeError(
                f"{name} must be a number of seconds > 0 or None, got {value!r}")
        if not value > 0:
            raise ConfigurationError(
                f"{name} must be a number of seconds > 0 or None, got {value!r}")

    def cached(self, name: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if not isinstance(value, int):
            raise ArgumentTypeError(
                f"{name} must be True, False or a TTL in seconds (int), got {value!r}")
        if value < 1:
            raise ConfigurationError(f"{name} as a TTL must be >= 1 second, got {value!r}")

    def boolean(self, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise ArgumentTypeError(f"{name} must be True or False, got {value!r}")

    def log_level(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ArgumentTypeError(
                f"{name} must be a logging level name ('INFO', 'DEBUG'...) or number, "
                f"got {value!r}")
        if isinstance(value, str) and not isinstance(
                logging.getLevelName(value.upper()), int):
            raise ConfigurationError(
                f"{name} must be a logging level name (DEBUG, INFO, WARNING, ERROR, "
                f"CRITICAL) or number, got {value!r}")
        if isinstance(value, int) and value < 0:
            raise ConfigurationError(f"{name} as a number must be >= 0, got {value!r}")

    def choice(self, name: str, value: Any, choices: tuple) -> None:
        # identity for False: 0 == False, but progress=0 is not progress=False
        if not any(value is c if isinstance(c, bool) else (type(value) is str and value == c)
                   for c in choices):
            raise ConfigurationError(f"{name} must be one of {list(choices)}, got {value!r}")


CHECK = _Checker()


def level_number(level: str | int) -> int:
    """A logging level as its number (``'INFO'`` -> 20)."""
    return level if isinstance(level, int) else logging.getLevelName(level.upper())

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(text)


_ENV_PARSERS: dict[str, Callable[[str], Any]] = {
    "store": str,
    "workers": int,
    "backend": str,
    "progress": lambda s: False if s.lower() in _FALSE else s,
    "timeout": lambda s: None if s.lower() in ("", "none") else float(s),
    "retries": int,
    # true/false (1/0, yes/no, on/off), or a TTL in seconds (an int >= 2)
    "cached": lambda s: _flag(s) if s.strip().lower() in _TRUE + _FALSE else int(s),
    "cache_ttl": int,
    "reuse": lambda s: _flag(s),
    "address": str,
    "capture": lambda s: _flag(s),
    "log_level": lambda s: int(s) if s.strip().isdigit() else s.strip(),
    "live_output": lambda s: _flag(s),
    "large_value": lambda s: None if s.strip().lower() in ("", "none") else int(s),
}


def from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Default settings overridden by ``NBGROUPS_<NAME>`` environment variables."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, parse in _ENV_PARSERS.items():
        raw = env.get(f"NBGROUPS_{name.upper()}")
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except ValueError:
            raise ConfigurationError(
                f"environment variable NBGROUPS_{name.upper()}={raw!r} is not a valid {name}"
            ) from None
    try:
        return Settings(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid NBGROUPS_* environment: {exc}") from None
