"""Fleet DNS with real agents, hub and replicas: edge DNS at every site, central DNS at the hub.

Clients are dig and dnspython, against the servers the processes run.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import pytest

from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import Site
from tests.factories import make_app, make_site

pytestmark = pytest.mark.slow

FQDN = "hello.demo.edge.internal"
_subnets = itertools.count(60)


@pytest.fixture
def sites() -> list[Site]:
    """paris and london in Europe, boston in the US, each serving its own client network."""
    net = next(_subnets)
    paris = make_site("paris", region="eu-west", ip=f"127.0.{net}.1", lat=48.86, lon=2.35)
    london = make_site("london", region="eu-west", ip=f"127.0.{net}.2", lat=51.51, lon=-0.13)
    boston = make_site("boston", region="us-east", ip=f"127.0.{net}.3", lat=42.36, lon=-71.06)
    for site, network in ((paris, "10.1.0.0/16"), (london, "10.2.0.0/16"), (boston, "10.3.0.0/16")):
        site.spec.networks = [network]
    return [paris, london, boston]


@pytest.fixture
def dns_fleet(sqlite_fleet: LocalFleet, sites: list[Site]) -> Iterator[LocalFleet]:
    """Hub and three agents up."""
    with sqlite_fleet.client() as client:
        for site in sites:
            client.apply(site)
    sqlite_fleet.start_agents(sites)
    yield sqlite_fleet


def ask(ip: str, port: int, *, subnet: str | None = None, tcp: bool = False) -> list[str]:
    """A records for the sample app from one server, by dnspython."""
    options = []
    if subnet is not None:
        address, prefix = subnet.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(FQDN, dns.rdatatype.A, use_edns=0, options=options)
    send = dns.query.tcp if tcp else dns.query.udp
    reply = send(query, ip, port=port, timeout=2.0)
    return [r.address for rrset in reply.answer for r in rrset]


def edge(fleet: LocalFleet, site: str) -> tuple[str, int]:
    """Address of a site's edge DNS."""
    addresses = fleet.sites[site].spec.addresses
    return addresses.ip, addresses.dns_port


def ip_of(fleet: LocalFleet, site: str) -> str:
    """A site's address."""
    return fleet.sites[site].spec.addresses.ip


