"""The central DNS: authoritative for the fleet's zone, answering by where the client is.

A client is located by its EDNS Client Subnet, else by its source address, against the sites'
client networks (longest prefix). Sites that most neighbours' probes call down are left out at
once, before the hub's own heartbeat verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING

import dns.name

from edgefleet.dns.responder import Responder
from edgefleet.dns.server import DnsServer
from edgefleet.dns.zone import Client, Lookup, Target, target_for
from edgefleet.routing.answer import choose, locate
from edgefleet.routing.convert import route_table
from edgefleet.routing.table import RouteTable

if TYPE_CHECKING:
    from edgefleet.hub.runtime import Hub

log = logging.getLogger(__name__)

ZONE = dns.name.from_text("edge.internal.")


class CentralZone:
    """The fleet zone as the hub sees it: every client located by its address."""

    origin = ZONE

    def __init__(self, *, address: str, max_answers: int = 2) -> None:
        self._address = address
        self._max_answers = max_answers
        self.table = RouteTable(version="")
        self._down: frozenset[str] = frozenset()
        self._tenants: frozenset[str] = frozenset()
        self._version = ""

    def update(self, table: RouteTable, down: frozenset[str]) -> None:
        """Take a new routing table and set of probe-down sites."""
        self.table = table
        self._down = down
        self._tenants = frozenset(tenant for tenant, _ in table.apps)
        self._version = f"{table.version}/{','.join(sorted(down))}"

    @property
    def down(self) -> frozenset[str]:
        """Sites left out because neighbours' probes call them down."""
        return self._down

    def version(self) -> str:
        """Changes with the table and with the probe verdicts."""
        return self._version

    def client_key(self, client: Client) -> Hashable:
        """Answers depend on the client only through the site it is located at."""
        return locate(self.table, client.subnet or client.source)

    def lookup(self, tenant: str, app: str, client: Client) -> Lookup | None:
        """Nearest healthy serving sites to the client's site."""
        origin, prefix = locate(self.table, client.subnet or client.source)
        answer = choose(
            self.table,
            tenant,
            app,
            origin,
            health=dict.fromkeys(self._down, False),
            limit=self._max_answers,
        )
        if answer is None:
            return None
        targets = tuple(Target(s.name, s.ip, s.ipv6, s.ingress_port) for s in answer.sites)
        return Lookup(targets=targets, scope_prefix=prefix)

    def has_tenant(self, tenant: str) -> bool:
        """True if some app of the tenant exists."""
        return tenant in self._tenants

    def site_address(self, site: str) -> Target | None:
        """Address of a site, for SRV targets."""
        point = self.table.sites.get(site)
        if point is None:
            return None
        return Target(point.name, point.ip, point.ipv6, point.ingress_port)

    def nameserver(self) -> Target:
        """This server."""
        return target_for("hub", self._address)


async def start_central_dns(hub: Hub) -> DnsServer:
    """Serve the central DNS in the hub's loop, following the routing table and probe verdicts."""
    config = hub.config
    zone = CentralZone(address=config.dns_host, max_answers=config.dns_answers)
    zone.update(route_table(hub.routing.table), hub.peers.down())
    responder = Responder(zone, ttl=config.dns_ttl, max_answers=config.dns_answers)
    server = DnsServer(responder, config.dns_host, config.dns_port)
    await server.start()
    log.info("central DNS on %s:%d", config.dns_host, server.port)
    changed = hub.routing.listen()

    async def follow() -> None:
        # Table changes arrive as events; probe verdicts age, so look at them often too.
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.25)
            changed.clear()
            down = hub.peers.down()
            if hub.routing.table.version != zone.table.version or down != zone.down:
                zone.update(route_table(hub.routing.table), down)

    hub.tasks.append(asyncio.create_task(follow()))
    return server
