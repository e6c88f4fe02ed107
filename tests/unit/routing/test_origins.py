"""Client networks a site could not place, and the hub's index that places them: the index
answers as a scan of every site's networks would (longest prefix holding the whole network,
equal prefixes to the first name), after any puts and drops."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.routing.origins import NetworkIndex, network_origin, reported_network

NAMES = ["a", "b", "c", "d"]
V4 = st.builds(
    lambda value, length: ipaddress.ip_network(f"{ipaddress.IPv4Address(value)}/{length}", False),
    st.integers(0, 2**32 - 1).map(lambda v: v & 0xFFFF00FF | 0x0A000000),
    st.sampled_from([8, 16, 20, 24, 28, 32]),
)


def scan(
    networks: dict[str, list[ipaddress.IPv4Network]], asked: ipaddress.IPv4Network
) -> str | None:
    best: tuple[int, str] | None = None
    for name, held in networks.items():
        for network in held:
            if asked.subnet_of(network):
                candidate = (-network.prefixlen, name)
                if best is None or candidate < best:
                    best = candidate
    return None if best is None else best[1]


@given(
    st.lists(st.tuples(st.sampled_from(NAMES), st.lists(V4, max_size=3) | st.none()), max_size=12),
    st.lists(V4, min_size=1, max_size=8),
)
def test_the_index_answers_as_a_scan(
    steps: list[tuple[str, list[ipaddress.IPv4Network] | None]],
    asked: list[ipaddress.IPv4Network],
) -> None:
    index = NetworkIndex()
    networks: dict[str, list[ipaddress.IPv4Network]] = {}
    for name, held in steps:
        if held is None:
            index.drop(name)
            networks.pop(name, None)
        else:
            index.put(name, held)
            networks[name] = held
    assert len(index) == len(networks)
    for network in asked:
        assert index.locate(network) == scan(networks, network), network


def test_a_client_is_reported_by_its_network_never_its_address() -> None:
    assert network_origin("198.51.100.77") == "~198.51.100.0/24"
    assert network_origin("::ffff:198.51.100.77") == "~198.51.100.0/24"
    assert network_origin("2001:db8:abcd:12ff::1") == "~2001:db8:abcd:1200::/56"
    assert network_origin("not an address") is None
    assert reported_network("~198.51.100.0/24") == ipaddress.ip_network("198.51.100.0/24")
    assert reported_network("paris") is None
    assert reported_network("~nonsense") is None


def test_text_networks_and_v6() -> None:
    index = NetworkIndex()
    index.put("paris", ["10.1.0.0/16", "2001:db8:1::/48"])
    index.put("lyon", ["10.1.2.0/24"])
    assert index.locate(ipaddress.ip_network("10.1.2.0/24")) == "lyon"
    assert index.locate(ipaddress.ip_network("10.1.3.0/24")) == "paris"
    assert index.locate(ipaddress.ip_network("2001:db8:1:ff00::/56")) == "paris"
    # A network wider than any site's is nobody's.
    assert index.locate(ipaddress.ip_network("10.0.0.0/8")) is None
    index.drop("lyon")
    assert index.locate(ipaddress.ip_network("10.1.2.0/24")) == "paris"
