"""A real fleet on loopback: hub process, agent processes, replica processes.

Covers apply, scale, move, delete, agent restart with adoption, hub restart and outage, and an
unreachable site whose replicas are kept while placement compensates elsewhere.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from edgefleet.client import Client
from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import Site
from tests.factories import make_app, make_site

pytestmark = pytest.mark.slow

# Each test gets its own loopback addresses, so a process left over by one can't answer another.
_subnets = itertools.count(10)


@pytest.fixture
def sites() -> list[Site]:
    """Three sites: two in eu-west, one in us-east."""
    net = next(_subnets)
    return [
        make_site("paris", region="eu-west", ip=f"127.0.{net}.1", lat=48.86, lon=2.35),
        make_site("london", region="eu-west", ip=f"127.0.{net}.2", lat=51.51, lon=-0.13),
        make_site("boston", region="us-east", ip=f"127.0.{net}.3", lat=42.36, lon=-71.06),
    ]


@pytest.fixture
def running(fleet: LocalFleet, sites: list[Site]) -> Iterator[LocalFleet]:
    """The hub on each engine, the three sites registered and their agents up."""
    with fleet.client() as client:
        for site in sites:
            client.apply(site)
    fleet.start_agents(sites)
    yield fleet


def placed(client: Client, name: str = "hello") -> dict[str, tuple[int, int]]:
    """(desired, ready) per site of an app."""
    app = client.get_app("demo", name)
    return {s.site: (s.desired, s.ready) for s in app.status.sites if s.desired or s.ready}


def settled(client: Client, expected: dict[str, int], name: str = "hello") -> bool:
    """True when the app has exactly ``expected`` replicas per site, all ready."""
    return placed(client, name) == {site: (n, n) for site, n in expected.items()}


def pids(client: Client, site: str, app: str = "demo/hello") -> list[int]:
    """PIDs of the app's replicas the site reports."""
    return sorted(r.pid for r in client.site_replicas(site).get(app, []) if r.pid)


def answers(fleet: LocalFleet, site: str, *, via_hub: bool = False) -> list[str]:
    """Call each ready replica of hello at ``site``; the site names they report.

    The replicas are found through the site's agent, or through the hub when the agent is away.
    """
    ip = fleet.sites[site].spec.addresses.ip
    if via_hub:
        with fleet.client() as client:
            found = client.site_replicas(site).get("demo/hello", [])
        ports = [r.port for r in found if r.ready]
    else:
        agent = f"http://{ip}:{fleet.sites[site].spec.addresses.ingress_port}/_edgefleet"
        reply = httpx.get(f"{agent}/replicas", timeout=3, headers=fleet.site_headers(site))
        found_raw = reply.json().get("demo/hello", [])
        ports = [r["port"] for r in found_raw if r["ready"]]
    return [httpx.get(f"http://{ip}:{port}/", timeout=3).json()["site"] for port in ports]


