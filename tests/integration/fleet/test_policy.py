"""Fleet policy end to end: hub, agents, replicas and clients as processes on loopback.

Clients "near" a site send from an address in that site's client networks, as ``edgefleet load
--from SITE`` does. The tenant ``acme`` runs in eu-west only and lets in clients of eu-west and
one client address elsewhere: its replicas stay in eu-west however much demand comes from New
York, and the ingresses and DNS servers of the fleet refuse every other client.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest

from edgefleet.loadgen import LoadSpec, run_load
from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import Site, Tenant
from tests.factories import fast_fleet, make_app, two_region_sites

pytestmark = pytest.mark.slow

_subnets = itertools.count(160)


class Fleet:
    """The running fleet, its sites by name, and the client addresses the tests send from."""

    def __init__(self, local: LocalFleet, sites: dict[str, Site], subnet: dict[str, int]) -> None:
        self.local = local
        self.sites = sites
        self.paris_client = f"127.1.{subnet['paris']}.1"
        self.allowed_ny_client = f"127.1.{subnet['new-york']}.1"
        """Let in by the tenant's network rule, though in us-east."""
        self.refused_ny_client = f"127.1.{subnet['new-york']}.77"
        """In us-east, in no allowed network."""


@pytest.fixture
def policy_fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A hub with fast demand and placement rounds, three sites in two regions, and the tenant
    acme's policy."""
    local = fast_fleet(tmp_path / "fleet")
    sites, subnet = two_region_sites(_subnets)
    fleet = Fleet(local, sites, subnet)
    acme = Tenant.model_validate(
        {
            "metadata": {"name": "acme"},
            "spec": {
                "regions": ["eu-west"],
                "access": {"regions": ["eu-west"], "networks": [f"{fleet.allowed_ny_client}/32"]},
            },
        }
    )
    with local.running():
        local.start_hub()
        with local.client() as client:
            for site in sites.values():
                client.apply(site)
            client.apply(acme)
        local.start_agents(list(sites.values()))
        yield fleet


def rcode_and_addresses(server: Site, fqdn: str, source: str) -> tuple[str, list[str]]:
    """What a site's edge DNS answers a client at ``source``."""
    query = dns.message.make_query(fqdn, dns.rdatatype.A)
    addresses = server.spec.addresses
    reply = dns.query.udp(query, addresses.ip, port=addresses.dns_port, timeout=2.0, source=source)
    found = [r.address for rrset in reply.answer for r in rrset if rrset.rdtype == dns.rdatatype.A]
    return dns.rcode.to_text(reply.rcode()), found


def central(fleet: Fleet, fqdn: str, source: str) -> str:
    """The rcode the hub's central DNS answers a client at ``source``."""
    query = dns.message.make_query(fqdn, dns.rdatatype.A)
    reply = dns.query.udp(
        query, fleet.local.hub_host, port=fleet.local.dns_port, timeout=2.0, source=source
    )
    return dns.rcode.to_text(reply.rcode())


