"""Fleet DNS: sends each client to the nearest healthy site running an app.

An edge DNS at every site (run by the site's agent) and a central DNS at the hub are both
authoritative for ``edge.internal.``; an app is ``<app>.<tenant>.edge.internal``. Each is a
``Responder`` over its own ``FleetZone``, served by a ``DnsServer``.
"""

from edgefleet.dns.responder import EDNS_PAYLOAD, Answer, Responder, resolve, soa_serial
from edgefleet.dns.server import DnsServer, WireHandler, run_dns_server
from edgefleet.dns.zone import ORIGIN, Client, FleetZone, Lookup, Refused, StaticZone, Target

__all__ = [
    "EDNS_PAYLOAD",
    "ORIGIN",
    "Answer",
    "Client",
    "DnsServer",
    "FleetZone",
    "Lookup",
    "Refused",
    "Responder",
    "StaticZone",
    "Target",
    "WireHandler",
    "resolve",
    "run_dns_server",
    "soa_serial",
]
