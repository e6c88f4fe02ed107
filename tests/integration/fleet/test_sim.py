"""A few hundred simulated sites (``edgefleet sim``, a process of its own) against a real hub:
they join with bulk-made join tokens, become Ready, run an app at every site, take their share
of the routing table whole and then as deltas naming only what changed near them, fail when told,
and when some die the hub notices and runs their replicas elsewhere."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edgefleet.localfleet import LocalFleet, SimProcess, free_port, wait_for

SITES = 150
TENANT = "ops"


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFleet, SimProcess]]:
    workdir = tmp_path_factory.mktemp("sim")
    fleet = LocalFleet(workdir=workdir / "hub", hub_port=free_port(), dns_port=free_port())
    with fleet.running():
        fleet.start_hub()
        sim = SimProcess.start(
            hub=fleet.hub_url, token=fleet.admin_token or "", sites=SITES, log=workdir / "sim.log"
        )
        try:
            sim.wait_joined(timeout=120)
            yield fleet, sim
        finally:
            sim.stop()


def _get(fleet: LocalFleet, path: str, **params: Any) -> Any:
    reply = httpx.get(f"{fleet.hub_url}{path}", params=params, headers=fleet.headers, timeout=30)
    reply.raise_for_status()
    return reply.json()


def _phases(fleet: LocalFleet) -> dict[str, str]:
    items = _get(fleet, "/api/v1/sites", limit=1000)["items"]
    return {s["metadata"]["name"]: s.get("status", {}).get("phase", "") for s in items}


def _put_app(fleet: LocalFleet, name: str, placement: dict[str, Any]) -> None:
    body = {
        "metadata": {"name": name, "tenant": TENANT},
        "spec": {
            "workload": {"type": "container", "image": "registry.local/x:1"},
            "placement": placement,
            "scaling": {"maxReplicas": 100_000},
        },
    }
    reply = httpx.put(
        f"{fleet.hub_url}/api/v1/tenants/{TENANT}/apps/{name}",
        json=body,
        headers=fleet.headers,
        timeout=30,
    )
    assert reply.status_code in (200, 201), reply.text


def _app(fleet: LocalFleet, name: str) -> dict[str, Any]:
    status: dict[str, Any] = _get(fleet, f"/api/v1/tenants/{TENANT}/apps/{name}")["status"]
    return status


def test_simulated_sites_join_and_run_an_app_everywhere(
    sims: tuple[LocalFleet, SimProcess],
) -> None:
    fleet, sim = sims
    assert wait_for(
        lambda: list(_phases(fleet).values()).count("Ready") == SITES,
        timeout=60,
        what="every simulated site Ready",
    )
    stats = sim.stats()
    # Each took its share of the routing table whole once, at least.
    assert stats["joined"] == SITES and stats["routes_taken"] >= SITES
    _put_app(fleet, "everywhere", {"replicasPerSite": 1})
    assert wait_for(
        lambda: _app(fleet, "everywhere").get("readyReplicas", 0) == SITES,
        timeout=60,
        what="a replica ready at every site",
    )
    assert sim.stats()["apps_ready"][f"{TENANT}/everywhere"] == SITES
    # Told to fail at two sites, the app's replicas there stop being ready, and the hub sees it.
    failing = sim.names()[:2]
    assert sim.fail(f"{TENANT}/everywhere", failing) == failing
    assert wait_for(
        lambda: _app(fleet, "everywhere").get("readyReplicas", 0) == SITES - 2,
        timeout=30,
        what="the hub to see two sites' replicas fail",
    )
    sim.fail(f"{TENANT}/everywhere", failing, failing=False)
    assert wait_for(
        lambda: _app(fleet, "everywhere").get("readyReplicas", 0) == SITES,
        timeout=30,
        what="the replicas to recover",
    )


def test_a_site_record_change_reaches_only_the_shares_that_name_it(
    sims: tuple[LocalFleet, SimProcess],
) -> None:
    fleet, sim = sims

    def quiet() -> bool:
        # No routing news for a few seconds: what the fleet did before has reached every share.
        first = sim.stats()["routes_taken"]
        time.sleep(2.5)
        return bool(sim.stats()["routes_taken"] == first)

    wait_for(quiet, timeout=60, what="the shares to settle")
    name = sim.names()[-1]
    site = _get(fleet, f"/api/v1/sites/{name}")
    before = sim.stats()
    site["spec"]["addresses"]["ip"] = "10.255.255.7"
    body = {"metadata": {"name": name}, "spec": site["spec"]}
    reply = httpx.put(
        f"{fleet.hub_url}/api/v1/sites/{name}", json=body, headers=fleet.headers, timeout=30
    )
    assert reply.status_code == 200, reply.text

    def told() -> int:
        return int(sim.stats()["routes_taken"] - before["routes_taken"])

    assert wait_for(lambda: told() > 0, timeout=20, what="the change to reach the shares")
    # Give every share its second to be sent, then count: the site's neighbourhood, not the
    # fleet. Each got a delta of a few hundred bytes, not the whole table.
    time.sleep(3.0)
    count = told()
    assert 0 < count < SITES // 3, count
    per_site = (sim.stats()["routes_bytes"] - before["routes_bytes"]) / count
    whole = len(httpx.get(f"{fleet.hub_url}/api/v1/routing-table", headers=fleet.headers).content)
    assert per_site < whole / 10, (per_site, whole)


def test_dead_sites_are_noticed_and_their_replicas_run_elsewhere(
    sims: tuple[LocalFleet, SimProcess],
) -> None:
    fleet, sim = sims
    _put_app(fleet, "spread", {"replicas": 12})
    assert wait_for(
        lambda: _app(fleet, "spread").get("readyReplicas", 0) == 12,
        timeout=60,
        what="the spread app ready",
    )
    hosts = [s["site"] for s in _app(fleet, "spread")["sites"] if s.get("ready")]
    victims = hosts[:2]
    assert sim.kill(victims) == victims
    assert wait_for(
        lambda: all(_phases(fleet)[v] == "Unreachable" for v in victims),
        timeout=60,
        what="the hub to mark the dead sites Unreachable",
    )

    def elsewhere() -> bool:
        sites = _app(fleet, "spread")["sites"]
        return sum(s.get("ready", 0) for s in sites if s["site"] not in victims) >= 12

    assert wait_for(elsewhere, timeout=60, what="the replicas to run elsewhere")
    # Revived, they are Ready again.
    assert sim.revive(victims) == victims
    assert wait_for(
        lambda: all(_phases(fleet)[v] == "Ready" for v in victims),
        timeout=60,
        what="the revived sites Ready",
    )
