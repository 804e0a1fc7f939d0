"""``nbgroups dashboard``: the dashboard on a port of its own, behind a token.

A fresh token (``secrets.token_urlsafe``) is made at each start and printed
in the URL. The first request brings it as ``?token=``; the server then sets
an HttpOnly, SameSite=Strict cookie, so the page's own requests carry it. A
request without a valid token (query, ``Authorization: token ...`` header or
that cookie) is refused with 403 before any handler runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import signal
import sys
from typing import Any, TextIO

import tornado.httpserver
import tornado.netutil
import tornado.web

from .handlers import Dashboard, routes


class TokenHandler(tornado.web.RequestHandler):
    """Base of the standalone server's handlers: every request needs the token."""

    def get_current_user(self) -> str | None:
        token = self.settings["nbgroups_token"]
        header = self.request.headers.get("Authorization", "")
        for given in (self.get_query_argument("token", None),
                      header[6:] if header.lower().startswith("token ") else None,
                      self.get_cookie(self.settings["nbgroups_cookie"])):
            if given and secrets.compare_digest(given.encode(), token.encode()):
                return "token"
        return None

    def prepare(self) -> None:
        if not self.current_user:
            raise tornado.web.HTTPError(403, "open the URL printed by `nbgroups dashboard` "
                                             "(it holds the token)")
        if self.get_query_argument("token", None):
            self.set_cookie(self.settings["nbgroups_cookie"], self.settings["nbgroups_token"],
                            httponly=True, samesite="Strict", path="/")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # A plain-text reason, never a traceback or a value from the request.
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reason = getattr(exc, "log_message", None) if isinstance(
            exc, tornado.web.HTTPError) else None
        self.finish(f"{status_code} {self._reason}" + (f": {reason}" if reason else "") + "\n")


def make_app(runner: Any, api: Any, *, token: str, read_only: bool = False,
             cookie: str = "nbgroups-dashboard") -> tornado.web.Application:
    """The standalone dashboard application (``runner()`` gives the store's runner)."""
    dash = Dashboard(root="", read_only=read_only, runner=runner, api=api)
    return tornado.web.Application(
        routes(TokenHandler, dash), xsrf_cookies=True, nbgroups_token=token,
        nbgroups_cookie=cookie, autoescape="xhtml_escape", nbgroups_dashboard=dash,
    )


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def serve(api: Any, *, host: str = "127.0.0.1", port: int = 0, read_only: bool = False,
          out: TextIO = sys.stdout) -> int:
    """Serve the dashboard of ``api``'s store until SIGINT or SIGTERM; returns 0."""
    token = secrets.token_urlsafe(32)
    sockets = tornado.netutil.bind_sockets(port, host)
    bound = sockets[0].getsockname()[1]

    async def main() -> None:
        app = make_app(api.runner, api, token=token, read_only=read_only,
                       cookie=f"nbgroups-dashboard-{bound}")
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        mode = " (read-only)" if read_only else ""
        print(f"nbgroups dashboard{mode} of {api.runner().store.directory}:\n"
              f"    http://{url_host(host)}:{bound}/?token={token}", file=out, flush=True)
        if not loopback(host):
            print(f"warning: {host} is reachable from other machines, over plain HTTP: the "
                  "token and the results travel unencrypted. Prefer the default 127.0.0.1 "
                  "with an SSH tunnel, or a TLS reverse proxy.", file=out, flush=True)
        try:
            await stop.wait()
        finally:
            server.stop()
            app.settings["nbgroups_dashboard"].close()

    asyncio.run(main())
    return 0
