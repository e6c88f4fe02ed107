"""/api/v1/dns: what the fleet's DNS answers for a name, and why."""

from __future__ import annotations

from typing import Annotated, Any

import dns.name
from fastapi import APIRouter, Depends, HTTPException, status

from edgefleet.dns.routed import ZONE
from edgefleet.hub.auth import PrincipalDep
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.routing.answer import choose, locate
from edgefleet.routing.table import Origin

router = APIRouter(prefix="/api/v1/dns", tags=["dns"])


@router.get("/explain")
def explain(
    hub: Annotated[Hub, Depends(get_hub)],
    principal: PrincipalDep,
    name: str,
    site: str | None = None,
    client_ip: str | None = None,
    limit: int = 2,
) -> dict[str, Any]:
    """The answer for ``<app>.<tenant>.edge.internal`` asked at a site or by a client address.

    Lists every site serving the app with its distance, and why a site was skipped.
    """
    try:
        qname = dns.name.from_text(name if name.endswith(".") else name + ".")
    except dns.exception.DNSException as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name!r}: {exc}") from None
    labels = [label.decode().lower() for label in qname.relativize(ZONE).labels]
    if not qname.is_subdomain(ZONE) or len(labels) != 2:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{name!r} is not an app name: expected <app>.<tenant>.edge.internal",
        )
    app, tenant = labels
    if not principal.in_tenant(tenant):
        # Another tenant's app: the same answer as one that does not exist.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no app {app!r} in tenant {tenant!r}")
    table = hub.routing.table
    prefix = 0
    if site is not None:
        if site not in table.sites:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"site {site!r} not found")
        origin = Origin(site=site)
    elif client_ip is not None:
        try:
            origin, prefix = locate(table, client_ip)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    else:
        origin = Origin()
    down = hub.peers.down()
    answer = choose(
        table, tenant, app, origin, health=dict.fromkeys(down, False), limit=max(1, limit)
    )
    if answer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no app {app!r} in tenant {tenant!r}")
    return {
        "name": str(qname),
        "tenant": tenant,
        "app": app,
        "origin": {"site": origin.site, "prefix": prefix},
        "answer": [{"site": s.name, "ip": s.ip, "port": s.ingress_port} for s in answer.sites],
        "considered": [
            {
                "site": c.site,
                "rttMs": None if c.rtt_ms is None else round(c.rtt_ms, 2),
                "measured": c.measured,
                "ready": c.ready,
                "headroom": c.headroom,
                "wakeable": c.wakeable,
                "chosen": c.chosen,
                "reason": c.reason,
            }
            for c in answer.considered
        ],
        "probeDown": sorted(down),
        "tableVersion": table.version,
    }
