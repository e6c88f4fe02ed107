"""How fast the web UI's fleet view draws and answers with 2,000 sites, in Debian's Chromium,
next to the same page with 20 sites measured in the same run.

A real hub (SQLite) is seeded with ``--sites`` sites scattered over nine regions (three quarters
report once, so they show Ready and then Unreachable as the hub's grace runs out; one in ten has
demand, so circles differ in size), then the page is opened, signed in and timed:

- **first render**: the map's first drawing of every site, as the page measures it itself
  (``window.edgefleetMetrics``: from the start of the render to the next animation frame, so
  style, layout and paint are in); median of ``--loads`` page loads;
- **sign-in to map**: from the click on "Sign in" until every circle is in the page, measured
  from here (it includes reading /sites, /apps and /demand over loopback and Playwright's own
  round trips);
- **update**: re-drawing after the stream says sites changed (sites turning Unreachable), as
  the page measures it;
- **select a site**: click a circle until its details show; **filter**: type in the site filter
  until the list shows the match (both from here, with Playwright's round trips);
- **heap**: the page's JavaScript heap once drawn (Chromium's ``performance.memory``);
- **hub**: how long the hub takes to answer the site list the page reads first, and its size.

The reference for "responsive" is 100 ms: a reaction within it feels immediate.

    .venv/bin/python bench/ui_render.py [--sites 2000] [--loads 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from playwright.sync_api import Browser, Page, expect, sync_playwright

from edgefleet.localfleet import LocalFleet, free_port
from tests.support.browser import launch, report, seed_store, sign_in, world_sites

BUDGET_MS = 100.0


def metrics(page: Page, kind: str, sites: int) -> list[float]:
    found: list[dict[str, Any]] = page.evaluate("() => window.edgefleetMetrics || []")
    return [
        float(m["ms"])
        for m in found
        if m.get("view") == "fleet" and m.get("kind") == kind and m.get("sites") == sites
    ]


def measure(browser: Browser, count: int, loads: int) -> dict[str, float]:
    """The figures for one fleet of ``count`` sites."""
    with tempfile.TemporaryDirectory() as tmp:
        fleet = LocalFleet(
            workdir=Path(tmp) / "fleet",
            hub_port=free_port(),
            dns_port=free_port(),
            heartbeat_grace=20.0,
        )
        sites = world_sites(count)
        seed_store(fleet, sites)
        with fleet.running():
            fleet.start_hub()
            report(fleet, sites, ready=count * 3 // 4, demand=count // 10)
            token = fleet.admin_token or ""
            # What the page waits for at sign-in, before it can draw: the hub's site list.
            with httpx.Client(headers=fleet.headers, timeout=60) as client:
                reads = []
                for _ in range(3):
                    started = time.perf_counter()
                    listed = client.get(f"{fleet.hub_url}/api/v1/sites")
                    reads.append((time.perf_counter() - started) * 1000)
                listed.raise_for_status()
                size = len(listed.content)
            firsts, sign_ins = [], []
            for _ in range(loads):
                # A new context each time: nothing cached, no token kept from the last load.
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                started = time.perf_counter()
                sign_in(page, fleet.hub_url, token)
                expect(page.locator("circle.site")).to_have_count(count, timeout=60_000)
                sign_ins.append((time.perf_counter() - started) * 1000)
                page.wait_for_function(
                    "n => (window.edgefleetMetrics || []).some(m => m.view === 'fleet' && "
                    "m.kind === 'first' && m.sites === n)",
                    arg=count,
                )
                firsts.append(metrics(page, "first", count)[-1])
                if len(firsts) < loads:
                    context.close()
            heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : 0")
            # Updates: the seeded sites miss their next heartbeat and turn Unreachable after the
            # hub's grace; the stream tells the page, which re-draws in place.
            page.wait_for_function(
                "n => (window.edgefleetMetrics || []).some(m => m.view === 'fleet' && "
                "m.kind === 'update' && m.sites === n)",
                arg=count,
                timeout=60_000,
            )
            updates = metrics(page, "update", count)
            # Interactions.
            selects = []
            for name in ("s0007", "s0100", "s1000"):
                if int(name[1:]) > count:
                    continue
                started = time.perf_counter()
                page.locator(f'circle.site[data-site="{name}"]').dispatch_event("click")
                expect(page.get_by_role("region", name=f"Site {name}")).to_be_visible()
                selects.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            page.get_by_label("Filter sites").fill("s0013")
            table = page.get_by_role("table", name="Sites")
            expect(table.get_by_role("button", name="s0013")).to_be_visible()
            expect(table.locator("tbody tr")).to_have_count(1)
            filtering = (time.perf_counter() - started) * 1000
            context.close()
    return {
        "first": statistics.median(firsts),
        "first_max": max(firsts),
        "sign_in": statistics.median(sign_ins),
        "update": statistics.median(updates),
        "update_max": max(updates),
        "updates": float(len(updates)),
        "select": statistics.median(selects),
        "filter": filtering,
        "heap_mb": heap / 2**20,
        "sites_api": min(reads),
        "sites_kb": size / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=2000)
    parser.add_argument("--reference", type=int, default=20)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        print(f"Chromium {browser.version}, {args.loads} page loads per fleet")
        big = measure(browser, args.sites, args.loads)
        small = measure(browser, args.reference, args.loads)
        browser.close()
    rows = [
        ("first render of the map (page's own)", "first", "ms"),
        ("  slowest of the loads", "first_max", "ms"),
        ("sign-in click to every circle drawn", "sign_in", "ms"),
        ("re-draw on a stream update (page's own)", "update", "ms"),
        ("  slowest update", "update_max", "ms"),
        ("click a site to its details", "select", "ms"),
        ("type a filter to the filtered list", "filter", "ms"),
        ("JavaScript heap", "heap_mb", "MiB"),
        ("hub: GET /api/v1/sites (best of 3)", "sites_api", "ms"),
        ("hub: its answer", "sites_kb", "KiB"),
    ]
    print(f"{'':42} {args.sites:>7} sites {args.reference:>7} sites   budget")
    for label, key, unit in rows:
        budget = (
            f"{BUDGET_MS:.0f} ms" if unit == "ms" and key not in ("sign_in", "sites_api") else ""
        )
        print(f"{label:42} {big[key]:>9.1f} {unit:<3} {small[key]:>9.1f} {unit:<3} {budget:>8}")
    print(f"updates seen: {big['updates']:.0f} with {args.sites} sites")


if __name__ == "__main__":
    main()
