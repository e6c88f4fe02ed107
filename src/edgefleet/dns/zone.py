"""The fleet zone as the DNS responder sees it: a small protocol over the routing decision.

The responder knows DNS (RFC 1034/1035 names, rcodes, EDNS, truncation); the zone knows the
fleet (which sites serve an app, best first, for a given client). The edge DNS of a site and the
central DNS of the hub are two implementations of ``FleetZone`` over the same responder.

``StaticZone`` is an in-memory implementation over dicts, for tests and benchmarks.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Protocol

import dns.name

ORIGIN = dns.name.from_text("edge.internal.")
"""The fleet zone's apex: every answer the fleet DNS gives is below it."""

_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Target:
    """One site in an answer: where a client should go."""

    site: str
    """Site name; a DNS label, so that ``<site>.sites.<origin>`` is a name (SRV targets)."""
    ipv4: str | None
    """IPv4 address of the site's ingress (A records), if any."""
    ipv6: str | None
    """IPv6 address of the site's ingress (AAAA records), if any."""
    port: int
    """Ingress port, for SRV records."""

    def __post_init__(self) -> None:
        if not _LABEL.match(self.site):
            raise ValueError(
                f"target site {self.site!r} is not a DNS label: use 1 to 63 letters, digits "
                "and '-', starting and ending with a letter or digit"
            )
        if self.ipv4 is not None and not isinstance(_address(self.ipv4), IPv4Address):
            raise ValueError(f"target {self.site}: ipv4 {self.ipv4!r} is not an IPv4 address")
        if self.ipv6 is not None and not isinstance(_address(self.ipv6), IPv6Address):
            raise ValueError(f"target {self.site}: ipv6 {self.ipv6!r} is not an IPv6 address")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"target {self.site}: port must be 0 to 65535, not {self.port}")


def target_for(site: str, address: str, port: int = 0) -> Target:
    """A target at one address, IPv4 or IPv6; a host name gives a target with no address."""
    parsed = _address(address)
    return Target(
        site,
        str(parsed) if isinstance(parsed, IPv4Address) else None,
        str(parsed) if isinstance(parsed, IPv6Address) else None,
        port,
    )


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Lookup:
    """The zone's answer for one app and one client."""

    targets: tuple[Target, ...]
    """Serving sites, best first, already limited by the zone. Empty: the app exists but no
    site serves it (the responder answers NODATA)."""
    scope_prefix: int
    """RFC 7871 SCOPE PREFIX-LENGTH to return when the query had ECS: how many leading bits of
    the client's address the answer depends on (0 = the answer is valid for any client)."""

    def __post_init__(self) -> None:
        if not 0 <= self.scope_prefix <= 128:
            raise ValueError(f"scope_prefix must be 0 to 128, not {self.scope_prefix}")


