"""The central DNS: authoritative for the fleet's zone, answering by where the client is.

A client is located by its EDNS Client Subnet, else by its source address, against the sites'
client networks (longest prefix). Sites that most neighbours' probes call down are left out at
once, before the hub's own heartbeat verdict. A client that an app's access rules do not let in
(judged by its address and the region of the site it is located at; an unlocated client has no
region) is answered REFUSED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING

from edgefleet.dns.responder import Responder
from edgefleet.dns.routed import RoutedZone
from edgefleet.dns.server import DnsServer
from edgefleet.dns.zone import Client, Lookup
from edgefleet.routing.answer import locate
from edgefleet.routing.table import RouteTable

if TYPE_CHECKING:
    from edgefleet.hub.runtime import Hub

log = logging.getLogger(__name__)


class CentralZone(RoutedZone):
    """The fleet zone as the hub sees it: every client located by its address."""

    def __init__(self, *, address: str, max_answers: int = 2) -> None:
        super().__init__(name="hub", address=address, max_answers=max_answers)
        self._down: frozenset[str] = frozenset()
        self._version = ""

    def update(self, table: RouteTable, down: frozenset[str]) -> None:
        """Take a new routing table and set of probe-down sites."""
        self._take(table)
        self._down = down
        self._version = f"{table.version}/{','.join(sorted(down))}"

    @property
    def down(self) -> frozenset[str]:
        """Sites left out because neighbours' probes call them down."""
        return self._down

    def version(self) -> str:
        """Changes with the table and with the probe verdicts."""
        return self._version

    def client_key(self, client: Client) -> Hashable:
        """Answers depend on the client only through the site it is located at, and through
        which of the networks of the apps' access rules hold it."""
        return locate(self.table, client.subnet or client.source), self.access_key(client)

    def lookup(self, tenant: str, app: str, client: Client) -> Lookup | None:
        """Nearest healthy serving sites to the client's site; ``Refused`` when the app's
        access rules do not let the client in."""
        origin, prefix = locate(self.table, client.subnet or client.source)
        point = self.table.sites.get(origin.site) if origin.site is not None else None
        self.check_access(tenant, app, client, point.region if point is not None else None)
        health = dict.fromkeys(self._down, False)
        scope = self.access_scope(tenant, app, client, prefix)
        return self._lookup(tenant, app, origin, scope_prefix=scope, health=health)


async def start_central_dns(hub: Hub) -> DnsServer:
    """Serve the central DNS in the hub's loop, following the routing table and probe verdicts."""
    config = hub.config
    zone = CentralZone(address=config.dns_host, max_answers=config.dns_answers)
    zone.update(hub.routing.table, hub.peers.down())
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
                zone.update(hub.routing.table, down)

    hub.tasks.append(asyncio.create_task(follow()))
    return server
