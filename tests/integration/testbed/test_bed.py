"""``Testbed``: up builds the namespaces, the WAN, the hub and the agents; up again changes
nothing; faults act on real processes and packets; down leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.geo import estimated_rtt_ms, great_circle_km
from edgefleet.model import SitePhase
from edgefleet.testbed import netns
from edgefleet.testbed.bed import MANAGEMENT_DEVICE, Testbed, wait_for
from edgefleet.testbed.topology import ANYCAST_DNS, default_topology

UNAVAILABLE = netns.unavailable()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.skipif(
        UNAVAILABLE is not None, reason=f"the network test bed cannot run here: {UNAVAILABLE}"
    ),
]

PREFIX = "efbed-"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    # Paris, London and New York, and two client regions: 6 namespaces with the hub's.
    topology = default_topology(3)
    testbed = Testbed(workdir=tmp_path_factory.mktemp("bed"), topology=topology, prefix=PREFIX)
    with testbed.running():
        yield testbed
    assert not [n for n in netns.NETNS_DIR.iterdir() if n.name.startswith(PREFIX)]
    assert not Path(f"/sys/class/net/{MANAGEMENT_DEVICE}").exists()
    assert not [n for n in netns.NETNS_ETC.glob(f"{PREFIX}*")]


def ping_min_ms(bed: Testbed, node: str, address: str, count: int = 4) -> float | None:
    done = subprocess.run(
        netns.exec_args(
            bed.node_netns(node), ["ping", "-c", str(count), "-i", "0.2", "-W", "2", address]
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"min/avg/max/mdev = ([\d.]+)/", done.stdout)
    return float(found.group(1)) if found else None


def test_every_site_is_up_at_its_address(bed: Testbed) -> None:
    with bed.client() as client:
        sites = {s.metadata.name: s for s in client.list_sites()}
    assert set(sites) == {"paris", "london", "new-york"}
    assert all(s.status.phase == SitePhase.READY for s in sites.values())
    assert {n: s.spec.addresses.ip for n, s in sites.items()} == {
        s.name: s.address for s in bed.topology.sites
    }
    # The anycast address reaches an edge DNS from every client region.
    for region in bed.topology.clients:
        assert bed.dns_query(region.node, ANYCAST_DNS, "edge.internal", kind="SOA")


def test_ping_between_sites_takes_the_distance(bed: Testbed) -> None:
    paris, new_york = bed.topology.site("paris"), bed.topology.site("new-york")
    expected = estimated_rtt_ms(great_circle_km(paris.lat, paris.lon, new_york.lat, new_york.lon))
    measured = ping_min_ms(bed, "paris", new_york.address)
    assert measured is not None and expected <= measured < expected + 50


def test_up_again_changes_nothing(bed: Testbed) -> None:
    before = dict(bed.pids)
    again = Testbed(workdir=bed.workdir, topology=bed.topology, prefix=PREFIX)
    again.up()
    assert again.pids == before
    assert all(bed.alive(role) for role in before)


def test_link_faults_move_real_packets(bed: Testbed) -> None:
    paris, london = bed.topology.site("paris"), bed.topology.site("london")
    # A lower bound that load on the machine cannot break: delays only ever add.
    expected = estimated_rtt_ms(great_circle_km(paris.lat, paris.lon, london.lat, london.lon))
    bed.wan().link("paris", "london", extra_ms=40)
    slowed = ping_min_ms(bed, "paris", london.address)
    assert slowed is not None and slowed >= expected + 80  # 40 ms more each way
    bed.wan().unlink("paris", "london")
    back = ping_min_ms(bed, "paris", london.address)
    assert back is not None and back < expected + 80 <= slowed
    bed.wan().cut("paris")
    assert ping_min_ms(bed, "paris", london.address, count=2) is None
    bed.wan().heal("paris")
    assert ping_min_ms(bed, "paris", london.address) is not None


def test_killing_and_starting_a_site(bed: Testbed) -> None:
    assert bed.kill_site("london") >= 1  # the agent at least
    assert not bed.alive("agent:london") and not netns.pids(bed.site_netns("london"))

    def unreachable() -> bool:
        with bed.client() as client:
            return client.get_site("london").status.phase == SitePhase.UNREACHABLE

    wait_for(unreachable, timeout=30, what="the hub to see london unreachable")
    bed.start_agent("london")
    bed.wait_sites_ready(timeout=30)


def test_killing_and_starting_the_hub(bed: Testbed) -> None:
    bed.kill_hub()
    assert not bed.alive("hub") and not netns.pids(bed.hub_netns)
    # The sites go on answering DNS without it.
    assert bed.dns_query("clients-eu-west", ANYCAST_DNS, "edge.internal", kind="SOA")
    bed.start_hub()
    bed.wait_sites_ready(timeout=30)
