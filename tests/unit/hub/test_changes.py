"""Which changes a dashboard is told of (edgefleet.hub.changes), and the web UI's file server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from edgefleet.hub.changes import KINDS, Changes, News, Watcher, kinds
from edgefleet.hub.fleet import FleetChanges
from edgefleet.hub.webui import WebUi


def test_nothing_changed_tells_nothing() -> None:
    assert kinds(News(), None) == frozenset()
    assert kinds(News(), frozenset({"t1"})) == frozenset()


def test_sites_are_everyones_news() -> None:
    news = News(sites=True)
    assert kinds(news, None) == {"sites"}
    assert kinds(news, frozenset({"t1"})) == {"sites"}
    assert kinds(news, frozenset()) == {"sites"}


def test_a_tenants_changes_reach_only_those_who_see_it() -> None:
    news = News(apps=frozenset({"t2"}), events=frozenset({"t2"}), demand=frozenset({"t2"}))
    assert kinds(news, None) == {"apps", "events", "demand"}
    assert kinds(news, frozenset({"t2"})) == {"apps", "events", "demand"}
    assert kinds(news, frozenset({"t1", "t2"})) == {"apps", "events", "demand"}
    assert kinds(news, frozenset({"t1"})) == frozenset()
    assert kinds(news, frozenset()) == frozenset()


def test_fleet_events_are_for_those_who_see_every_tenant() -> None:
    news = News(events=frozenset({None}))
    assert kinds(news, None) == {"events"}
    assert kinds(news, frozenset({"t1", "t2"})) == frozenset()


def test_the_news_of_a_feed_update() -> None:
    changes = FleetChanges(
        sites={"paris"},
        apps={("t1", "web")},
        placements={("t2", "api")},
        replica_apps={("t3", "db")},
        demand={("t4", "shop")},
        events={"", "t5"},
    )
    news = News.of(changes)
    assert news == News(
        sites=True,
        apps=frozenset({"t1", "t2", "t3"}),
        events=frozenset({None, "t5"}),
        demand=frozenset({"t4"}),
    )
    # A replica report changes the sites' counts and the apps' statuses, nothing else.
    report = News.of(FleetChanges(replicas={"paris"}, replica_apps={("t1", "web")}))
    assert report == News(sites=True, apps=frozenset({"t1"}))


def test_a_new_watcher_is_told_everything_then_only_its_news() -> None:
    async def scenario() -> list[list[str] | None]:
        changes = Changes()
        mine = changes.watch(frozenset({"t1"}))
        told = [await mine.next(1.0)]
        changes.follow(FleetChanges(apps={("t2", "other")}))
        told.append(await mine.next(0.05))
        changes.follow(FleetChanges(apps={("t1", "web")}, sites={"paris"}))
        told.append(await mine.next(1.0))
        changes.close()
        told.append(await mine.next(1.0))
        return told

    assert asyncio.run(scenario()) == [list(KINDS), [], ["sites", "apps"], None]


def test_a_watcher_gets_changes_merged_in_order_then_none_once_closed() -> None:
    async def scenario() -> list[list[str] | None]:
        watcher = Watcher(None)
        watcher.tell({"demand"})
        watcher.tell({"apps", "sites"})
        first = await watcher.next(1.0)
        quiet = await watcher.next(0.01)
        watcher.close()
        return [first, quiet, await watcher.next(1.0)]

    first, quiet, closed = asyncio.run(scenario())
    assert first == ["sites", "apps", "demand"]
    assert first == [k for k in KINDS if k in first]
    assert quiet == []
    assert closed is None


@pytest.fixture
def built(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text('<script src="/ui/app.js"></script>')
    (tmp_path / "app.js").write_text("console.log(1)")
    (tmp_path / "app.css").write_text("body{}")
    (tmp_path / "notes.txt").write_text("not served")
    return tmp_path


async def get(app: WebUi, path: str, method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        return await client.request(method, path)


def test_the_ui_serves_its_three_files_and_nothing_else(built: Path) -> None:
    ui = WebUi(built)
    page = asyncio.run(get(ui, "/"))
    assert page.status_code == 200 and page.text.startswith("<script")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert asyncio.run(get(ui, "/app.js")).headers["content-type"].startswith("text/javascript")
    assert asyncio.run(get(ui, "/app.css")).text == "body{}"
    for path in ("/notes.txt", "/app.js/x", "/%2e%2e/pyproject.toml", "/sub/app.js"):
        assert asyncio.run(get(ui, path)).status_code == 404, path
    assert asyncio.run(get(ui, "/", method="DELETE")).status_code == 405


def test_an_unbuilt_ui_says_how_to_build_it(tmp_path: Path) -> None:
    answer = asyncio.run(get(WebUi(tmp_path / "nothing"), "/"))
    assert answer.status_code == 503
    assert "make ui" in answer.text