class Refused(Exception):
    """The client may not have an answer for this name (an app's access rules): the responder
    answers REFUSED (RFC 1035 4.1.1: the server refuses "for policy reasons")."""

    def __init__(self, reason: str, *, scope_prefix: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        """Why, for logs."""
        self.scope_prefix = scope_prefix
        """RFC 7871 SCOPE PREFIX-LENGTH of the refusal, when the query had ECS."""


@dataclass(frozen=True)
class Client:
    """Who asks, as far as the DNS can tell."""

    source: str
    """Source IP address of the packet (a resolver's, or the client's own)."""
    subnet: IPv4Network | IPv6Network | None
    """The client's network from the query's EDNS Client Subnet option (RFC 7871), masked to its
    SOURCE PREFIX-LENGTH; None without ECS."""


class FleetZone(Protocol):
    """What the responder asks of the fleet; implemented by the edge and the central DNS.

    Contract for caching: within one ``version()``, ``client_key`` and ``lookup`` are pure
    functions of their arguments, and ``lookup``'s result depends on the client only through
    ``client_key(client)``. The responder caches encoded answers on that basis, and memoizes
    ``client_key`` per (source address, ECS subnet) within a version.
    """

    origin: dns.name.Name
    """The zone apex, ``edge.internal.``."""

    def version(self) -> str:
        """A token that changes whenever any answer may change; responder caches key on it."""
        ...

    def client_key(self, client: Client) -> Hashable:
        """What of the client the answers depend on: a constant for an edge DNS (it answers
        for its own site), the located site for the central DNS. Part of the cache key."""
        ...

    def lookup(self, tenant: str, app: str, client: Client) -> Lookup | None:
        """The serving sites of ``app`` of ``tenant`` for ``client``; None if no such app.
        Raises ``Refused`` when the client may not reach the app."""
        ...

    def has_tenant(self, tenant: str) -> bool:
        """Whether ``tenant`` has any app (so ``<tenant>.<origin>`` exists, RFC 8020)."""
        ...

    def site_address(self, site: str) -> Target | None:
        """The addresses of ``site``, for ``<site>.sites.<origin>``; None if no such site."""
        ...

    def nameserver(self) -> Target:
        """This server's own addresses, for ``ns.<origin>`` (the NS target and its glue)."""
        ...


class StaticZone:
    """An in-memory ``FleetZone`` over dicts, for tests and benchmarks.

    Answers list an app's targets in the order given, except that a client located in one of
    ``networks`` (by its ECS subnet, else its source address) gets that network's site first,
    with the network's prefix length as the ECS scope. Without ``networks`` every client gets
    the same answers, like an edge DNS. Every mutation changes ``version()``.

    ``apps`` maps (tenant, app) to its targets, best first; ``sites`` are the hosts of
    ``<site>.sites.<origin>``; ``tenants`` declares tenants without apps; ``max_targets`` is how
    many targets a lookup returns at most.
    """

    def __init__(
        self,
        *,
        nameserver: Target,
        apps: Mapping[tuple[str, str], Sequence[Target]] | None = None,
        sites: Iterable[Target] = (),
        tenants: Iterable[str] = (),
        networks: Mapping[IPv4Network | IPv6Network, str] | None = None,
        max_targets: int = 16,
        origin: dns.name.Name = ORIGIN,
    ) -> None:
        self.origin = origin
        self._nameserver = nameserver
        self._apps: dict[tuple[str, str], tuple[Target, ...]] = {
            (tenant.lower(), app.lower()): tuple(targets)
            for (tenant, app), targets in (apps or {}).items()
        }
        self._sites = {target.site.lower(): target for target in sites}
        self._tenants = {tenant.lower() for tenant in tenants}
        # Longest prefix first, so the first containing network is the most specific.
        self._networks = sorted(
            (networks or {}).items(), key=lambda item: item[0].prefixlen, reverse=True
        )
        self._max_targets = max_targets
        self._app_tenants = {tenant for tenant, _ in self._apps}
        self._generation = 0
        self._version = "0"
        self.client_independent = not self._networks
        """Without networks every client gets the same answers (see ``Responder``)."""

    def _changed(self) -> None:
        self._app_tenants = {tenant for tenant, _ in self._apps}
        self._generation += 1
        self._version = str(self._generation)

    def set_app(self, tenant: str, app: str, targets: Sequence[Target]) -> None:
        """Create or replace an app's targets (best first)."""
        self._apps[tenant.lower(), app.lower()] = tuple(targets)
        self._changed()

    def remove_app(self, tenant: str, app: str) -> None:
        """Remove an app; its names no longer exist."""
        self._apps.pop((tenant.lower(), app.lower()), None)
        self._changed()

    def set_site(self, target: Target) -> None:
        """Create or replace a site's addresses."""
        self._sites[target.site.lower()] = target
        self._changed()

    def remove_site(self, site: str) -> None:
        """Remove a site from ``sites.<origin>``."""
        self._sites.pop(site.lower(), None)
        self._changed()

    def version(self) -> str:
        """Changes on every mutation."""
        return self._version

    def _locate(self, client: Client) -> tuple[str, int] | None:
        subnet = client.subnet
        if subnet is not None:
            for network, site in self._networks:
                if subnet.network_address in network and subnet.prefixlen >= network.prefixlen:
                    return site, network.prefixlen
            return None
        address = _address(client.source)
        if address is None:
            return None
        for network, site in self._networks:
            if address in network:
                return site, network.prefixlen
        return None

    def client_key(self, client: Client) -> Hashable:
        """The located (site, prefix length), or None: all unlocated clients look alike."""
        if not self._networks:
            return None
        return self._locate(client)

    def lookup(self, tenant: str, app: str, client: Client) -> Lookup | None:
        """The app's targets, the client's located site first."""
        targets = self._apps.get((tenant, app))
        if targets is None:
            return None
        located = self._locate(client) if self._networks else None
        scope = 0
        if located is not None:
            site, prefix = located
            first = [t for t in targets if t.site == site]
            targets = (*first, *(t for t in targets if t.site != site))
            # Clients in the same located network get the same answer (RFC 7871 7.2.1).
            scope = prefix if client.subnet is not None else 0
        return Lookup(targets=targets[: self._max_targets], scope_prefix=scope)

    def has_tenant(self, tenant: str) -> bool:
        """Whether the tenant was declared or has an app."""
        return tenant in self._tenants or tenant in self._app_tenants

    def site_address(self, site: str) -> Target | None:
        """The site's addresses, if it is known."""
        return self._sites.get(site)

    def nameserver(self) -> Target:
        """The nameserver target given at construction."""
        return self._nameserver
