"""What a dashboard reads from a real hub: the stream of changes, the fleet's demand, a site's
neighbours, and the web UI's files."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from edgefleet.localfleet import LocalFleet, free_port, wait_for
from tests.factories import make_app, make_site
from tests.integration.hub.test_demand_api import post, report


@dataclass
class Stream:
    """An open ``/api/v1/stream``, read by a thread into a queue of (event, data) pairs."""

    events: queue.Queue[tuple[str, str]] = field(default_factory=queue.Queue)
    status: int = 0
    content_type: str = ""

    def next_event(self, timeout: float = 15.0) -> tuple[str, str]:
        return self.events.get(timeout=timeout)

    def wait_for(self, kind: str, timeout: float = 15.0) -> list[str]:
        """Every event kind up to and including the first ``kind``."""
        seen = []
        while True:
            event, _ = self.next_event(timeout)
            seen.append(event)
            if event == kind:
                return seen

    def drain(self, seconds: float) -> list[str]:
        """The kinds told in the next ``seconds``."""
        seen = []
        try:
            while True:
                seen.append(self.next_event(seconds)[0])
        except queue.Empty:
            return seen


@contextmanager
def stream(fleet: LocalFleet, headers: dict[str, str]) -> Iterator[Stream]:
    opened = Stream()
    started = threading.Event()
    stop = threading.Event()

    def read() -> None:
        with httpx.stream(
            "GET", f"{fleet.hub_url}/api/v1/stream", headers=headers, timeout=60
        ) as reply:
            opened.status = reply.status_code
            opened.content_type = reply.headers.get("content-type", "")
            started.set()
            event = ""
            for line in reply.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    opened.events.put((event, line.removeprefix("data: ")))
            opened.events.put(("closed", ""))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(10)
    try:
        yield opened
    finally:
        stop.set()


@pytest.fixture
def patient_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """A hub whose agentless sites stay Pending for minutes, not 30 s: a site that turns
    Unreachable while a test waits for quiet is news the test did not make."""
    local = LocalFleet(
        workdir=tmp_path / "fleet",
        hub_port=free_port(),
        dns_port=free_port(),
        heartbeat_grace=60.0,
    )
    with local.running():
        local.start_hub()
        yield local


def test_the_stream_tells_each_watcher_what_changed_in_its_tenants(
    patient_fleet: LocalFleet,
) -> None:
    fleet = patient_fleet
    with fleet.client() as admin:
        admin.apply(make_site("paris"))
        admin.apply(make_app("a", tenant="t1"))
        admin.apply(make_app("b", tenant="t2"))
        dev = admin.create_token("dev", "developer", tenants=["t1"], ttl=600)
        dev_headers = {"Authorization": f"Bearer {dev.token}"}
        # Placement has looked at both apps (and said so in events) before the streams open.
        wait_for(
            lambda: all(
                admin.get_app(t, n).status.observed_generation == 1
                for t, n in (("t1", "a"), ("t2", "b"))
            ),
            timeout=30,
            what="placement of both apps",
        )
        # ... and is done: passes started by the two creations may each write (and say so)
        # a moment after both apps show placed; the streams open once the event log is still.
        seen: list[int] = []

        def still() -> bool:
            seen.append(len(admin.events(limit=1000)))
            time.sleep(0.5)
            return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

        wait_for(still, timeout=30, what="placement to be done")
        with stream(fleet, fleet.headers) as everything, stream(fleet, dev_headers) as t1:
            assert everything.status == t1.status == 200
            assert everything.content_type.startswith("text/event-stream")
            for watcher in (everything, t1):
                assert watcher.next_event()[0] == "ready"
                # A new watcher is told of everything once, after its first poll.
                assert set(watcher.wait_for("demand")) >= {"sites", "apps", "events", "demand"}
            assert everything.drain(2.5) == t1.drain(0.1) == []  # nothing changed: quiet

            # Another tenant's app changes: the admin hears of it, t1's developer does not.
            admin.apply(make_app("b", tenant="t2", scaling={"maxReplicas": 7}))
            assert "apps" in everything.wait_for("apps")
            assert "apps" not in t1.drain(3.0)

            # Its own tenant's app changes: both hear of it.
            admin.apply(make_app("a", tenant="t1", scaling={"maxReplicas": 7}))
            assert "apps" in t1.wait_for("apps")
            assert "apps" in everything.wait_for("apps")

            # A site's event (the fleet's own) is the operators' news, not a developer's; the
            # site itself is news to everyone who shows the map. (A label moves no replica, so
            # no app event follows.)
            everything.drain(1.5)
            t1.drain(0.1)
            admin.apply(make_site("paris", labels={"rack": "r2"}))
            assert "events" in everything.wait_for("events")
            told = t1.wait_for("sites")
            assert "events" not in told + t1.drain(2.0)

            # Revoked: the next wake ends the developer's stream with the reason.
            admin.revoke_token(dev.id)
            admin.apply(make_app("a", tenant="t1", scaling={"maxReplicas": 8}))
            kinds = t1.wait_for("refused")
            assert "apps" not in kinds
            assert t1.next_event() == ("closed", "")
            assert "apps" in everything.wait_for("apps")


def test_a_site_cannot_watch_and_a_bad_token_is_refused(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    with fleet.client() as admin:
        admin.apply(make_site("paris"))
    refused = httpx.get(
        f"{fleet.hub_url}/api/v1/stream",
        headers={"Authorization": "Bearer efu_0123456789abcdef_" + "A" * 43},
        timeout=10,
    )
    assert refused.status_code == 401


def test_fleet_demand_is_every_visible_apps_demand_per_origin(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    with fleet.client() as admin:
        admin.apply(make_site("paris"))
        admin.apply(make_site("lyon", lat=45.76, lon=4.84))
        admin.apply(make_app("a", tenant="t1"))
        admin.apply(make_app("b", tenant="t2"))
        viewer = admin.create_token("v", "viewer", tenants=["t1"], ttl=600)
    rows = [
        ("t1/a", "paris", 600, 30.0, 0),
        ("t1/a", "lyon", 60, 3.0, 0),
        ("t2/b", "lyon", 300, 9.0, 0),
    ]
    assert post(fleet, "paris", report("paris", 1, rows)).status_code == 204

    def demand(headers: dict[str, str]) -> list[dict[str, object]]:
        reply = httpx.get(f"{fleet.hub_url}/api/v1/demand", headers=headers, timeout=10)
        assert reply.status_code == 200, reply.text
        body: list[dict[str, object]] = reply.json()
        return body

    every = wait_for(lambda: len(demand(fleet.headers)) == 3 and demand(fleet.headers), timeout=15)
    assert [(d["tenant"], d["app"], d["origin"]) for d in every] == [
        ("t1", "a", "paris"),
        ("t1", "a", "lyon"),
        ("t2", "b", "lyon"),
    ]
    # The same figures as the app's own demand.
    with fleet.client() as admin:
        own = admin.app_demand("t1", "a")
    assert [d.origin for d in own] == ["paris", "lyon"]
    assert abs(own[0].requests_per_second - float(every[0]["requestsPerSecond"])) < 0.5  # type: ignore[arg-type]
    # A viewer of t1 sees t1's only.
    seen = demand({"Authorization": f"Bearer {viewer.token}"})
    assert {(d["tenant"], d["app"]) for d in seen} == {("t1", "a")}


def test_neighbours_are_the_nearest_sites_with_the_sites_own_probe_verdicts(
    sqlite_fleet: LocalFleet,
) -> None:
    fleet = sqlite_fleet
    places = {
        "paris": (48.85, 2.35),
        "lyon": (45.76, 4.84),
        "london": (51.51, -0.13),
        "berlin": (52.52, 13.40),
        "tokyo": (35.68, 139.69),
    }
    with fleet.client() as admin:
        for name, (lat, lon) in places.items():
            admin.apply(make_site(name, lat=lat, lon=lon))
    beat = {"site": "paris", "observedRevision": 0, "probes": {"london": True, "lyon": False}}
    reply = httpx.post(
        f"{fleet.hub_url}/api/v1/agent/sites/paris/heartbeat",
        json=beat,
        headers=fleet.headers,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    reply = httpx.get(
        f"{fleet.hub_url}/api/v1/sites/paris/neighbours",
        params={"count": 3},
        headers=fleet.headers,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["site"] == "paris"
    near = body["neighbours"]
    # Nearest first: London 344 km, Lyon 392 km, Berlin 878 km; Tokyo is not among 3.
    assert [n["site"] for n in near] == ["london", "lyon", "berlin"]
    assert 330 < near[0]["distanceKm"] < 360 and 380 < near[1]["distanceKm"] < 400
    assert near[0]["estimatedRttMs"] < near[2]["estimatedRttMs"]
    assert [n["probe"] for n in near] == ["up", "down", None]
    assert all(n["phase"] == "Pending" for n in near)
    missing = httpx.get(
        f"{fleet.hub_url}/api/v1/sites/nowhere/neighbours", headers=fleet.headers, timeout=10
    )
    assert missing.status_code == 404
    assert missing.json()["detail"] == "site 'nowhere' not found"


def test_the_web_ui_is_served_without_a_token_under_a_strict_policy(
    sqlite_fleet: LocalFleet,
) -> None:
    base = sqlite_fleet.hub_url
    moved = httpx.get(f"{base}/ui", timeout=10)
    assert moved.status_code == 307 and moved.headers["location"].endswith("/ui/")
    page = httpx.get(f"{base}/ui/", timeout=10)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert 'src="/ui/app.js"' in page.text and 'href="/ui/app.css"' in page.text
    script = httpx.get(f"{base}/ui/app.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    # (The browser tests check that the page asks nothing of any other host.)
    assert httpx.get(f"{base}/ui/../api/v1/sites", timeout=10).status_code in (401, 404)
    assert httpx.get(f"{base}/ui/secret.txt", timeout=10).status_code == 404
    assert httpx.post(f"{base}/ui/", timeout=10).status_code == 405
