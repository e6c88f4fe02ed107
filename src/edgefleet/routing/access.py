"""Who may reach an app: the access decision every ingress and DNS of the fleet takes.

A pure decision. An app carries the rules of its tenant and its own (``AppAccess``); a client is
let in only when every rule lets it in, and a rule lets it in when the client's address is in
one of the rule's networks or its region is one of the rule's regions. An app without rules lets
everyone in.

Where the client's region comes from is the caller's business (the same everywhere in the
fleet: the region of the site the client is nearest to):

- an edge DNS: the region of its own site (anycast brought the client to it);
- the central DNS: the region of the site whose client networks hold the client's ECS subnet,
  else its source address (``locate``); an unlocated client has no region;
- an ingress: the region of the site whose networks hold the client's address, among the sites
  of its share of the table; else the region whose networks hold it (``region_holding``: the
  share carries the networks of every region an access rule names); else none, so a client
  from a network no site serves passes a rule by its networks only. A request spilled by a
  neighbour is judged by the address that neighbour saw (the last ``X-Forwarded-For`` entry)
  and the origin it named, which is what the neighbour judged it by already.

A subnet (ECS) passes a network only if the network holds the whole subnet: the answer is
cached for every client in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from edgefleet.routing.answer import ClientAddress, _as_prefix
from edgefleet.routing.table import AccessRule, AppAccess, Network, RouteTable

__all__ = [
    "AccessRule",
    "AppAccess",
    "allows",
    "client_region",
    "distinct_networks",
    "holding",
    "region_holding",
]


def allows(
    access: AppAccess | None, client: ClientAddress | None, client_region: str | None
) -> str | None:
    """None when the client may reach the app, else why not (for a 403 body or a log).

    ``client`` is the client's address or ECS subnet, parsed or as text (None: unknown, which
    no network holds; unparsable text counts as unknown too); ``client_region`` the region of
    the site it is nearest to, None when unknown. The first rule that refuses is named.
    """
    if access is None or not access.rules:
        return None
    prefix = _prefix(client)
    for rule in access.rules:
        if client_region is not None and client_region in rule.regions:
            continue
        if prefix is not None and any(_holds(network, prefix) for network in rule.networks):
            continue
        shown = "client " + (str(client) if client is not None else "(address unknown)")
        where = f"region {client_region}" if client_region is not None else "region unknown"
        whose = f" ({rule.who}'s rule)" if len(access.rules) > 1 else ""
        return f"{shown} ({where}) may not reach {access.app}: allowed {rule.describe()}{whose}"
    return None


def holding(networks: Sequence[Network], client: ClientAddress | None) -> frozenset[int]:
    """The positions of the ``networks`` that hold ``client``: all the access decisions over
    these networks can tell of the client's address (a cache key for DNS answers)."""
    prefix = _prefix(client)
    if prefix is None:
        return frozenset()
    return frozenset(i for i, network in enumerate(networks) if _holds(network, prefix))


def client_region(
    table: RouteTable, origin: str | None, client: ClientAddress | None
) -> str | None:
    """The region an ingress judges a client by: that of ``origin``, the site it is nearest to
    (None when no site of this table holds it), else that of the region whose networks hold the
    client (``region_holding``), else None."""
    if origin is not None:
        point = table.sites.get(origin)
        return point.region if point is not None else None
    return region_holding(table.region_networks, client)


def region_holding(
    region_networks: Mapping[str, Sequence[Network]], client: ClientAddress | None
) -> str | None:
    """The region whose networks hold ``client`` (address or subnet, as ``allows`` takes it), by
    longest prefix, equal prefixes to the first name; None when none does."""
    prefix = _prefix(client)
    if prefix is None:
        return None
    best: tuple[int, str] | None = None
    for region, networks in region_networks.items():
        for network in networks:
            if _holds(network, prefix) and (
                best is None
                or network.prefixlen > best[0]
                or (network.prefixlen == best[0] and region < best[1])
            ):
                best = (network.prefixlen, region)
    return best[1] if best is not None else None


def distinct_networks(accesses: Iterable[AppAccess]) -> tuple[Network, ...]:
    """Every network the given apps' rules name, once each, in a stable order."""
    found = {network for access in accesses for network in access.networks}
    return tuple(sorted(found, key=lambda n: (n.version, int(n.network_address), n.prefixlen)))


def _prefix(client: ClientAddress | None) -> tuple[int, int, int] | None:
    if client is None:
        return None
    try:
        return _as_prefix(client)
    except ValueError:
        return None


def _holds(network: Network, prefix: tuple[int, int, int]) -> bool:
    version, value, length = prefix
    return (
        network.version == version
        and network.prefixlen <= length
        and value & int(network.netmask) == int(network.network_address)
    )