def test_local_neighbour_and_central_answers(dns_fleet: LocalFleet) -> None:
    fleet = dns_fleet
    with fleet.client() as client:
        client.apply(
            make_app(placement={"replicas": 2, "selector": {"sites": ["london", "boston"]}})
        )
    london, boston = ip_of(fleet, "london"), ip_of(fleet, "boston")
    # london serves it: its edge DNS answers london first.
    wait_for(
        lambda: ask(*edge(fleet, "london")) == [london, boston],
        timeout=30,
        what="london answers itself",
    )
    # paris does not: "I don't run it, my neighbour does" -- the nearest, london.
    wait_for(
        lambda: ask(*edge(fleet, "paris")) == [london, boston],
        timeout=30,
        what="paris answers its neighbour london",
    )
    # boston answers boston, then london.
    wait_for(
        lambda: ask(*edge(fleet, "boston")) == [boston, london],
        timeout=30,
        what="boston answers itself",
    )
    # Over TCP too. (Waits, not asserts: on a loaded machine a run of slow probes may reorder
    # the two for a moment, as it would on a congested link.)
    wait_for(
        lambda: ask(*edge(fleet, "paris"), tcp=True) == [london, boston],
        timeout=10,
        what="the same answer over TCP",
    )
    # The central DNS locates clients by EDNS Client Subnet against the sites' networks.
    central = (fleet.hub_host, fleet.dns_port)
    wait_for(
        lambda: ask(*central, subnet="10.3.7.0/24") == [boston, london],
        timeout=30,
        what="central answers a boston client",
    )
    wait_for(
        lambda: ask(*central, subnet="10.1.0.0/24") == [london, boston],
        timeout=10,
        what="central answers a paris client",
    )


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig missing: run tools/test-deps.sh")
def test_dig_sees_scope_and_statuses(dns_fleet: LocalFleet) -> None:
    fleet = dns_fleet
    with fleet.client() as client:
        client.apply(make_app(placement={"replicas": 1, "selector": {"sites": ["boston"]}}))
    ip, port = edge(fleet, "paris")
    wait_for(lambda: ask(ip, port) == [ip_of(fleet, "boston")], timeout=30, what="answer")

    def dig(*args: str, server: tuple[str, int] = (ip, port)) -> str:
        return subprocess.run(
            ["dig", f"@{server[0]}", "-p", str(server[1]), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout

    assert dig(FQDN, "A", "+short").split() == [ip_of(fleet, "boston")]
    assert "status: NXDOMAIN" in dig("nope.demo.edge.internal", "A")
    assert "status: NOERROR" in dig(FQDN, "MX") and "ANSWER: 0" in dig(FQDN, "MX")
    assert "status: REFUSED" in dig("example.com", "A")
    srv = dig(f"_http._tcp.{FQDN}", "SRV", "+short")
    assert "boston.sites.edge.internal." in srv and " 8080 " in srv
    central = (fleet.hub_host, fleet.dns_port)
    scoped = dig(FQDN, "A", "+subnet=10.3.1.0/24", server=central)
    assert "CLIENT-SUBNET: 10.3.1.0/24/16" in scoped


def test_edge_dns_answers_with_the_hub_down(dns_fleet: LocalFleet) -> None:
    fleet = dns_fleet
    with fleet.client() as client:
        client.apply(make_app(placement={"replicas": 1, "selector": {"sites": ["london"]}}))
    london = ip_of(fleet, "london")
    wait_for(lambda: ask(*edge(fleet, "paris")) == [london], timeout=30, what="answer")
    fleet.stop_hub()
    assert ask(*edge(fleet, "paris")) == [london]
    # A restarted agent answers from its on-disk table before any hub exists.
    fleet.stop_agent("paris", signal.SIGKILL)
    fleet.start_agent(fleet.sites["paris"])
    wait_for(
        lambda: ask(*edge(fleet, "paris")) == [london],
        timeout=30,
        what="answer from the cached table",
    )


def test_a_failing_site_drops_out_of_every_dns(dns_fleet: LocalFleet) -> None:
    fleet = dns_fleet
    with fleet.client() as client:
        client.apply(
            make_app(placement={"replicas": 2, "selector": {"sites": ["london", "boston"]}})
        )
    london, boston = ip_of(fleet, "london"), ip_of(fleet, "boston")
    servers = {
        "paris": edge(fleet, "paris"),
        "boston": edge(fleet, "boston"),
        "central": (fleet.hub_host, fleet.dns_port),
    }
    wait_for(
        lambda: all(london in ask(*s, subnet="10.1.0.0/24") for s in servers.values()),
        timeout=30,
        what="every DNS answers london",
    )

    # Replicas not ready: london's replica stops answering its health checks.
    with fleet.client() as client:
        [replica] = client.site_replicas("london")["demo/hello"]
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: all(ask(*s, subnet="10.1.0.0/24") == [boston] for s in servers.values()),
            timeout=30,
            what="london dropped while its replica is not ready",
        )
    finally:
        os.kill(replica.pid, signal.SIGCONT)
    wait_for(
        lambda: all(london in ask(*s, subnet="10.1.0.0/24") for s in servers.values()),
        timeout=30,
        what="london back once ready",
    )

    # The site dies: agent and replicas gone.
    fleet.stop_agent("london", signal.SIGKILL)
    fleet.stop_replicas("london")
    wait_for(
        lambda: all(ask(*s, subnet="10.1.0.0/24") == [boston] for s in servers.values()),
        timeout=30,
        what="london dropped after it died",
    )


def test_dns_query_explains_the_answer(dns_fleet: LocalFleet) -> None:
    fleet = dns_fleet
    with fleet.client() as client:
        client.apply(
            make_app(placement={"replicas": 2, "selector": {"sites": ["london", "boston"]}})
        )
    london, boston = ip_of(fleet, "london"), ip_of(fleet, "boston")
    wait_for(lambda: ask(*edge(fleet, "paris")) == [london, boston], timeout=30, what="answer")

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "edgefleet", "dns", "query", FQDN, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={
                **os.environ,
                "EDGEFLEET_HUB": fleet.hub_url,
                "EDGEFLEET_TOKEN": fleet.admin_token or "",
                "COLUMNS": "200",
            },
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    at_paris = cli("--site", "paris")
    assert f"asked from site paris: london {london}, boston {boston}" in at_paris
    assert f"answers: {london}, {boston}" in at_paris, "the real edge DNS agrees"
    by_client = cli("--client-ip", "10.3.9.9")
    assert "located at boston/16" in by_client
    assert f": boston {boston}, london {london}" in by_client
    # A site that stops serving is listed with the reason it is skipped.
    fleet.stop_agent("boston", signal.SIGKILL)
    fleet.stop_replicas("boston")
    wait_for(
        lambda: (
            "no ready replica" in cli("--site", "paris")
            or "down" in cli("--site", "paris")
            or "unreachable" in cli("--site", "paris")
        ),
        timeout=30,
        what="boston skipped with a reason",
    )
