"""The dashboard: Store.group_slice, what the pages show, and the real server.

The server tests run ``python -m nbgroups dashboard`` in a subprocess on
127.0.0.1 and talk to it over HTTP (urllib, with cookies), as a browser would:
the token, XSRF on actions, escaping, read-only mode, and a paged group of a
million tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import re
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
import tornado.httpserver
import tornado.netutil

import nbgroups
from nbgroups import api
from nbgroups.dashboard import views
from nbgroups.dashboard.server import loopback, make_app
from nbgroups.errors import ConfigurationError
from nbgroups.runner import Runner
from nbgroups.store import DiskStore, MemoryStore
from tests.dashboard_env import Client, dashboard_process, write_group

XSS_GROUP = "<script>alert(1)</script>"


class Shown:
    """A value whose repr is markup: it must show as text."""

    def __repr__(self) -> str:
        return '<img src=x onerror="alert(2)"><b>bold</b>'


def html_result(x):
    return Shown() if x == 0 else {"html": "<i>x</i>", "x": x}


# ---------------------------------------------------------------- Store.group_slice
@pytest.fixture(params=["memory", "disk"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else DiskStore(tmp_path / "store")
    yield s
    s.close()


def test_group_slice_reads_positions_across_pages(store):
    write_group(store, "g", 23, page_size=5)  # pages of 5, 5, 5, 5, 3
    everything = store.group_records("g")
    assert [t.kwargs["x"] for t in everything] == list(range(23))
    for start, stop in [(0, 5), (3, 12), (4, 5), (5, 10), (20, 23), (0, 23), (7, 7)]:
        got = store.group_slice("g", start, stop)
        assert [t.id for t in got] == [t.id for t in everything[start:stop]], (start, stop)
        assert [t.result for t in got] == list(range(start, stop))
    assert [t.kwargs["x"] for t in store.group_slice("g", 21, 40)] == [21, 22]
    assert store.group_slice("g", 30, 40) == []
    assert store.group_slice("unknown", 0, 10) == []


def test_group_slice_gives_each_task_its_latest_outcome(store):
    write_group(store, "g", 4, page_size=4)
    [page_task] = store.group_slice("g", 2, 3)
    prefix = page_task.id[:24]
    gen = store.gen("g")
    store.write_outcomes([("g", gen, [(page_task.id, "failure", 2, 1.0, 2.0, None, None,
                                       "Traceback: boom")], ["success"])])
    [again] = store.group_slice("g", 2, 3)
    assert again.id == page_task.id and again.state.value == "failure"
    assert again.attempt_count == 2 and again.traceback == "Traceback: boom"
    assert [t.state.value for t in store.group_slice("g", 0, 4)] == \
        ["success", "success", "failure", "success"]
    assert all(t.id.startswith(prefix) for t in store.group_slice("g", 0, 4))


def test_group_slice_refuses_bad_bounds(store):
    for start, stop in [(-1, 3), (5, 2), (0.5, 2), ("0", 3)]:
        with pytest.raises(ConfigurationError, match="start"):
            store.group_slice("g", start, stop)


def test_all_counts_are_each_groups_counts_in_two_reads(store):
    for i, n in enumerate([3, 1, 5]):
        write_group(store, f"g{i}", n, page_size=2)
    write_group(store, "relabelled", 4)
    store.delete_group("relabelled", tasks=False)  # its counters stay, under gen 0
    write_group(store, "relabelled", 2)  # gen 1
    write_group(store, "gone", 2)
    store.delete_group("gone", tasks=True)
    every = store.all_counts()
    assert every == [store.counts(g) for g in sorted(store.groups())]
    assert [(c.group, c.submitted, c.done) for c in every] == \
        [("g0", 3, 3), ("g1", 1, 1), ("g2", 5, 5), ("relabelled", 2, 2)]


# ---------------------------------------------------------------- views
def test_preview_is_bounded_text():
    assert views.preview(list(range(10_000))).endswith("...]")
    assert len(views.preview("x" * 10_000)) <= 120
    assert views.preview(Shown()) == '<img src=x onerror="alert(2)"><b>bold</b>'

    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert views.preview(Broken()).startswith("<Broken instance at 0x")  # reprlib's fallback


def test_full_text_of_a_huge_value_is_bounded_and_cheap():
    # pprint formatted all of it before the cut: seconds and GBs per page view
    import pprint

    huge = list(range(10_000_000))
    text = views.full_text(huge)
    assert text.startswith("[0, 1, 2, 3") and "shortened" in text
    assert len(text) <= views.FULL_TEXT + 100
    nested = {"rows": [huge], "name": "x" * 10_000_000}
    assert len(views.full_text(nested)) <= views.FULL_TEXT + 100
    small = {"a": list(range(30)), "b": "text"}
    assert views.full_text(small) == pprint.pformat(small, width=100)


def test_views_of_a_group_with_failures(nb):
    g = nbgroups.sweep(html_result, "views", x=[0, 1, 2])
    nbgroups.async_task("math.sqrt", -1.0, group="views")
    nbgroups.async_task("math.sqrt", -4.0, group="views")
    nbgroups.async_task("math.floor", "a", group="views")
    nbgroups.fetch_group(g, wait=-1)
    r = api.runner()
    page = views.group_page(r, g, 1, 4)
    assert page["total"] == 6 and page["pages"] == 2 and page["page"] == 1
    assert [row["position"] for row in page["rows"]] == [1, 2, 3, 4]
    assert page["columns"] == ["x", "args"]
    assert page["rows"][0]["params"] == {"x": "1"}
    assert page["rows"][0]["outcome"] == "{'html': '<i>x</i>', 'x': 1}"
    assert page["rows"][2]["params"] == {"args": "-1.0"}
    assert page["rows"][2]["outcome"] == "ValueError: math domain error"
    assert page["prev"] == 0 and page["next"] == 5
    kinds = views.failure_kinds(r, g)
    assert [(k["kind"], k["count"]) for k in kinds] == [("ValueError", 2), ("TypeError", 1)]
    assert "Traceback" in kinds[0]["calls"][0]["traceback"]
    task = views.task_page(r, page["rows"][2]["id"])
    fields = {f["name"]: f["text"] for f in task["fields"]}
    assert fields["func"] == "math.sqrt" and fields["state"] == "failure"
    assert fields["error"] == "ValueError: math domain error"
    assert views.group_page(r, "no-such-group", 0, 10) is None
    assert views.task_page(r, "0" * 32) is None


# ---------------------------------------------------------------- the real server
@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A store with an injection attempt, markup results and a failure, written by
    this process (sync backend); the dashboard runs in another."""
    store = tmp_path_factory.mktemp("dash") / "store"
    with pytest.MonkeyPatch.context() as mp:  # the signing key where _signing_key puts it
        mp.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg-config"))
        api.reset()
        nbgroups.configure(store=str(store), backend="sync", progress=False)
        nbgroups.sweep(html_result, XSS_GROUP, x=[0, 1])
        nbgroups.async_task("math.sqrt", -1.0, group="flaky")
        nbgroups.async_task("math.floor", 2.5, group="flaky")
        ids = {t.kwargs["x"]: t.id for t in nbgroups.fetch_group(XSS_GROUP)}
        api.reset()
    return store, ids


