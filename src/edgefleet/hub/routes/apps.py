"""/api/v1/tenants/{tenant}/apps and /api/v1/apps: what tenants run."""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import PlainTextResponse

from edgefleet.hub import paging
from edgefleet.hub.auth import PrincipalDep, visible_tenants
from edgefleet.hub.policy import check_apply
from edgefleet.hub.routes.common import (
    APP_APPLIED,
    ObjectList,
    apply_object,
    record_event,
)
from edgefleet.hub.routes.lists import Continue, Limit, after, answer, json_answer
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.hub.store import NotFound, app_status, utcnow
from edgefleet.identity import Principal
from edgefleet.model import App, AppDemand

router = APIRouter(prefix="/api/v1", tags=["apps"])
HubDep = Annotated[Hub, Depends(get_hub)]


@router.get(
    "/apps",
    response_model=ObjectList[App],
    response_model_exclude_none=True,
    responses={400: {"description": "The continue token is not one of this list."}},
)
def list_all_apps(
    hub: HubDep,
    principal: PrincipalDep,
    tenant: str | None = None,
    limit: Limit = None,
    continue_: Continue = None,
) -> Response:
    """Apps of every tenant the caller may see (or of ``tenant``), by tenant and name: every
    one, or a page of ``limit``."""
    if tenant is not None:
        return _tenant_page(hub, tenant, principal, limit=limit, token=continue_)
    start = after(continue_, paging.ALL_APPS)
    page = hub.store.objects.page_apps(
        tenants=visible_tenants(principal),
        after=(start[0], start[1]) if start else None,
        limit=limit,
    )
    return answer(
        App, page, paging.ALL_APPS, lambda app: [app.metadata.tenant or "", app.metadata.name]
    )


@router.get(
    "/tenants/{tenant}/apps",
    response_model=ObjectList[App],
    response_model_exclude_none=True,
    responses={400: {"description": "The continue token is not one of this list."}},
)
def list_apps(
    tenant: str,
    hub: HubDep,
    principal: PrincipalDep,
    limit: Limit = None,
    continue_: Continue = None,
) -> Response:
    """The apps of one tenant, by name: every one, or a page of ``limit``."""
    return _tenant_page(hub, tenant, principal, limit=limit, token=continue_)


def _tenant_page(
    hub: Hub, tenant: str, principal: Principal, *, limit: int | None, token: str | None
) -> Response:
    """A page of one tenant's apps (none if the caller may not see the tenant)."""
    list_id = paging.tenant_apps(tenant)
    start = after(token, list_id)
    visible = visible_tenants(principal)
    page = hub.store.objects.page_apps(
        tenants=[tenant] if visible is None or tenant in visible else [],
        after=(tenant, start[0]) if start else None,
        limit=limit,
    )
    return answer(App, page, list_id, lambda app: [app.metadata.name])


def _check_path(app: App, tenant: str, name: str | None = None) -> None:
    if app.metadata.tenant != tenant:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"metadata.tenant {app.metadata.tenant!r} does not match the URL's {tenant!r}",
        )
    if name is not None and app.metadata.name != name:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"metadata.name {app.metadata.name!r} does not match the URL's {name!r}",
        )


@router.post(
    "/tenants/{tenant}/apps",
    response_model=App,
    response_model_exclude_none=True,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "An app with this name exists."}},
)
def create_app(tenant: str, app: App, hub: HubDep) -> App:
    """Create an app; 409 if the tenant has one of that name."""
    _check_path(app, tenant)
    check_apply(hub, app)
    stored, _ = hub.store.objects.put(app, create_only=True)
    record_event(hub, stored, "Created", f"generation {stored.metadata.generation}")
    hub.wrote()
    assert isinstance(stored, App)
    return stored


@router.get("/tenants/{tenant}/apps/{name}", response_model=App, response_model_exclude_none=True)
async def get_app(tenant: str, name: str, hub: HubDep) -> Response:
    """One app with replicas per site: the app as stored, its replicas as this hub's picture
    of the fleet holds them (which follows the store's change feed: a hub's own writes at once,
    other hubs' within a feed poll). Reading them from the store instead would cost two reads
    of a row per site of the app."""
    fleet = hub.fleet
    if not fleet.loaded:
        return json_answer(await asyncio.to_thread(hub.store.objects.get_app, tenant, name))
    desired, wakeable, observed = fleet.app_sites((tenant, name))

    def compose() -> Response:
        found = hub.store.objects.bare_apps([(tenant, name)])
        if not found:
            raise NotFound(f"app {name!r} not found in tenant {tenant!r}")
        app = found[0]
        status = app_status(
            desired,
            wakeable,
            observed,
            observed_generation=app.status.observed_generation,
            message=app.status.message,
        )
        return json_answer(app.model_copy(update={"status": status}))

    return await asyncio.to_thread(compose)


@router.put(
    "/tenants/{tenant}/apps/{name}",
    response_model=App,
    response_model_exclude_none=True,
    responses={201: {"description": "Created."}, 409: {"description": "Stale resourceVersion."}},
)
def apply_app(tenant: str, name: str, app: App, hub: HubDep, response: Response) -> App:
    """Create or update an app (``apply``); a stale ``resourceVersion`` gets 409."""
    _check_path(app, tenant, name)
    check_apply(hub, app)
    return apply_object(hub, app, response, APP_APPLIED)


@router.delete("/tenants/{tenant}/apps/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_app(tenant: str, name: str, hub: HubDep) -> None:
    """Delete an app; every site running it is told to stop its replicas."""
    await asyncio.to_thread(hub.store.objects.delete_app, tenant, name)
    await hub.watch.refresh()
    hub.wrote()


@router.get("/tenants/{tenant}/apps/{name}/logs", response_class=PlainTextResponse)
async def app_logs(
    tenant: str,
    name: str,
    hub: HubDep,
    site: str | None = None,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> str:
    """Replica logs, fetched from the agents of the sites running the app."""
    app = await asyncio.to_thread(hub.store.objects.get_app, tenant, name)
    sites = [site] if site else [s.site for s in app.status.sites]
    if not sites:
        return ""
    chunks = []
    # Agents give logs to a credential the hub signs for itself (edgefleet.identity.credentials).
    headers = {"Authorization": f"Bearer {await asyncio.to_thread(hub.own_credential)}"}
    async with httpx.AsyncClient(timeout=5.0, headers=headers) as client:
        for site_name in sites:
            endpoint = await asyncio.to_thread(hub.store.observed.agent_endpoint, site_name)
            if endpoint is None:
                chunks.append(f"# site {site_name}: no agent endpoint reported\n")
                continue
            try:
                reply = await client.get(f"{endpoint}/logs/{tenant}/{name}", params={"tail": tail})
                reply.raise_for_status()
                chunks.append(f"# site {site_name}\n{reply.text}")
            except httpx.HTTPError as exc:
                chunks.append(f"# site {site_name}: agent did not answer: {exc}\n")
    return "".join(chunks)


@router.get(
    "/tenants/{tenant}/apps/{name}/demand",
    response_model=list[AppDemand],
    response_model_exclude_none=True,
)
async def app_demand(tenant: str, name: str, hub: HubDep) -> list[AppDemand]:
    """The app's decayed demand per origin site, busiest first (by requests in flight).

    Rates are decayed to now with the hub's ``demand_tau``; reports received in the last second
    may not be counted yet (they are written once a second).
    """
    await asyncio.to_thread(hub.store.objects.get_app, tenant, name)
    matrix = await asyncio.to_thread(
        hub.store.demand.matrix, utcnow(), hub.demand.tau, tenant, name
    )
    return matrix.get((tenant, name), [])
