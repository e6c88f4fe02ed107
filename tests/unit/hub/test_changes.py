"""Which changes a dashboard is told of (edgefleet.hub.changes), and the web UI's file server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from edgefleet.hub.changes import KINDS, Snapshot, Watcher, changed
from edgefleet.hub.webui import WebUi

BASE = Snapshot(
    sites=1,
    apps={"t1": 10, "t2": 20},
    events={None: 5, "t1": 6, "t2": 7},
    demand={"t1": 100},
)


def test_nothing_changed_tells_nothing() -> None:
    assert changed(BASE, BASE, None) == frozenset()
    assert changed(BASE, BASE, frozenset({"t1"})) == frozenset()


def test_sites_are_everyones_news() -> None:
    after = Snapshot(sites=2, apps=BASE.apps, events=BASE.events, demand=BASE.demand)
    assert changed(BASE, after, None) == {"sites"}
    assert changed(BASE, after, frozenset({"t1"})) == {"sites"}


def test_a_tenants_changes_reach_only_those_who_see_it() -> None:
    after = Snapshot(
        sites=1,
        apps={"t1": 10, "t2": 21},
        events={None: 5, "t1": 6, "t2": 8},
        demand={"t1": 100, "t2": 1},  # t2's first demand
    )
    assert changed(BASE, after, None) == {"apps", "events", "demand"}
    assert changed(BASE, after, frozenset({"t2"})) == {"apps", "events", "demand"}
    assert changed(BASE, after, frozenset({"t1"})) == frozenset()
    assert changed(BASE, after, frozenset()) == frozenset()


def test_a_tenant_that_goes_away_is_a_change() -> None:
    after = Snapshot(sites=1, apps={"t1": 10}, events=BASE.events, demand={})
    assert changed(BASE, after, frozenset({"t2"})) == {"apps"}
    assert changed(BASE, after, frozenset({"t1"})) == {"demand"}


def test_fleet_events_are_for_those_who_see_every_tenant() -> None:
    after = Snapshot(sites=1, apps=BASE.apps, events={**BASE.events, None: 9}, demand=BASE.demand)
    assert changed(BASE, after, None) == {"events"}
    assert changed(BASE, after, frozenset({"t1", "t2"})) == frozenset()


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
