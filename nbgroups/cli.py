"""``python -m nbgroups`` / ``nbgroups``: list groups, show one, watch them, delete one,
check a store, run the demo, serve the dashboard (:mod:`nbgroups.dashboard`).

The store is ``--store PATH``, else ``NBGROUPS_STORE``, else ``./.nbgroups``
(the notebook's default), so the command line sees what a notebook in the
same directory stored. ``--store`` may stand before or after the command
(one parent parser shared by every sub-command). The commands that only read
(``list``, ``show``, ``watch``, and ``delete`` of a store that is not there)
create nothing: a missing store is reported with its path, never made, and
every message names the store it read. ``list`` and ``show`` print JSON with
``--json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from . import api, display
from .config import from_environment
from .display import ProgressView, flush, load_failures, progress
from .display.formatting import meter
from .display.table import format_table, group_rows
from .errors import NbgroupsError, StoreError
from .records import GroupCounts, TaskList

DEMO_GROUP = "demo"
STORE_DATABASE = "cache.db"  # a directory holding it is a store (diskcache's file name)
WATCH_POLL = 0.25  # seconds between two reads of a store another process writes


def train(lr: float, depth: int, seed: int) -> dict:
    """The demo's stand-in for fitting a model: a score that peaks at lr=0.1, depth=6.

    A learning rate of 1.0 with a deep model diverges (a ``FloatingPointError``),
    as such sweeps do.
    """
    rng = random.Random(hash((lr, depth, seed)) & 0xFFFFFFFF)
    time.sleep(rng.uniform(0.005, 0.03))
    if lr >= 1.0 and depth >= 8:
        raise FloatingPointError(f"loss diverged to inf at epoch {rng.randint(2, 9)} "
                                 f"(lr={lr}, depth={depth})")
    score = 0.95 - 2 * abs(lr - 0.1) ** 1.2 - 0.004 * (depth - 6) ** 2 + rng.gauss(0, 0.01)
    return {"score": round(score, 4)}


# ---------------------------------------------------------------- the store
def store_path(args: argparse.Namespace) -> Path:
    """The store directory a command acts on: ``--store``, ``NBGROUPS_STORE``, the default."""
    raw = getattr(args, "store", None) or from_environment().store
    return Path(raw).expanduser().resolve()


def store_exists(path: Path) -> bool:
    """Whether ``path`` holds a store, checked without creating anything.

    A path that is a file, or lies under one, raises :class:`StoreError`
    naming the options that choose another store.
    """
    for where in (path, *path.parents):
        if where.exists():
            break
    if where.is_file() or not where.is_dir():
        what = "it is a file" if where == path else f"{str(where)!r} is a file"
        raise StoreError(
            f"cannot use store directory {str(path)!r}: {what}, not a directory. Choose "
            "another with --store PATH (or NBGROUPS_STORE; in Python configure(store=...)).")
    return (path / STORE_DATABASE).is_file()


def open_store(args: argparse.Namespace, *, create: bool = False, **changes) -> Path | None:
    """Point the api at the command's store (and ``changes`` of the settings); None
    (nothing opened, nothing made) if there is no store there and ``create`` is false."""
    path = store_path(args)
    if not store_exists(path) and not create:
        return None
    api.configure(store=str(path), progress="text", **changes)
    return path


def _no_store(path: Path) -> str:
    return f"no store at {str(path)!r} (nothing was stored there yet)"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
        timespec="milliseconds")


def counts_json(c: GroupCounts, now: float) -> dict:
    """One group's counts as ``list --json`` and ``show --json`` print them."""
    m = meter(c, now)
    return {"group": c.group, "state": m.state, "submitted": c.submitted, "done": c.done,
            "failed": c.failed, "cancelled": c.cancelled, "running": c.running,
            "queued": c.queued, "reused": c.reused,
            "first_submitted": _iso(c.first_submitted), "last_finished": _iso(c.last_finished),
            "elapsed_seconds": round(m.elapsed, 3)}


def _print_json(value: dict) -> None:
    print(json.dumps(value, indent=2))


# ---------------------------------------------------------------- commands
def cmd_list(args: argparse.Namespace) -> int:
    path = open_store(args)
    r = api.runner() if path is not None else None
    counts = [r.counts(g) for g in api.list_groups()] if r is not None else []
    where = store_path(args)
    if args.json:
        now = time.time()
        _print_json({"store": str(where), "exists": path is not None,
                     "groups": [counts_json(c, now) for c in counts]})
    elif path is None:
        print(f"no groups: {_no_store(where)}")
    elif not counts:
        print(f"no groups in store {str(where)!r}")
    else:
        print(f"groups in store {str(where)!r}:")
        print(format_table(group_rows(counts)))
    return 0


