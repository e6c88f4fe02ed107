"""Debian's Chromium driven by Playwright, and fleets of many sites to show it.

Shared by the web UI's browser tests and ``bench/ui_render.py``. The browser is the system's
(``tools/browser.sh`` installs it); Playwright never downloads one.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, Playwright, expect
from sqlalchemy import insert, select

from edgefleet.hub.schema import objects
from edgefleet.hub.store import Store
from edgefleet.hub.store.engine import next_revision
from edgefleet.localfleet import LocalFleet
from edgefleet.model import Site
from tests.factories import make_app, make_site

CHROMIUM = Path("/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # No connection to anything but the page's own hub: no updates, no sync, no field trials.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
"""Where screenshots go (git-ignored; CI keeps the folder as the run's artifacts)."""


def launch(playwright: Playwright) -> Browser:
    """Headless Debian Chromium."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


def sign_in(page: Page, hub_url: str, token: str) -> None:
    """Open the UI and sign in with ``token``; returns once the fleet view shows."""
    page.goto(f"{hub_url}/ui/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Views")).to_be_visible()


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot in ``ARTIFACTS``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Land boxes (lat, lon ranges) per region: sites scattered over where edge sites would be.
_REGIONS = {
    "eu-west": ((40.0, 55.0), (-9.0, 15.0)),
    "eu-north": ((55.0, 65.0), (5.0, 30.0)),
    "us-east": ((30.0, 45.0), (-90.0, -72.0)),
    "us-west": ((33.0, 48.0), (-123.0, -105.0)),
    "latam": ((-35.0, 0.0), (-70.0, -40.0)),
    "africa": ((-30.0, 10.0), (15.0, 35.0)),
    "india": ((10.0, 28.0), (72.0, 87.0)),
    "asia-east": ((25.0, 40.0), (105.0, 140.0)),
    "oceania": ((-38.0, -20.0), (115.0, 150.0)),
}


def world_sites(count: int, *, seed: int = 7) -> list[Site]:
    """``count`` sites scattered over nine regions of three zones each (names ``s0001``...)."""
    rng = random.Random(seed)
    regions = sorted(_REGIONS)
    sites = []
    for i in range(count):
        region = regions[i % len(regions)]
        (lat0, lat1), (lon0, lon1) = _REGIONS[region]
        sites.append(
            make_site(
                f"s{i + 1:04d}",
                region=region,
                zone=f"{region}-{'abc'[rng.randrange(3)]}",
                lat=round(rng.uniform(lat0, lat1), 3),
                lon=round(rng.uniform(lon0, lon1), 3),
                ip=f"127.2.{i // 250}.{i % 250 + 1}",
            )
        )
    return sites


def seed_store(fleet: LocalFleet, sites: Iterable[Site], *, ready: int = 0) -> None:
    """Write ``sites`` straight into the fleet's store, before its hub starts, and a heartbeat
    of the first ``ready`` of them sent just now (they show Ready until the hub's grace runs
    out, then Unreachable): 10,000 sites in about two seconds.

    Through the API each site would wait for the placement and routing rounds the one before it
    set off; even ``Store.objects.put`` takes 2 ms a site (a transaction, then the site read
    back with its status), 20 s for 10,000. So the first site is written by ``put``, and the
    others are copies of the row it wrote, each with its own uid, name, labels, spec and
    revision from the store's counter, inserted in one transaction. Heartbeats posted to a hub
    take longer still (7,500 took a minute, longer than the grace they must beat).
    """
    sites = list(sites)
    fleet.workdir.mkdir(parents=True, exist_ok=True)
    store = Store(fleet.db_url)
    try:
        store.migrate()
        if not sites:
            return
        first = store.objects.put(sites[0])[0]
        with store.engine.begin() as conn:
            template = conn.execute(
                select(objects).where(objects.c.uid == first.metadata.uid)
            ).one()
            rows = []
            for site in sites[1:]:
                row = template._asdict()
                row.update(
                    uid=str(uuid.uuid4()),
                    name=site.metadata.name,
                    meta={
                        "labels": site.metadata.labels,
                        "annotations": site.metadata.annotations,
                    },
                    spec=site.spec.model_dump(mode="json", by_alias=True),
                    resource_version=next_revision(conn),
                )
                rows.append(row)
            if rows:
                conn.execute(insert(objects), rows)
        now = datetime.now(UTC)
        store.observed.record_heartbeats([(s.metadata.name, now, 0, None) for s in sites[:ready]])
    finally:
        store.close()


def report(fleet: LocalFleet, sites: Iterable[Site], *, demand: int) -> None:
    """The first ``demand`` of ``sites`` report some traffic (their load), through the hub."""
    sites = list(sites)
    base = fleet.hub_url
    with httpx.Client(headers=fleet.headers, timeout=30) as client:
        client.put(
            f"{base}/api/v1/tenants/demo/apps/hello",
            json=make_app("hello", tenant="demo", placement={"replicas": 0}).model_dump(
                mode="json", by_alias=True, exclude_none=True
            ),
        ).raise_for_status()
        # One report carries every origin's rows (an agent counts the clients of any site that
        # spill to it); the hub writes reports once a second, and each POST waits for that.
        rng = random.Random(11)
        end = datetime.now(UTC)
        rows = []
        for site in sites[:demand]:
            requests = rng.choice([10, 100, 1000, 10_000])
            rows.append(["demo/hello", site.metadata.name, requests, requests / 100, 0])
        reporter = sites[0].metadata.name
        body: dict[str, Any] = {
            "site": reporter,
            "seq": 1,
            "windowStart": (end - timedelta(seconds=10)).isoformat(),
            "windowSeconds": 10,
            "rows": rows,
        }
        client.post(f"{base}/api/v1/agent/sites/{reporter}/demand", json=body).raise_for_status()
