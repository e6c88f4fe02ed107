"""Debian's Chromium driven by Playwright, and fleets of many sites to show it.

Shared by the web UI's browser tests and ``bench/ui_render.py``. The browser is the system's
(``tools/browser.sh`` installs it); Playwright never downloads one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, Playwright, expect

from edgefleet.hub.store import Store
from edgefleet.localfleet import LocalFleet
from edgefleet.model import Site
from edgefleet.sim.world import world_sites as sim_world_sites
from tests.factories import make_app

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


def world_sites(count: int, *, seed: int = 7) -> list[Site]:
    """``count`` sites scattered over nine regions of three zones each (names ``s0001``...)."""
    return sim_world_sites(count, prefix="s", width=4, seed=seed)


def seed_store(fleet: LocalFleet, sites: Iterable[Site], *, ready: int = 0) -> None:
    """Write ``sites`` straight into the fleet's store in one transaction, before its hub
    starts, and a heartbeat of the first ``ready`` of them sent just now (they show Ready until
    the hub's grace runs out, then Unreachable): 10,000 sites in a few seconds, where heartbeats
    posted to a hub one at a time would take longer than the grace they must beat."""
    sites = list(sites)
    fleet.workdir.mkdir(parents=True, exist_ok=True)
    store = Store(fleet.db_url)
    try:
        store.migrate()
        for start in range(0, len(sites), 1000):
            store.objects.put_many(sites[start : start + 1000])
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
