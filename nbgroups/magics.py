"""``%load_ext nbgroups``: the ``%nbgroups`` and ``%%group`` magics, automatic progress.

``%nbgroups`` alone shows the table of groups; ``%nbgroups SUBCOMMAND ...``
runs one of :data:`SUBCOMMANDS` (one small function each); ``--cached`` makes
a group sub-command act on the cache layer's group of that name. ``%%group NAME
[--reuse]`` runs its cell with ``NAME`` as the default group of every
submission. A mistake raises IPython's ``UsageError`` with a one-line help.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from . import api, display
from .display.table import GroupTable, group_rows
from .errors import NbgroupsError

USAGE = ("usage: %nbgroups [progress G | delete G [--tasks] | cancel G | retry G | resume G "
         "| workers N | store PATH | backend loky|thread|sync|dask [ADDRESS]] "
         "(--cached: G in the cache layer)")
GROUP_USAGE = "usage: %%group NAME [--reuse]"


def _one(args: list[str], what: str, usage: str, flags: tuple[str, ...] = ()) -> tuple[str, set]:
    """The single positional argument of a sub-command, and the flags given."""
    given = {a for a in args if a.startswith("--")}
    unknown = given - set(flags)
    if unknown:
        raise UsageError(f"unknown option {sorted(unknown)[0]}; {usage}")
    plain = [a for a in args if not a.startswith("--")]
    if len(plain) != 1:
        raise UsageError(f"expected one {what}; {usage}")
    return plain[0], given


def _known_group(args: list[str], usage: str, flags: tuple[str, ...] = ()
                 ) -> tuple[str, set, bool]:
    """The group a sub-command names, its flags, and whether ``--cached`` asks for the
    cache layer (groups of ``cached=True`` tasks live there, not in the task store)."""
    group, given = _one(args, "GROUP", usage, (*flags, "--cached"))
    cached = "--cached" in given
    r = api.runner()
    if not r.store_for(api.SESSION.layer(cached)).known(group):
        hint = "" if cached or not r.store_for(api.SESSION.layer(True)).known(group) else \
            f" (there is a cached group {group!r}: add --cached)"
        raise UsageError(f"no {'cached ' if cached else ''}group named {group!r} in the store"
                         f"{hint} (`%nbgroups` lists them); {usage}")
    return group, given, cached


def _show_after(group: str, n: int, cached: bool = False) -> None:
    """Show the group's view after a re-submission, unless this cell shows it already
    (the api's re-submission shows it, as a submission does)."""
    key = (group, api.SESSION.layer(cached))
    shown = display.state().auto.shown
    if n and api.settings().progress is not False and key not in shown:
        shown.add(key)
        display.progress(group, cached=cached)


# ---------------------------------------------------------------- sub-commands
def table(args: list[str]) -> GroupTable:
    """The table of groups: submitted, done, failed, running, queued, elapsed."""
    if args:
        raise UsageError(f"unknown sub-command {args[0]!r}; {USAGE}")
    r = api.runner()
    return GroupTable(group_rows(r.counts(g) for g in api.list_groups()))


def progress_cmd(args: list[str]) -> None:
    group, _, cached = _known_group(args, "usage: %nbgroups progress GROUP [--cached]")
    display.progress(group, cached=cached)


def delete_cmd(args: list[str]) -> None:
    group, flags, cached = _known_group(
        args, "usage: %nbgroups delete GROUP [--tasks] [--cached]", ("--tasks",))
    tasks = "--tasks" in flags
    n = api.delete_group(group, tasks=tasks, cached=cached)
    if tasks:
        print(f"deleted group {group!r} and its {n} tasks")
    else:
        print(f"deleted group {group!r}; its {n} tasks stay fetchable by id")


def cancel_cmd(args: list[str]) -> None:
    group, _, cached = _known_group(args, "usage: %nbgroups cancel GROUP [--cached]")
    n = api.cancel_group(group, cached=cached)
    print(f"cancelled {n} tasks of {group!r} not yet started")


def retry_cmd(args: list[str]) -> None:
    group, _, cached = _known_group(args, "usage: %nbgroups retry GROUP [--cached]")
    n = api.retry_group(group, cached=cached)
    print(f"re-submitted {n} failed tasks of {group!r}")
    _show_after(group, n, cached)


def resume_cmd(args: list[str]) -> None:
    usage = "usage: %nbgroups resume GROUP"
    if "--cached" in args:
        raise UsageError("cached tasks cannot be resumed: the cache layer keeps results, not "
                         f"the calls' arguments; submit them again; {usage}")
    group, _, _ = _known_group(args, usage)
    n = api.resume_group(group)
    print(f"re-submitted {n} unfinished tasks of {group!r}")
    _show_after(group, n)


def workers_cmd(args: list[str]) -> None:
    usage = "usage: %nbgroups workers N (an int >= 1)"
    value, _ = _one(args, "N", usage)
    try:
        n = int(value)
        api.configure(workers=n)
    except (TypeError, ValueError):
        raise UsageError(f"workers must be an int >= 1, got {value!r}; {usage}") from None
    print(f"workers: {n}")


def store_cmd(args: list[str]) -> None:
    usage = "usage: %nbgroups store PATH"
    path, _ = _one(args, "PATH", usage)
    try:
        api.configure(store=path)
    except (TypeError, ValueError, NbgroupsError) as exc:
        raise UsageError(f"{exc}; {usage}") from None
    print(f"store: {getattr(api.runner().store, 'directory', path)}")


def backend_cmd(args: list[str]) -> None:
    usage = "usage: %nbgroups backend loky|thread|sync | %nbgroups backend dask ADDRESS"
    if not args or args[0] not in ("loky", "thread", "sync", "dask"):
        raise UsageError(f"expected a backend name; {usage}")
    name, rest = args[0], args[1:]
    if (name == "dask") != (len(rest) == 1) or len(rest) > 1:
        raise UsageError(f"{'dask needs one ADDRESS' if name == 'dask' else 'no ADDRESS'}"
                         f" expected; {usage}")
    try:
        api.configure(backend=name, address=rest[0] if rest else None)
    except (TypeError, ValueError, NbgroupsError) as exc:
        raise UsageError(f"{exc}; {usage}") from None
    print(f"backend: {name}" + (f" at {rest[0]}" if rest else ""))


SUBCOMMANDS: dict[str, Callable[[list[str]], object]] = {
    "backend": backend_cmd,
    "progress": progress_cmd,
    "delete": delete_cmd,
    "cancel": cancel_cmd,
    "retry": retry_cmd,
    "resume": resume_cmd,
    "workers": workers_cmd,
    "store": store_cmd,
}


def run_line(line: str):
    """Run one ``%nbgroups`` line (also usable without IPython's magic machinery)."""
    try:
        args = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc}; {USAGE}") from None
    if not args:
        return table([])
    if args[0] in ("help", "-h", "--help"):
        print(USAGE)
        return None
    command = SUBCOMMANDS.get(args[0])
    if command is None:
        raise UsageError(f"unknown sub-command {args[0]!r}; {USAGE}")
    return command(args[1:])