def alive(pid: int) -> bool:
    """True if the process exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_apply_scale_move_delete(running: LocalFleet) -> None:
    fleet = running
    with fleet.client() as client:
        client.apply(make_app(placement={"replicas": 2, "selector": {"regions": ["eu-west"]}}))
        wait_for(lambda: settled(client, {"paris": 1, "london": 1}), timeout=30, what="2 in eu")
        assert answers(fleet, "paris") == ["paris"]
        assert answers(fleet, "london") == ["london"]
        first_paris = pids(client, "paris")

        client.apply(make_app(placement={"replicas": 4, "selector": {"regions": ["eu-west"]}}))
        wait_for(lambda: settled(client, {"paris": 2, "london": 2}), timeout=30, what="scale up")
        assert set(first_paris) <= set(pids(client, "paris")), "scale-up restarted a replica"

        client.apply(make_app(placement={"replicas": 1, "selector": {"regions": ["eu-west"]}}))
        wait_for(
            lambda: sum(d for d, _ in placed(client).values()) == 1, timeout=30, what="scale down"
        )
        wait_for(
            lambda: sum(r for _, r in placed(client).values()) == 1,
            timeout=30,
            what="surplus replicas gone",
        )

        # Move: the selector now names the US region only.
        eu_pids = pids(client, "paris") + pids(client, "london")
        client.apply(make_app(placement={"replicas": 1, "selector": {"regions": ["us-east"]}}))
        wait_for(lambda: settled(client, {"boston": 1}), timeout=30, what="move to boston")
        assert answers(fleet, "boston") == ["boston"]
        wait_for(lambda: not any(alive(p) for p in eu_pids), timeout=30, what="eu replicas gone")

        boston_pids = pids(client, "boston")
        client.delete_app("demo", "hello")
        wait_for(lambda: not any(alive(p) for p in boston_pids), timeout=30, what="delete")
        wait_for(
            lambda: client.site_replicas("boston").get("demo/hello") is None,
            timeout=30,
            what="boston reports no replica",
        )


def test_agent_restart_adopts_replicas(running: LocalFleet) -> None:
    fleet = running
    with fleet.client() as client:
        client.apply(make_app(placement={"replicasPerSite": 1}))
        wait_for(
            lambda: settled(client, {"paris": 1, "london": 1, "boston": 1}),
            timeout=30,
            what="one per site",
        )
        before = pids(client, "paris")
        fleet.stop_agent("paris", signal.SIGKILL)
        assert all(alive(p) for p in before), "replicas must outlive their agent"
        assert answers(fleet, "paris", via_hub=True) == ["paris"]
        fleet.start_agent(fleet.sites["paris"])
        wait_for(
            lambda: settled(client, {"paris": 1, "london": 1, "boston": 1}),
            timeout=30,
            what="paris reports again",
        )
        assert pids(client, "paris") == before, "the new agent restarted the replica"
        [replica] = client.site_replicas("paris")["demo/hello"]
        assert replica.restarts == 0


def test_hub_restart_and_outage_change_nothing_at_sites(running: LocalFleet) -> None:
    fleet = running
    with fleet.client() as client:
        client.apply(make_app(placement={"replicasPerSite": 1}))
        wait_for(
            lambda: settled(client, {"paris": 1, "london": 1, "boston": 1}),
            timeout=30,
            what="one per site",
        )
        before = {site: pids(client, site) for site in ("paris", "london", "boston")}
    fleet.stop_hub()
    # The hub is away: every site keeps serving.
    for site in before:
        assert answers(fleet, site) == [site]
    # An agent restarted while the hub is away resumes from its cache.
    fleet.stop_agent("london", signal.SIGKILL)
    fleet.start_agent(fleet.sites["london"])
    agent_view = httpx.get(
        f"http://{fleet.sites['london'].spec.addresses.ip}:8080/_edgefleet/replicas",
        headers=fleet.site_headers("london"),
    ).json()
    assert [r["pid"] for r in agent_view["demo/hello"]] == before["london"]
    fleet.start_hub()
    with fleet.client() as client:
        wait_for(
            lambda: all(s.status.phase.value == "Ready" for s in client.list_sites()),
            timeout=30,
            what="sites Ready after hub restart",
        )
        wait_for(
            lambda: settled(client, {"paris": 1, "london": 1, "boston": 1}),
            timeout=30,
            what="status back",
        )
        assert {site: pids(client, site) for site in before} == before


def test_unreachable_site_keeps_replicas_and_is_compensated(running: LocalFleet) -> None:
    fleet = running
    with fleet.client() as client:
        client.apply(make_app(placement={"replicas": 2, "selector": {"regions": ["eu-west"]}}))
        wait_for(lambda: settled(client, {"paris": 1, "london": 1}), timeout=30, what="placed")
        paris_pids = pids(client, "paris")
        # Cut paris from the hub: its agent stops, its replica keeps running.
        fleet.stop_agent("paris", signal.SIGKILL)
        wait_for(
            lambda: client.get_site("paris").status.phase.value == "Unreachable",
            timeout=30,
            what="paris Unreachable",
        )
        # london takes the replica paris cannot be counted on for; paris keeps its assignment.
        wait_for(
            lambda: placed(client).get("london", (0, 0)) == (2, 2),
            timeout=30,
            what="london compensates",
        )
        assert placed(client)["paris"][0] == 1, "an unreachable site's replica was deleted"
        assert all(alive(p) for p in paris_pids)
        reasons = [e.reason for e in client.events(kind="Site", name="paris")]
        assert "Unreachable" in reasons
        # paris returns: placement goes back to one each, without duplicates.
        fleet.start_agent(fleet.sites["paris"])
        wait_for(
            lambda: settled(client, {"paris": 1, "london": 1}),
            timeout=45,
            what="reconciled after return",
        )
        assert pids(client, "paris") == paris_pids