@pytest.fixture
def server(shop, _signing_key):
    with dashboard_process(shop[0]) as dash:
        yield dash


def test_listens_on_127_0_0_1_and_prints_a_fresh_token(server, shop):
    assert server.url.startswith("http://127.0.0.1:")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", server.token)  # token_urlsafe(32)
    port = int(server.url.rsplit(":", 1)[1])
    listening = [c.laddr for c in psutil.Process(server.proc.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
    with dashboard_process(shop[0]) as other:
        assert other.token != server.token


def test_only_loopback_addresses_count_as_this_machine_only():
    assert all(map(loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(loopback, ["0.0.0.0", "::", "192.168.1.10", "example.org"]))


def test_every_request_needs_the_token(server):
    c = server.client()
    paths = ["/", "/api/groups", "/group?name=flaky", "/failures?name=flaky",
             "/static/dashboard.js", f"/task/{'0' * 32}"]
    for path in paths:
        assert c.get(path).status == 403, path
        sep = "&" if "?" in path else "?"
        assert c.get(path + sep + "token=not-the-token").status == 403, path
    assert c.get("/api/groups", headers={"Authorization": "token wrong"}).status == 403
    assert "flaky" not in c.get("/api/groups").body
    ok = c.get("/api/groups", headers={"Authorization": f"token {server.token}"})
    assert ok.status == 200 and "flaky" in ok.body
    # the URL's token sets an HttpOnly, SameSite=Strict cookie; later requests need only it
    first = c.get(f"/?token={server.token}")
    assert first.status == 200
    set_cookie = first.headers.get("Set-Cookie", "")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    for path in paths[:5]:
        assert c.get(path).status == 200, path


def test_markup_from_the_store_is_shown_as_text(server, shop):
    c = server.client()
    c.get(f"/?token={server.token}")
    # the groups table is drawn from JSON with textContent (the browser test sees it)
    listed = c.get("/api/groups")
    assert listed.headers["Content-Type"].startswith("application/json")
    assert listed.headers["X-Content-Type-Options"] == "nosniff"
    assert XSS_GROUP in [g["group"] for g in json.loads(listed.body)["groups"]]
    page = c.get("/group?name=%3Cscript%3Ealert(1)%3C/script%3E").body
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in page
    assert "<i>x</i>" not in page and "&lt;i&gt;x&lt;/i&gt;" in page
    flaky = c.get("/group?name=flaky").body  # a small group lists its failures
    assert '<span class="exc">ValueError</span>' in flaky and "math domain error" in flaky
    assert c.get("/failures?name=nope").status == 404
    task = c.get(f"/task/{shop[1][0]}").body
    assert "<img" not in task and "&lt;img src=x" in task
    csp = c.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def _form_token(page: str) -> str:
    return re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)


def test_actions_need_post_and_the_xsrf_token(server, shop):
    c = server.client()
    page = c.get(f"/group?name=flaky&token={server.token}").body
    assert 'action="/action/retry"' in page
    # a GET is no action; a POST without the form's XSRF token is refused
    assert c.get("/action/retry?name=flaky").status == 405
    assert c.post("/action/retry", {"name": "flaky"}).status == 403
    forged = c.post("/action/retry", {"name": "flaky", "_xsrf": "2|00|00|00"})
    assert forged.status == 403
    assert '"failed": 1' in c.get("/api/groups").body
    store = DiskStore(shop[0])
    [failed] = [t for t in store.group_records("flaky") if t.success is False]
    assert failed.attempt_count == 1
    done = c.post("/action/retry", {"name": "flaky", "_xsrf": _form_token(page)})
    assert done.status == 302
    assert done.headers["Location"] == "/group?name=flaky&done=retry&n=1"
    assert '<p class="note">re-submitted 1 failed tasks</p>' in c.get(
        done.headers["Location"]).body
    # the note is one of the dashboard's own texts: nothing else comes from the URL
    assert 'class="note"' not in c.get("/group?name=flaky&done=evil&n=1").body
    assert 'class="note"' not in c.get("/group?name=flaky&done=retry&n=x").body
    # the dashboard's process ran the retry on its own pool: a second failed run
    deadline = time.monotonic() + 60
    while store.task(failed.id).attempt_count < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.task(failed.id).attempt_count == 2
    store.close()


def test_a_store_signed_with_another_key_is_refused_with_a_reason(shop, monkeypatch,
                                                                  tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "other-key"))
    with dashboard_process(shop[0]) as dash:
        answer = dash.client().get(f"/group?name=flaky&token={dash.token}")
        assert answer.status == 500
        assert "SignatureError" in answer.body and "failed signature verification" in answer.body
        assert "Traceback" not in answer.body


def test_read_only_serves_no_action(shop, _signing_key):
    with dashboard_process(shop[0], "--read-only") as dash:
        assert "(read-only)" in dash.output[0]
        c = dash.client()
        page = c.get(f"/group?name=flaky&token={dash.token}")
        assert page.status == 200 and "<form" not in page.body and "Retry" not in page.body
        assert "read-only" in page.body
        xsrf = c.cookie("_xsrf") or "x"
        for action in ("cancel", "retry", "delete"):
            answer = c.post(f"/action/{action}", {"name": "flaky", "_xsrf": xsrf})
            assert answer.status in (404, 405), action
        assert c.get("/api/groups").status == 200


def test_a_million_task_group_opens_one_page_at_a_time(tmp_path, _signing_key, record_property):
    store_dir = tmp_path / "store"
    store = DiskStore(store_dir)
    write_group(store, "million", 1_000_000)
    store.close()
    with dashboard_process(store_dir) as dash:
        c = dash.client()
        assert c.get(f"/?token={dash.token}").status == 200
        timings = {}
        for offset in (0, 500_000, 999_900):
            t0 = time.perf_counter()
            page = c.get(f"/group?name=million&offset={offset}")
            timings[offset] = time.perf_counter() - t0
            assert page.status == 200
            rows = re.findall(r'<td class="num">(\d+)</td>\s*<td><a href="/task/', page.body)
            assert [int(r) for r in rows] == list(range(offset, offset + 100))
            assert f"page {offset // 100 + 1} of 10000" in page.body
            assert f"Tasks {offset + 1} to {offset + 100} of 1000000" in page.body
        big = c.get("/api/group?name=million&offset=65500&limit=1000").body  # two pages
        assert big.count('"state": "success"') == 1000 and '"position": 66499' in big
        # past the end: the last page
        last = c.get("/group?name=million&offset=5000000").body
        assert "page 10000 of 10000" in last
    record_property("group_page_seconds", timings)
    print(f"\n1,000,000-task group page open: {timings}")


# ---------------------------------------------------------------- in-process app
@contextlib.contextmanager
def app_thread(runner) -> Iterator[Client]:
    """The standalone app in this process, on its own thread and event loop (a
    session's Playwright keeps an event loop registered on the main thread, so
    tornado's AsyncHTTPTestCase cannot run there); a client holding the token."""
    token = "t" * 43
    ready: queue.Queue = queue.Queue()
    stop: list = []

    def serve() -> None:
        async def main() -> None:
            app = make_app(runner, api, token=token)
            [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
            server = tornado.httpserver.HTTPServer(app)
            server.add_sockets([sock])
            done = asyncio.Event()
            stop.append((asyncio.get_running_loop(), done))
            ready.put(sock.getsockname()[1])
            await done.wait()
            server.stop()
            app.settings["nbgroups_dashboard"].close()

        asyncio.run(main())

    thread = threading.Thread(target=serve, name="dashboard-test-app")
    thread.start()
    port = ready.get(timeout=30)
    client = Client(f"http://127.0.0.1:{port}")
    assert client.get(f"/?token={token}").status == 200  # sets the cookie
    try:
        yield client
    finally:
        loop, done = stop[0]
        loop.call_soon_threadsafe(done.set)
        thread.join(30)


def test_without_a_store_the_pages_say_so():
    with app_thread(lambda: None) as c:
        page = c.get("/")
        assert page.status == 200 and "no nbgroups store here yet" in page.body.lower()
        assert json.loads(c.get("/api/groups").body) == {"groups": []}
        assert c.get("/group?name=g").status == 404
        assert c.get(f"/task/{'a' * 32}").status == 404


@pytest.fixture
def small_app():
    store = MemoryStore()
    write_group(store, "g", 10, page_size=4)
    runner = Runner(api.settings(), store=store)
    with app_thread(lambda: runner) as c:
        yield c
    runner.close()


def test_bad_arguments_are_400_and_unknown_names_404(small_app):
    c = small_app
    assert c.get("/group?name=g").status == 200
    assert c.get("/group").status == 400  # no name
    for query, reason in [("offset=-1", "offset must be at least 0"),
                          ("offset=x", "offset must be an integer"),
                          ("limit=0", "limit must be between 1 and 1000"),
                          ("limit=1001", "limit must be between 1 and 1000")]:
        for path in ("/group", "/api/group"):  # the page and its JSON: one parser
            answer = c.get(f"{path}?name=g&{query}")
            assert answer.status == 400 and reason in answer.body, (path, query)
            assert "Traceback" not in answer.body
    assert c.get("/group?name=nope").status == 404
    assert c.get("/api/group?name=nope").status == 404
    assert c.get(f"/task/{'0' * 32}").status == 404
    assert c.get("/task/not-an-id").status == 404
    assert c.get("/static/other.js").status == 404
    js = c.get("/static/dashboard.js")
    assert js.status == 200 and js.headers["Content-Type"].startswith("text/javascript")


def test_pages_of_a_group(small_app):
    data = json.loads(small_app.get("/api/group?name=g&offset=3&limit=4").body)
    assert [r["position"] for r in data["rows"]] == [3, 4, 5, 6]
    assert data["columns"] == ["x", "y"] and data["pages"] == 3
    assert (data["prev"], data["next"]) == (0, 7)
    counts = json.loads(small_app.get("/api/group?name=g&tasks=0").body)
    assert list(counts) == ["summary"] and counts["summary"]["done"] == 10
    assert small_app.get("/api/group?name=nope&tasks=0").status == 404


def test_groups_of_the_cache_layer_are_shown_and_acted_on(tmp_path):
    """A group kept with ``cached=True`` lives in the store's cache layer: listed
    (marked cached), its pages and actions address that layer; a store without a
    cache layer gets none made by the dashboard."""
    api.reset()
    store = tmp_path / "store"
    nbgroups.configure(store=str(store), backend="sync", progress=False)
    try:
        with app_thread(api.runner) as c:
            assert c.get("/group?name=kept&cached=1").status == 404  # no cache layer
            assert not (store / "cache").exists()
            nbgroups.async_task("math.floor", 2.5, group="kept", cached=True)
            nbgroups.async_task("math.sqrt", -1.0, group="kept", cached=True)
            nbgroups.async_task("math.floor", 1.5, group="durable")
            groups = {(g["group"], g["cached"]): g
                      for g in json.loads(c.get("/api/groups").body)["groups"]}
            assert set(groups) == {("kept", True), ("durable", False)}
            assert (groups["kept", True]["done"], groups["kept", True]["failed"]) == (1, 1)
            assert c.get("/group?name=kept").status == 404  # not in the durable store
            page = c.get("/group?name=kept&cached=1")
            assert page.status == 200 and "cache layer</span>" in page.body
            assert 'name="cached" value="1"' in page.body
            assert "ValueError: math domain error" in page.body
            assert 'href="/failures?name=kept&amp;cached=1"' in page.body
            data = json.loads(c.get("/api/group?name=kept&cached=1").body)
            assert data["summary"]["cached"] is True
            assert [r["state"] for r in data["rows"]] == ["success", "failure"]
            task = c.get(f"/task/{data['rows'][0]['id']}")
            assert task.status == 200 and 'href="/group?name=kept&amp;cached=1"' in task.body
            assert c.get("/failures?name=kept&cached=1").status == 200
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.body).group(1)
            done = c.post("/action/retry", {"name": "kept", "cached": "1", "_xsrf": xsrf})
            assert done.headers["Location"] == "/group?name=kept&cached=1&done=retry&n=1"
            done = c.post("/action/delete", {"name": "kept", "cached": "1", "_xsrf": xsrf})
            assert done.status == 302
            assert [g["group"] for g in json.loads(c.get("/api/groups").body)["groups"]] == \
                ["durable"]
            assert nbgroups.count_group("durable") == 1  # the other layer untouched
    finally:
        api.reset()


def test_the_timeline_is_of_the_group_or_of_the_page_shown(tmp_path, monkeypatch):
    api.reset()
    nbgroups.configure(store=str(tmp_path / "store"), backend="sync", progress=False)
    try:
        nbgroups.sweep(html_result, "tl", x=[0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
        with app_thread(api.runner) as c:
            whole = c.get("/group?name=tl&limit=2").body
            assert whole.count("<rect ") == 6 and "Every task run of the group" in whole
            assert "html_result(x=5.5): success" in whole  # each bar's tooltip: its call
            monkeypatch.setattr(views, "TIMELINE_TASKS", 3)
            paged = c.get("/group?name=tl&limit=2&offset=2").body
            assert paged.count("<rect ") == 2 and "tasks on this page" in paged
            assert "html_result(x=2.5)" in paged and "html_result(x=0.5)" not in paged
            # the JSON the page polls carries no timeline
            assert "timeline" not in json.loads(c.get("/api/group?name=tl").body)
    finally:
        api.reset()
