"""/api/v1/sites: the fleet's sites."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status

from edgefleet.geo import estimated_rtt_ms, nearest
from edgefleet.hub import paging
from edgefleet.hub.routes.common import (
    SITE_APPLIED,
    ObjectList,
    apply_object,
    record_event,
)
from edgefleet.hub.routes.lists import Continue, Limit, after, answer
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.hub.store import NotFound
from edgefleet.model import (
    ReplicaState,
    Site,
    SiteNeighbour,
    SiteNeighbours,
    SiteReporting,
)

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])
HubDep = Annotated[Hub, Depends(get_hub)]


@router.get(
    "",
    response_model=ObjectList[Site],
    response_model_exclude_none=True,
    responses={400: {"description": "The continue token is not one of this list."}},
)
def list_sites(hub: HubDep, limit: Limit = None, continue_: Continue = None) -> Response:
    """Sites with their observed status, by name: every one, or a page of ``limit``."""
    start = after(continue_, paging.SITES)
    page = hub.store.objects.page_sites(after=start[0] if start else None, limit=limit)
    return answer(Site, page, paging.SITES, lambda site: [site.metadata.name])


@router.post(
    "",
    response_model=Site,
    response_model_exclude_none=True,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "A site with this name exists."}},
)
def create_site(site: Site, hub: HubDep) -> Site:
    """Create a site; 409 if one of that name exists."""
    stored, _ = hub.store.objects.put(site, create_only=True)
    record_event(hub, stored, "Created", "site created")
    hub.wrote()
    assert isinstance(stored, Site)
    return stored


@router.get("/{name}", response_model=Site, response_model_exclude_none=True)
def get_site(name: str, hub: HubDep) -> Site:
    """One site."""
    return hub.store.objects.get_site(name)


@router.put(
    "/{name}",
    response_model=Site,
    response_model_exclude_none=True,
    responses={201: {"description": "Created."}, 409: {"description": "Stale resourceVersion."}},
)
def apply_site(name: str, site: Site, hub: HubDep, response: Response) -> Site:
    """Create or update a site (``apply``); a stale ``resourceVersion`` gets 409."""
    if site.metadata.name != name:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"metadata.name {site.metadata.name!r} does not match the URL's {name!r}",
        )
    return apply_object(hub, site, response, SITE_APPLIED)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_site(name: str, hub: HubDep) -> None:
    """Delete a site. Its agent is told to run nothing."""
    await asyncio.to_thread(hub.store.objects.delete_site, name)
    hub.watch.forget(name)
    hub.wrote()


@router.get("/{name}/replicas")
def site_replicas(name: str, hub: HubDep) -> dict[str, list[ReplicaState]]:
    """The replicas the site's agent last reported, per ``tenant/app``."""
    hub.store.objects.get_site(name)
    return hub.store.observed.site_replicas(name)


@router.get("/{name}/reporting", response_model=SiteReporting)
def site_reporting(name: str, hub: HubDep) -> SiteReporting:
    """What the hub has taken of the site's demand reports: the newest ``seq``, how many, and
    the requests they counted (compare with what clients got to tell whether any was lost)."""
    hub.store.objects.get_site(name)
    return hub.store.demand.reporting(name)


@router.get("/{name}/neighbours", response_model=SiteNeighbours)
def site_neighbours(
    name: str, hub: HubDep, count: Annotated[int, Query(ge=1, le=100)] = 8
) -> SiteNeighbours:
    """The ``count`` sites nearest to the site, with the site's own probe verdicts of them.

    An agent probes its nearest neighbours (8 by default) and spills to them, so with the
    default count this is the set the site leans on when it cannot serve alone.
    """
    sites = {s.metadata.name: s for s in hub.store.objects.list_sites()}
    if name not in sites:
        raise NotFound(f"site {name!r} not found")
    here = sites[name].spec.location
    others = ((n, s.spec.location.lat, s.spec.location.lon) for n, s in sites.items() if n != name)
    probes = hub.peers.by_prober(name)
    return SiteNeighbours(
        site=name,
        neighbours=[
            SiteNeighbour(
                site=other,
                region=sites[other].spec.region,
                zone=sites[other].spec.zone,
                distance_km=round(km, 1),
                estimated_rtt_ms=round(estimated_rtt_ms(km), 2),
                phase=sites[other].status.phase,
                probe=None if other not in probes else ("up" if probes[other] else "down"),
            )
            for other, km in nearest(here.lat, here.lon, others, count)
        ],
    )