def _require_group(args: argparse.Namespace) -> bool:
    """Open the store and check the group is there; else say which store was read."""
    path = open_store(args)
    if path is None:
        print(f"nbgroups: no group named {args.group!r}: {_no_store(store_path(args))}",
              file=sys.stderr)
        return False
    if api.runner().store.known(args.group):
        return True
    print(f"nbgroups: no group named {args.group!r} in store {str(path)!r} "
          "(`nbgroups list` shows its groups)", file=sys.stderr)
    return False


def cmd_show(args: argparse.Namespace) -> int:
    if not _require_group(args):
        return 1
    now = time.time()
    c = api.runner().counts(args.group)
    m = meter(c, now)
    failures = load_failures(args.group, limit=args.limit) if m.failed else []
    if args.json:
        value = {"store": str(store_path(args)), **counts_json(c, now),
                 "failures": [{"name": f.name, "error": f.error, "traceback": f.traceback}
                              for f in failures]}
        _print_json(value)
        return 0
    print(f"store:     {store_path(args)}")
    print(f"group:     {m.group}")
    print(f"state:     {m.state}")
    print(f"submitted: {m.submitted}")
    print(f"done:      {m.done}")
    print(f"failed:    {m.failed}")
    print(f"cancelled: {m.cancelled}")
    print(f"running:   {m.running}")
    print(f"queued:    {m.queued}")
    if m.reused:
        print(f"reused:    {m.reused}")
    print(f"elapsed:   {m.elapsed_text}")
    if failures:
        print(f"failures ({m.failed}" + (f", first {len(failures)}" if m.failed > len(failures)
                                          else "") + "):")
    for f in failures:
        # the call says which parameters failed; the name fetches the task
        print(f"  {f.call}: {f.error}  [{f.name}]" if f.call else f"  {f.name}: {f.error}")
        if args.tracebacks and f.traceback:
            print("    " + f.traceback.rstrip().replace("\n", "\n    "))
        if args.output:
            print(f"    call: {f.call}")
            for label, text in (("stdout", f.stdout), ("stderr", f.stderr)):
                if text:
                    print(f"    {label}:\n      " + text.rstrip().replace("\n", "\n      "))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    if not _require_group(args):
        return 1
    where = str(store_path(args))
    n = api.delete_group(args.group, tasks=args.tasks)
    if args.tasks:
        print(f"deleted group {args.group!r} and its {n} tasks from store {where!r}")
    else:
        print(f"deleted group {args.group!r} from store {where!r}; "
              f"its {n} tasks stay fetchable by id")
    return 0


