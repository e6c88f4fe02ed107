"""Traffic placement end to end: hub, agents and replicas as processes on loopback.

Clients "near" a site send from an address in that site's client networks and ask that site's
edge DNS, as ``edgefleet load --from SITE`` does. Replicas follow the demand; a site whose
clients went quiet goes to zero but stays placed, and its next request starts a replica there.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefleet.cli.demo import ask_dns
from edgefleet.cli.load import spec_for_site
from edgefleet.loadgen import LoadSummary, run_load
from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import App, Site
from tests.factories import fast_fleet, make_app, two_region_sites

pytestmark = pytest.mark.slow

_subnets = itertools.count(120)


@pytest.fixture
def traffic_fleet(tmp_path: Path) -> Iterator[tuple[LocalFleet, dict[str, Site]]]:
    """A hub with fast demand and placement rounds, and three sites in two regions."""
    local = fast_fleet(tmp_path / "fleet")
    sites, _ = two_region_sites(_subnets)
    with local.running():
        local.start_hub()
        with local.client() as client:
            for site in sites.values():
                client.apply(site)
        local.start_agents(list(sites.values()))
        yield local, sites


FOLLOW_FQDN = "follow.demo.edge.internal"


def follow_app() -> App:
    return make_app(
        "follow",
        placement={"mode": "traffic", "maxLatencyMs": 30, "minSites": 1},
        scaling={
            "minReplicas": 0,
            "maxReplicas": 10,
            "targetConcurrency": 1,
            "stableWindow": "3s",
            "panicWindow": "1s",
            "idleTimeout": "6s",
        },
    )


def load_from(site: Site, *, rps: float, seconds: float, work: int = 100) -> LoadSummary:
    """Requests to ``follow`` as clients near ``site`` send them: its DNS, its networks."""
    spec = spec_for_site(site, app="follow", rps=rps, duration=seconds, work_ms=work, timeout=40)
    assert spec.source_address is not None, "loopback binds any 127.x address"
    return asyncio.run(run_load(spec))


def shares(local: LocalFleet) -> dict[str, tuple[int, int, bool]]:
    """(desired, ready, wakeable) of ``follow`` per site."""
    with local.client() as client:
        app = client.get_app("demo", "follow")
    return {s.site: (s.desired, s.ready, s.wakeable) for s in app.status.sites}


def test_replicas_follow_demand_sleep_and_wake(
    traffic_fleet: tuple[LocalFleet, dict[str, Site]],
) -> None:
    local, sites = traffic_fleet
    with local.client() as client:
        client.apply(follow_app())
    # No demand yet: placed at one site, at zero, wakeable.
    placed = wait_for(
        lambda: (found := shares(local)) and found,
        timeout=30,
        what="follow to be placed at zero somewhere",
    )
    assert len(placed) == 1
    ((_, (desired, ready, wakeable)),) = placed.items()
    assert (desired, ready, wakeable) == (0, 0, True)

    # Clients in New York: the first requests wake the app through an activator; none fails.
    # (Once New York's edge DNS has the new app: before its routing table arrives, a name
    # created a moment ago is rightly unknown there.)
    york = sites["new-york"]
    wait_for(
        lambda: ask_dns(york.spec.addresses.ip, york.spec.addresses.dns_port, FOLLOW_FQDN),
        timeout=30,
        what="New York's edge DNS to answer for follow",
    )
    first = load_from(york, rps=10, seconds=6)
    assert first.failed_total == 0 and first.ok == first.sent, first.to_json()
    wait_for(
        lambda: shares(local).get("new-york", (0, 0, False))[1] >= 1,
        timeout=60,
        what="a ready replica in New York, where the demand is",
    )

    # The clients move to Paris: replicas follow into Europe.
    moved = load_from(sites["paris"], rps=10, seconds=10)
    assert moved.failed_total == 0, moved.to_json()
    wait_for(
        lambda: any(shares(local).get(s, (0, 0, False))[1] >= 1 for s in ("paris", "lyon")),
        timeout=60,
        what="a ready replica in Europe",
    )
    # New York went quiet: after the idle timeout it sleeps at zero, still placed.
    wait_for(
        lambda: shares(local).get("new-york") == (0, 0, True),
        timeout=60,
        what="New York at zero replicas, still placed",
    )

    # A New York client again: answered by New York (within the bound), which wakes.
    again = load_from(sites["new-york"], rps=1, seconds=1)
    assert again.ok == again.sent == 1, again.to_json()
    assert again.served_by == {"new-york": 1}, again.to_json()


def replicas_at(fleet: LocalFleet, site: Site) -> list[dict[str, object]]:
    """The agent's own view of ``follow``'s replicas (its local API answers without the hub,
    to a site's credential)."""
    base = f"http://{site.spec.addresses.ip}:{site.spec.addresses.ingress_port}"
    reply = httpx.get(
        f"{base}/_edgefleet/replicas",
        timeout=3,
        headers=fleet.site_headers(site.metadata.name),
    )
    found: list[dict[str, object]] = reply.json().get("demo/follow", [])
    return [r for r in found if r["state"] != "stopped"]


def test_with_the_hub_down_sites_scale_offload_sleep_and_wake(
    traffic_fleet: tuple[LocalFleet, dict[str, Site]],
) -> None:
    local, sites = traffic_fleet
    paris, lyon = sites["paris"], sites["lyon"]
    app = make_app(
        "follow",
        # A replica takes 2 requests at once (as the ingress's limit: target 1 x threshold 2).
        env={"HELLO_CONCURRENCY": "2"},
        placement={
            "mode": "traffic",
            "maxLatencyMs": 30,
            "minSites": 1,
            "selector": {"sites": ["paris", "lyon"]},
        },
        scaling={
            "minReplicas": 0,
            "maxReplicas": 10,
            "targetConcurrency": 1,
            "stableWindow": "3s",
            "panicWindow": "1s",
            "idleTimeout": "4s",
        },
    )
    with local.client() as client:
        client.apply(app)
    fqdn = FOLLOW_FQDN
    wait_for(
        lambda: ask_dns(paris.spec.addresses.ip, paris.spec.addresses.dns_port, fqdn),
        timeout=30,
        what="Paris's edge DNS to answer for follow",
    )
    # Wake it once from Paris so that the hub places it there, then take the hub away.
    load_from(paris, rps=5, seconds=3)
    wait_for(
        lambda: shares(local).get("paris", (0, 0, False))[2],
        timeout=60,
        what="follow placed at paris",
    )
    local.stop_hub()

    # Load: the site scales itself within the bounds the hub last gave it ...
    steady = load_from(paris, rps=20, seconds=5)
    assert steady.failed_total == 0, steady.to_json()
    assert len(replicas_at(local, paris)) >= 2, "scaled up locally with the hub down"
    # ... and beyond its ceiling asks its neighbour to run the app, site to site.
    burst = load_from(paris, rps=60, seconds=8)
    assert burst.served_by.get("lyon", 0) > 0, burst.to_json()
    assert burst.failed_total <= burst.sent // 100, burst.to_json()

    # Quiet: both sites go to zero by themselves after the idle timeout.
    wait_for(
        lambda: not replicas_at(local, paris) and not replicas_at(local, lyon),
        timeout=60,
        what="paris and lyon asleep",
    )
    # Once Paris's probes have seen Lyon asleep too, Paris answers for itself ...
    wait_for(
        lambda: (
            ask_dns(paris.spec.addresses.ip, paris.spec.addresses.dns_port, fqdn)[:1]
            == [paris.spec.addresses.ip]
        ),
        timeout=30,
        what="Paris's edge DNS to answer Paris first",
    )
    # ... and the next request wakes Paris through its activator, still without the hub.
    again = load_from(paris, rps=1, seconds=1)
    assert again.ok == again.sent == 1 and again.served_by == {"paris": 1}, again.to_json()