def parse_group_line(line: str) -> tuple[str, dict]:
    """``NAME [--reuse]`` -> (name, default options)."""
    try:
        args = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{exc}; {GROUP_USAGE}") from None
    name, flags = _one(args, "NAME", GROUP_USAGE, ("--reuse",))
    return name, ({"reuse": True} if "--reuse" in flags else {})


@magics_class
class NbgroupsMagics(Magics):
    """``%nbgroups`` and ``%%group``."""

    @line_magic
    def nbgroups(self, line: str = ""):
        """%nbgroups [progress G | delete G [--tasks] | cancel G | retry G | resume G |
        workers N | store PATH]: the table of groups, or one sub-command; ``--cached``
        after a group: the group of ``cached=True`` tasks (not for resume)."""
        return run_line(line)

    @cell_magic
    def group(self, line: str, cell: str):
        """%%group NAME [--reuse]: run the cell with NAME as the default group of
        every submission in it (and show its progress)."""
        name, options = parse_group_line(line)
        shell = self.shell
        if shell is None:  # registered magics always have one; mypy cannot know
            raise UsageError("%%group needs a running IPython shell")
        code = shell.transform_cell(cell)
        tree = ast.parse(code)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        ns = shell.user_ns
        with api.default_group(name, **options):
            exec(compile(tree, "<%%group cell>", "exec"), ns)
            if last is not None:
                expr = ast.Expression(last.value)
                return eval(compile(expr, "<%%group cell>", "eval"), ns)
        return None


def load_ipython_extension(ip) -> None:
    ip.register_magics(NbgroupsMagics)
    display.hook_shell(ip, auto=True)


def unload_ipython_extension(ip) -> None:
    display.unhook_shell(ip)