def cmd_watch(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Follow the store's groups (or one) with the text view until they settle
    (one group) or until Ctrl-C (every group, new ones included)."""
    path = open_store(args)
    if path is None:
        print(f"nbgroups: nothing to watch: {_no_store(store_path(args))}", file=sys.stderr)
        return 1
    stop = stop or threading.Event()
    r = api.runner()
    views: dict[str, ProgressView] = {}
    said_waiting = False
    try:
        while True:
            groups = [args.group] if args.group else r.store.groups()
            for g in groups:
                if g in views or not r.store.known(g):
                    continue
                if args.group or not r.counts(g).settled:  # all groups: the running ones
                    views[g] = ProgressView(g, mode="text")
            for v in views.values():
                v.refresh()
            watched = views.get(args.group) if args.group else None
            if watched is not None and watched.meter is not None and watched.meter.settled:
                return 0
            if not said_waiting and not any(v.meter and not v.meter.settled
                                            for v in views.values()):
                said_waiting = True
                what = f"group {args.group!r}" if args.group else "new tasks"
                print(f"nbgroups: watching store {str(path)!r}: waiting for {what} "
                      "(Ctrl-C stops)", file=sys.stderr)
            if stop.wait(WATCH_POLL):  # another process writes the store: read it again
                return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for v in views.values():
            v.refresh(force=True)
            v.adapter.close()


def cmd_demo(args: argparse.Namespace) -> int:
    open_store(args, create=True,
               **({"workers": args.workers} if args.workers is not None else {}))
    grid = {"lr": [0.001, 0.01, 0.1, 1.0], "depth": [2, 4, 6, 8, 10], "seed": list(range(10))}
    if api.runner().store.known(args.group):
        # the earlier run's tasks too: a demo run again and again must not fill the store
        api.delete_group(args.group, tasks=True)
    t0 = time.monotonic()
    group = api.sweep(train, args.group, **grid)
    progress(group, mode="text")
    tasks = api.fetch_group(group, wait=-1) or TaskList()
    elapsed = time.monotonic() - t0
    flush()
    ok = [t for t in tasks if t.success]
    failed = [t for t in tasks if t.success is False]
    by_config: dict[tuple, list[float]] = {}
    for t in ok:
        by_config.setdefault((t.kwargs["lr"], t.kwargs["depth"]), []).append(t.result["score"])
    print(f"{len(tasks)} tasks in {elapsed:.1f} s: {len(ok)} done, {len(failed)} failed")
    if by_config:
        (lr, depth), scores = max(by_config.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
        print(f"best: lr={lr} depth={depth}, mean score {sum(scores) / len(scores):.3f} "
              f"over {len(scores)} seeds")
    if failed:
        kinds = sorted({(t.kwargs["lr"], t.kwargs["depth"]) for t in failed})
        print("failed configurations: " + ", ".join(f"lr={a} depth={b}" for a, b in kinds)
              + f" ({failed[0].error.split(' (')[0]})")
    print(f"results kept in store {str(store_path(args))!r} as group {group!r}: "
          f"`nbgroups show {group}`")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check a store without opening it for use (a damaged one would not open)."""
    from .store.check import check_store

    path = str(store_path(args))
    try:
        reports = check_store(path)
    except StoreError as exc:  # no store there
        print(f"nbgroups: {exc}", file=sys.stderr)
        return 1
    for report in reports:
        print("\n".join(report.lines()))
    return 0 if all(r.ok for r in reports) else 1


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard.server import serve  # tornado only for this command

    # it serves actions too (cancel, retry, delete): the store is opened as by a
    # notebook, made if missing
    open_store(args, create=True)
    api.configure(progress=False)
    return serve(api, host=args.host, port=args.port, read_only=args.read_only)


def build_parser() -> argparse.ArgumentParser:
    """The parser: ``--store`` is accepted before and after the command."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a sub-command's parser that did not see --store must not reset
    # the value the main parser read before the command name.
    common.add_argument("--store", metavar="PATH", default=argparse.SUPPRESS,
                        help="store directory (default: $NBGROUPS_STORE or ./.nbgroups)")
    parser = argparse.ArgumentParser(
        prog="nbgroups", parents=[common],
        description="Parallel task groups: inspect the store, watch groups run, run the demo.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    p = command("list", cmd_list, "the groups in the store, with their counts")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command("show", cmd_show, "one group's counts and failures")
    p.add_argument("group")
    p.add_argument("--tracebacks", action="store_true", help="print each failure's traceback")
    p.add_argument("--output", action="store_true",
                   help="print each failure's call, stdout and stderr (logging, warnings)")
    p.add_argument("--limit", type=int, default=20, help="failures to list (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command("watch", cmd_watch,
                "live progress of one group until it settles, or of every running group "
                "(new ones too) until Ctrl-C")
    p.add_argument("group", nargs="?", default=None)
    p = command("delete", cmd_delete, "delete a group's label (with --tasks: its tasks too)")
    p.add_argument("group")
    p.add_argument("--tasks", action="store_true", help="delete the tasks too")
    command("check", cmd_check, "check a store: database integrity, signatures, files "
                                "(exit code 1 if anything is wrong)")
    p = command("demo", cmd_demo, "run a 200-task demo sweep with live progress")
    p.add_argument("--group", default=DEMO_GROUP, help=f"group name (default {DEMO_GROUP!r})")
    p.add_argument("--workers", type=int, default=None, help="worker processes")
    p = command("dashboard", cmd_dashboard,
                "serve a live web dashboard of every group in the store")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--read-only", action="store_true",
                   help="serve no action (cancel, retry, delete)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nbgroups`` and ``python -m nbgroups``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (NbgroupsError, OSError) as exc:  # a bad store or key directory, bad NBGROUPS_*
        print(f"nbgroups: {exc}", file=sys.stderr)
        return 1
    finally:
        display.reset()
        api.reset()
