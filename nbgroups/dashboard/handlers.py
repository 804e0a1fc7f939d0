"""The dashboard's tornado handlers, written once for both servers.

:func:`routes` builds them on a base class given by the server: the
standalone server's token-checking handler (:mod:`.server`) or Jupyter's
``JupyterHandler`` (:mod:`.extension`), which brings Jupyter's login. Every
handler method is ``@tornado.web.authenticated``; the actions are POST only,
under tornado's XSRF check (``_xsrf`` in each form), and are not routed at all
in read-only mode. Pages are tornado templates with ``xhtml_escape`` on every
``{{ }}``; JSON is built by ``json.dumps`` and shown by the page's script as
text, so nothing from the store reaches the page as markup.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tornado.escape
import tornado.template
import tornado.web

from ..cancelling import cancel_everywhere
from ..errors import NbgroupsError
from . import views

HERE = Path(__file__).resolve().parent
TEMPLATES = str(HERE / "templates")
STATIC = {"dashboard.js": "text/javascript; charset=UTF-8",
          "dashboard.css": "text/css; charset=UTF-8"}
ACTIONS = ("cancel", "retry", "delete")
# What an action did, shown on the page it redirects to. Only these texts: the
# redirect carries the action's name and a count, never text to show.
NOTES = {
    "cancel": "cancelled {n} queued tasks in every process holding them "
              "(running ones finish)",
    "cancel-silent": "cancelled {n} queued tasks (running ones finish); {m} live "
                     "processes holding tasks of this group did not answer in time",
    "retry": "re-submitted {n} failed tasks",
    "delete": "deleted group {name!r}",
    "delete-tasks": "deleted group {name!r} and its {n} tasks",
}
# No inline script or style, nothing from elsewhere: a value that slipped past
# escaping still could not run.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'")


class Dashboard:
    """What the handlers share: where the pages live, whether actions are served,
    the store's runner (given by a callable: the Jupyter extension opens the store
    on first use), and a small thread pool so store reads never block the server."""

    def __init__(self, *, root: str, read_only: bool, runner: Any, api: Any) -> None:
        self.root = root.rstrip("/")
        self.read_only = read_only
        self._runner = runner
        self.api = api
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nbgroups-dashboard")

    def runner(self) -> Any:
        """The runner whose store the dashboard shows (None: there is no store yet)."""
        return self._runner()

    async def call(self, func: Any, *args: Any) -> Any:
        """``func(*args)`` on the dashboard's threads (store reads are blocking SQL).

        An nbgroups error (an entry signed with another key, a store that cannot
        be read) becomes a 500 that says what it is, not a bare server error.
        """
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)
        except NbgroupsError as exc:
            raise tornado.web.HTTPError(500, f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        """Stop the threads (reads not begun are dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _int_arg(handler: tornado.web.RequestHandler, name: str, default: int,
             low: int, high: int | None = None) -> int:
    raw = handler.get_query_argument(name, None)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise tornado.web.HTTPError(400, f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        accepted = f"at least {low}" if high is None else f"between {low} and {high}"
        raise tornado.web.HTTPError(400, f"{name} must be {accepted}")
    return value


def group_query(group: str, ttl: int | None) -> str:
    """The query naming a group in URLs: ``name=...``, and ``&cached=1`` for a
    group of the cache layer."""
    return f"name={tornado.escape.url_escape(group)}" + ("" if ttl is None else "&cached=1")


def routes(base: type, dashboard: Dashboard) -> list[tuple[str, type, dict[str, Any]]]:
    """The URL table of the dashboard, on handlers derived from ``base``."""

    class Handler(base):
        def initialize(self, dashboard: Dashboard) -> None:
            self.dash = dashboard

        def get_template_path(self) -> str:
            return TEMPLATES

        def create_template_loader(self, template_path: str) -> tornado.template.Loader:
            # Explicitly escaped, whatever the host application's settings say.
            return tornado.template.Loader(template_path, autoescape="xhtml_escape")

        def set_default_headers(self) -> None:
            super().set_default_headers()
            self.set_header("Content-Security-Policy", CSP)
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("Referrer-Policy", "no-referrer")
            self.set_header("Cache-Control", "no-store")

        @property
        def content_security_policy(self) -> str:  # JupyterHandler sets its CSP from this
            return CSP

        def page(self, template: str, **values: Any) -> None:
            self.render(template, root=self.dash.root, read_only=self.dash.read_only,
                        note=self.note(), **values)

        def note(self) -> str:
            text = NOTES.get(self.get_query_argument("done", ""))
            n, m = self.get_query_argument("n", ""), self.get_query_argument("m", "0")
            if text is None or not n.isdigit() or not m.isdigit():
                return ""
            return text.format(n=int(n), m=int(m), name=self.get_query_argument("name", ""))

        def after(self, path: str, action: str, n: int, group: str, ttl: int | None,
                  m: int = 0) -> None:
            """Redirect after an action (POST, then GET: a reload repeats nothing)."""
            more = f"&m={m}" if m else ""
            self.redirect(f"{self.dash.root}{path}?{group_query(group, ttl)}&done={action}"
                          f"&n={n}{more}")

        async def target(self) -> tuple[str, Any, int | None]:
            """The group the request names (``name``), the runner, and the group's
            layer: ``cached=1`` names the cache layer (its TTL), else None; 400
            without a name, 404 without a store or a cache layer."""
            group = self.group_arg()
            r = await self.runner_or_404()
            if self.get_argument("cached", "") != "1":
                return group, r, None
            ttl = await self.dash.call(views.cache_ttl, r)
            if ttl is None:
                raise tornado.web.HTTPError(404, "this store has no cache layer")
            return group, r, ttl

        async def runner_or_404(self) -> Any:
            r = await self.dash.call(self.dash.runner)
            if r is None:
                raise tornado.web.HTTPError(404, "no nbgroups store here yet")
            return r

        async def group_page(self, tasks: bool = True, with_timeline: bool = False
                             ) -> tuple[str, Any, int | None, dict]:
            """:meth:`target`, and the page of the group's tasks the query's offset
            and limit ask for (``tasks=False``: its summary only; ``with_timeline``:
            and the timeline); 400 for bad arguments, 404 for an unknown group."""
            offset = _int_arg(self, "offset", 0, 0)
            limit = _int_arg(self, "limit", views.PAGE_SIZE, 1, views.MAX_PAGE_SIZE)
            group, r, ttl = await self.target()
            if not tasks:
                if not await self.dash.call(r.store_for(ttl).known, group):
                    raise tornado.web.HTTPError(404, "no such group")
                summary = await self.dash.call(views.group_summary, r, group, None, ttl)
                return group, r, ttl, {"summary": summary}
            data = await self.dash.call(views.group_page, r, group, offset, limit, ttl,
                                        with_timeline)
            if data is None:
                raise tornado.web.HTTPError(404, "no such group")
            return group, r, ttl, data

        def group_arg(self) -> str:
            name = self.get_argument("name", "")
            if not name:
                raise tornado.web.HTTPError(400, "name (the group) is required")
            return name

        def json(self, value: Any) -> None:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps(value))

    class GroupsPage(Handler):
        # The table is drawn by the page's script from /api/groups (at once, then
        # each second): one rendering path, and a 10,000-group store is not
        # rendered twice (the template took 1.7 s for it).
        @tornado.web.authenticated
        async def get(self) -> None:
            r = await self.dash.call(self.dash.runner)
            self.page("groups.html", no_store=r is None)

    class GroupsJSON(Handler):
        @tornado.web.authenticated
        async def get(self) -> None:
            r = await self.dash.call(self.dash.runner)
            groups = [] if r is None else await self.dash.call(views.group_list, r)
            self.json({"groups": groups})

    class GroupPage(Handler):
        @tornado.web.authenticated
        async def get(self) -> None:
            group, r, ttl, data = await self.group_page(with_timeline=True)
            kinds = None  # failures listed here for a group small enough to read whole
            if data["summary"]["failed"] and data["total"] <= views.INLINE_FAILURES:
                kinds = await self.dash.call(views.failure_kinds, r, group,
                                             views.INLINE_PER_KIND, ttl)
            self.page("group.html", group=group, cached=ttl is not None,
                      query=group_query(group, ttl), kinds=kinds, **data)

    class GroupJSON(Handler):
        @tornado.web.authenticated
        async def get(self) -> None:
            # tasks=0: the counts only (key reads)
            self.json((await self.group_page(self.get_query_argument("tasks", "1") != "0"))[3])

    class FailuresPage(Handler):
        @tornado.web.authenticated
        async def get(self) -> None:
            group, r, ttl = await self.target()
            if not await self.dash.call(r.store_for(ttl).known, group):
                raise tornado.web.HTTPError(404, "no such group")
            summary = await self.dash.call(views.group_summary, r, group, None, ttl)
            kinds = await self.dash.call(views.failure_kinds, r, group,
                                         views.FAILURES_PER_KIND, ttl)
            self.page("failures.html", group=group, cached=ttl is not None,
                      query=group_query(group, ttl), summary=summary, kinds=kinds)

    class TaskPage(Handler):
        @tornado.web.authenticated
        async def get(self, task_id: str) -> None:
            r = await self.runner_or_404()
            data = await self.dash.call(views.task_page, r, task_id)
            if data is None:
                raise tornado.web.HTTPError(404, "no such task")
            self.page("task.html", query=group_query(data["group"], 1 if data["cached"] else None)
                      if data["group"] else "", **data)

    class Action(Handler):
        @tornado.web.authenticated
        async def post(self, action: str) -> None:
            group, r, ttl = await self.target()
            api = self.dash.api
            cached = False if ttl is None else ttl
            if action == "cancel":  # in the processes that hold the group's tasks, too
                report = await self.dash.call(cancel_everywhere, r, group, ttl)
                silent = len(report.silent)
                self.after("/group", "cancel-silent" if silent else "cancel", report.total,
                           group, ttl, silent)
                return
            if action == "retry":
                n = await self.dash.call(api.retry_group, group, cached)
            else:
                tasks = self.get_body_argument("tasks", "") == "1"
                n = await self.dash.call(api.delete_group, group, tasks, cached)
                self.after("/", "delete-tasks" if tasks else "delete", n, group, ttl)
                return
            self.after("/group", action, n, group, ttl)

    class Static(Handler):
        @tornado.web.authenticated
        def get(self, name: str) -> None:
            self.set_header("Content-Type", STATIC[name])
            self.set_header("Cache-Control", "no-cache")
            self.finish((HERE / "static" / name).read_bytes())

    root = re.escape(dashboard.root)
    kw: dict[str, Any] = {"dashboard": dashboard}
    table: list[tuple[str, type, dict[str, Any]]] = [
        (rf"{root}/?", GroupsPage, kw),
        (rf"{root}/api/groups", GroupsJSON, kw),
        (rf"{root}/group", GroupPage, kw),
        (rf"{root}/api/group", GroupJSON, kw),
        (rf"{root}/failures", FailuresPage, kw),
        (rf"{root}/task/([0-9a-f]{{32}})", TaskPage, kw),
        (rf"{root}/static/(dashboard\.js|dashboard\.css)", Static, kw),
    ]
    if not dashboard.read_only:
        table.append((rf"{root}/action/({'|'.join(ACTIONS)})", Action, kw))
    return table
