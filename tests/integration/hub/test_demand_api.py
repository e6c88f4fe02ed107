"""Demand through a real hub process: agents post reports, clients read the decayed matrix."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from edgefleet.agent.demand import DemandCounter, DemandReporter
from edgefleet.agent.hubclient import HubClient, PooledTransport
from edgefleet.client import HubError
from edgefleet.hub.demand import DEFAULT_TAU, window_rate
from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import AppDemand, DemandReport, DemandRow
from tests.factories import make_app, make_site

DEADLINE = 15.0
WINDOW = 10.0


def post(fleet: LocalFleet, site: str, report: DemandReport) -> httpx.Response:
    return httpx.post(
        f"{fleet.hub_url}/api/v1/agent/sites/{site}/demand",
        content=report.model_dump_json(by_alias=True),
        headers={"Content-Type": "application/json", **fleet.headers},
    )


def report(site: str, seq: int, rows: list[DemandRow]) -> DemandReport:
    end = datetime.now(UTC)
    return DemandReport(
        site=site,
        seq=seq,
        window_start=end - timedelta(seconds=WINDOW),
        window_seconds=WINDOW,
        rows=rows,
    )


def by_origin(demand: list[AppDemand]) -> dict[str, AppDemand]:
    return {d.origin: d for d in demand}


def test_reported_demand_comes_back_decayed(fleet: LocalFleet) -> None:
    with fleet.client() as client:
        client.apply(make_site("paris"))
        client.apply(make_site("lyon"))
        client.apply(make_app())
        assert client.app_demand("demo", "hello") == []
        sent = time.monotonic()
        reply = post(
            fleet,
            "paris",
            report(
                "paris",
                1,
                [
                    ("demo/hello", "paris", 600, 300.0, 120),
                    ("demo/hello", "lyon", 60, 3.0, 0),
                    ("demo/unknown", "paris", 600, 300.0, 0),  # no such app: ignored
                ],
            ),
        )
        assert reply.status_code == 204, reply.text
        demand = wait_for(
            lambda: client.app_demand("demo", "hello"), timeout=DEADLINE, what="demand written"
        )
        age = time.monotonic() - sent
        # Busiest first; each rate is the window's, decayed by at most the time since it ended.
        assert [d.origin for d in demand] == ["paris", "lyon"]
        paris = demand[0]
        low = math.exp(-(age + 1.0) / DEFAULT_TAU)
        for value, count in (
            (paris.requests_per_second, 600),
            (paris.concurrency, 300.0),
            (paris.dns_per_second, 120),
        ):
            fresh = window_rate(count, WINDOW, DEFAULT_TAU)
            assert fresh * low <= value <= fresh * 1.0001, (value, fresh)
        assert 8.0 < paris.requests_per_second < 9.3  # 60/s over 10 s, tau 60 s: 9.21 at most
        assert paris.last_request is not None
        assert abs((datetime.now(UTC) - paris.last_request).total_seconds()) < 60
        assert demand[1].dns_per_second == 0

        # A resend of seq 1 is ignored; seq 2 from lyon counts.
        assert post(fleet, "paris", report("paris", 1, [])).status_code == 204
        assert (
            post(
                fleet,
                "paris",
                report("paris", 1, [("demo/hello", "paris", 6000, 0.0, 0)]),
            ).status_code
            == 204
        )
        assert (
            post(fleet, "lyon", report("lyon", 2, [("demo/hello", "nice", 10, 0.1, 0)])).status_code
            == 204
        )
        later = wait_for(
            lambda: (d := by_origin(client.app_demand("demo", "hello"))) and "nice" in d and d,
            timeout=DEADLINE,
            what="the second report written",
        )
        assert later["paris"].requests_per_second <= paris.requests_per_second
        with pytest.raises(HubError) as missing:
            client.app_demand("demo", "nope")
        assert missing.value.status == 404


def test_the_agents_reporter_speaks_the_hubs_language(
    sqlite_fleet: LocalFleet, tmp_path: Path
) -> None:
    with sqlite_fleet.client() as client:
        client.apply(make_site("paris"))
        client.apply(make_app())

    async def report_once() -> int:
        counter = DemandCounter()
        for _ in range(30):
            counter.request("demo/hello", "paris", 0.2)
        hub = HubClient(PooledTransport(sqlite_fleet.hub_url), token=sqlite_fleet.admin_token)
        try:
            reporter = DemandReporter(
                "paris", counter, hub, tmp_path, dns_tally=None, window=WINDOW
            )
            return await reporter.flush_once()
        finally:
            await hub.aclose()

    assert asyncio.run(report_once()) == 1
    with sqlite_fleet.client() as client:
        (paris,) = wait_for(
            lambda: client.app_demand("demo", "hello"), timeout=DEADLINE, what="demand written"
        )
    assert paris.origin == "paris" and paris.requests_per_second > 0
    # 30 requests of 0.2 s: 6 busy seconds; a ratio of requests, whatever the window was.
    assert math.isclose(paris.concurrency / paris.requests_per_second, 0.2, rel_tol=1e-6)


def test_bad_demand_reports_are_refused(sqlite_fleet: LocalFleet) -> None:
    base = sqlite_fleet.hub_url
    with sqlite_fleet.client() as client:
        client.apply(make_site("paris"))
    wrong_site = post(sqlite_fleet, "paris", report("lyon", 1, []))
    assert wrong_site.status_code == 422
    assert "URL names 'paris'" in wrong_site.json()["detail"]
    unknown = post(sqlite_fleet, "atlantis", report("atlantis", 1, []))
    assert unknown.status_code == 404
    assert "atlantis" in unknown.json()["detail"]
    body = report("paris", 1, []).model_dump(mode="json", by_alias=True)
    body["rows"] = [["no-slash", "paris", 1, 0.1, 0]]
    auth = sqlite_fleet.headers
    invalid = httpx.post(f"{base}/api/v1/agent/sites/paris/demand", json=body, headers=auth)
    assert invalid.status_code == 422
    assert ["body", "rows"] in [e["loc"] for e in invalid.json()["detail"]]
    long_row = ("demo/hello", "x" * 64, 1, 0.1, 0)
    long_origin = post(sqlite_fleet, "paris", report("paris", 1, [long_row]))
    assert long_origin.status_code == 422
    assert "rows[0]" in long_origin.json()["detail"]
    body["rows"] = []
    body["windowSeconds"] = 0
    url = f"{base}/api/v1/agent/sites/paris/demand"
    assert httpx.post(url, json=body, headers=auth).status_code == 422
