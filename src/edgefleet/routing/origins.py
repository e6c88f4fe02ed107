"""Where a client comes from, when the site it reached cannot tell.

A site locates a client by the client networks of the sites in its share of the routing table:
its neighbourhood and the sites that serve each app (``edgefleet.routing.share``). A client from
farther away (a resolver that sent it across the continent, a site that spilled over) is in
none of them; counted as the serving site's own demand, it would keep replicas where its
traffic is not. So the site reports the client's network instead (``network_origin``: the /24
of an IPv4 client, the /56 of an IPv6 one, never the address), and the hub, which holds every
site's networks, places it (``NetworkIndex``, by longest prefix as ``answer.locate`` does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

NETWORK_MARK = "~"
"""An origin that starts with this is a client network, not a site name (which is a DNS label
and cannot)."""
V4_PREFIX = 24
V6_PREFIX = 56
MAX_NETWORKS = 256
"""Client networks a site counts per app and window at most (more are counted as one unplaced
origin, ``NETWORK_MARK`` alone): a scan from many networks cannot grow a report, and a hub
refuses a report that holds more."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def network_origin(address: str) -> str | None:
    """The origin to report for a client at ``address`` that no known site's networks hold:
    its network, marked; None if ``address`` is not an IP address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    length = V4_PREFIX if ip.version == 4 else V6_PREFIX
    return NETWORK_MARK + str(ipaddress.ip_network(f"{ip}/{length}", strict=False))


def reported_network(origin: str) -> Network | None:
    """The network a marked origin names; None for a site name or a malformed origin."""
    if not origin.startswith(NETWORK_MARK):
        return None
    try:
        return ipaddress.ip_network(origin[len(NETWORK_MARK) :], strict=False)
    except ValueError:
        return None


class NetworkIndex:
    """Every site's client networks, for the site whose network holds a given one.

    A lookup tries each prefix length in use, longest first: a few dict reads, whatever the
    number of sites. A network matches only if it holds the whole network asked about; equal
    prefixes go to the first site name.
    """

    def __init__(self) -> None:
        self._by_length: dict[tuple[int, int], dict[int, set[str]]] = {}
        self._of: dict[str, list[Network]] = {}
        self._lengths: dict[int, list[int]] = {}
        """Per IP version, the prefix lengths in use, longest first."""

    def put(self, site: str, networks: Iterable[Network | str]) -> None:
        """Set the networks of ``site`` (replacing what it had; text is parsed, host bits
        ignored)."""
        given = list(networks)
        if site in self._of and [str(n) for n in given] == [str(n) for n in self._of[site]]:
            return  # the same networks (a site's phase changed, say): nothing to redo
        self.drop(site)
        kept = [
            n if not isinstance(n, str) else ipaddress.ip_network(n, strict=False) for n in given
        ]
        self._of[site] = kept
        for network in kept:
            slot = self._by_length.setdefault((network.version, network.prefixlen), {})
            slot.setdefault(int(network.network_address), set()).add(site)
        self._sort()

    def drop(self, site: str) -> None:
        """Forget ``site``'s networks."""
        for network in self._of.pop(site, ()):
            key = (network.version, network.prefixlen)
            slot = self._by_length.get(key, {})
            names = slot.get(int(network.network_address))
            if names is not None:
                names.discard(site)
                if not names:
                    del slot[int(network.network_address)]
            if not slot:
                self._by_length.pop(key, None)
        self._sort()

    def _sort(self) -> None:
        lengths: dict[int, list[int]] = {}
        for version, length in self._by_length:
            lengths.setdefault(version, []).append(length)
        self._lengths = {version: sorted(found, reverse=True) for version, found in lengths.items()}

    def locate(self, network: Network) -> str | None:
        """The site whose network holds all of ``network``, by longest prefix; None if none."""
        value = int(network.network_address)
        bits = network.max_prefixlen
        for length in self._lengths.get(network.version, ()):
            if length > network.prefixlen:
                continue
            mask = ((1 << length) - 1) << (bits - length) if length else 0
            names = self._by_length[(network.version, length)].get(value & mask)
            if names:
                return min(names)
        return None

    def __len__(self) -> int:
        return len(self._of)