def get(site: Site, host: str, source: str) -> httpx.Response:
    """A request to ``host`` at ``site``'s ingress from a client at ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    addresses = site.spec.addresses
    with httpx.Client(transport=transport, timeout=40.0, trust_env=False) as client:
        return client.get(
            f"http://{addresses.ip}:{addresses.ingress_port}/", headers={"Host": host}
        )


def test_residency_keeps_replicas_in_the_tenants_regions_while_demand_is_elsewhere(
    policy_fleet: Fleet,
) -> None:
    fleet, local = policy_fleet, policy_fleet.local
    ny = fleet.sites["new-york"]
    app = make_app(
        "follow",
        tenant="acme",
        placement={"mode": "traffic", "minSites": 1},
        scaling={
            "minReplicas": 0,
            "maxReplicas": 10,
            "targetConcurrency": 1,
            "stableWindow": "3s",
            "panicWindow": "1s",
            "idleTimeout": "30s",
        },
    )
    seen: set[str] = set()

    def placed_sites() -> set[str]:
        with local.client() as client:
            status = client.get_app("acme", "follow").status
        now = {s.site for s in status.sites if s.desired or s.ready or s.wakeable}
        seen.update(now)
        return now

    with local.client() as client:
        client.apply(app)
    wait_for(placed_sites, timeout=30, what="follow placed somewhere")
    # New York's edge DNS learns of the new app with its next routing table.
    wait_for(
        lambda: rcode_and_addresses(ny, "follow.acme.edge.internal", fleet.allowed_ny_client)[1],
        timeout=30,
        what="New York's edge DNS to answer for follow",
    )
    # Clients in New York only: they ask New York's edge DNS, which answers with a site in
    # eu-west (the only region the app may run in), and every request is served there.
    spec = LoadSpec(
        app="follow",
        tenant="acme",
        rps=10,
        duration=10,
        work_ms=100,
        timeout=40,
        dns_server=ny.spec.addresses.ip,
        dns_port=ny.spec.addresses.dns_port,
        http_port=ny.spec.addresses.ingress_port,
        source_address=fleet.allowed_ny_client,
    )
    summary = asyncio.run(run_load(spec))
    assert summary.failed_total == 0 and summary.ok == summary.sent, summary.to_json()
    assert set(summary.served_by) <= {"paris", "lyon"}, summary.to_json()
    with local.client() as client:
        origins = {d.origin for d in client.app_demand("acme", "follow") if d.requests_per_second}
    assert origins == {"new-york"}
    # The hub follows the demand as far as the residency lets it: replicas in eu-west.
    wait_for(
        lambda: placed_sites() and placed_sites() <= {"paris", "lyon"},
        timeout=30,
        what="follow placed in eu-west",
    )
    # Never in us-east, not even asleep: every placement the hub made says so, and New York's
    # agent never ran a replica.
    with local.client() as client:
        placements = [
            e.message
            for e in client.events(kind="App", tenant="acme", name="follow", limit=200)
            if e.reason == "Placed"
        ]
        assert placements and not any("new-york" in m for m in placements), placements
        assert "acme/follow" not in client.site_replicas("new-york")
    assert seen <= {"paris", "lyon"}, seen


def test_access_is_refused_at_the_ingress_and_by_dns_to_clients_outside_the_rule(
    policy_fleet: Fleet,
) -> None:
    fleet, local = policy_fleet, policy_fleet.local
    paris, ny = fleet.sites["paris"], fleet.sites["new-york"]
    fqdn = "shop.acme.edge.internal"
    with local.client() as client:
        client.apply(make_app("shop", tenant="acme", placement={"replicas": 1}))
    # The rules reach New York's edge DNS with the routing table: a client there is refused.
    wait_for(
        lambda: rcode_and_addresses(ny, fqdn, fleet.refused_ny_client)[0] == "REFUSED",
        timeout=30,
        what="New York's edge DNS to refuse a New York client",
    )
    # The client the network rule lets in gets an answer there: a site in eu-west.
    eu = {fleet.sites[n].spec.addresses.ip for n in ("paris", "lyon")}
    rcode, answer = wait_for(
        lambda: (found := rcode_and_addresses(ny, fqdn, fleet.allowed_ny_client))[1] and found,
        timeout=30,
        what="an answer for the allowed client",
    )
    assert rcode == "NOERROR" and set(answer) <= eu
    # Paris's edge DNS answers its own clients (eu-west), once its share holds the app (each
    # site's share comes on its own).
    wait_for(
        lambda: rcode_and_addresses(paris, fqdn, fleet.paris_client)[0] == "NOERROR",
        timeout=30,
        what="Paris's edge DNS to answer a Paris client",
    )
    # The central DNS locates each client by its address.
    assert central(fleet, fqdn, fleet.refused_ny_client) == "REFUSED"
    assert central(fleet, fqdn, fleet.paris_client) == "NOERROR"

    # The ingress of the site that runs shop: a Paris client is served ...
    with local.client() as client:
        wait_for(
            lambda: client.get_app("acme", "shop").status.ready_replicas == 1,
            timeout=30,
            what="shop ready",
        )
        (serving,) = [s.site for s in client.get_app("acme", "shop").status.sites if s.ready]
    site = fleet.sites[serving]
    assert get(site, fqdn, fleet.paris_client).status_code == 200
    assert get(site, fqdn, fleet.allowed_ny_client).status_code == 200
    # ... a New York client outside the rule is refused, and told why.
    refused = get(site, fqdn, fleet.refused_ny_client)
    assert refused.status_code == 403
    assert refused.text == (
        f"client {fleet.refused_ny_client} (region us-east) may not reach shop.acme: "
        f"allowed networks {fleet.allowed_ny_client}/32, regions eu-west\n"
    )
    # New York's ingress does not run shop. It refuses the same client itself; the allowed
    # client's request it passes on to a site in eu-west, which judges it by the client New
    # York saw (X-Forwarded-For) and the origin New York named.
    assert get(ny, fqdn, fleet.refused_ny_client).status_code == 403
    assert get(ny, fqdn, fleet.allowed_ny_client).status_code == 200
