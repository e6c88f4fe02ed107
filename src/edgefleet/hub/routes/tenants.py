"""/api/v1/tenants: tenants' fleet policies (residency, quota, access).

``/api/v1/tenants/{tenant}/apps`` (a tenant's apps) lives in ``routes/apps.py``; the paths do not
overlap. A tenant needs no Tenant object to have apps: the object only adds policy, and deleting
it lifts the policy and leaves the apps.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status

from edgefleet.hub import paging
from edgefleet.hub.auth import PrincipalDep, visible_tenants
from edgefleet.hub.routes.common import OUTCOME_HEADER, ObjectList
from edgefleet.hub.routes.lists import Continue, Limit, after, answer
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.hub.store import Outcome, utcnow
from edgefleet.model import Event, Tenant
from edgefleet.placement.policy import format_cpu, format_memory

router = APIRouter(prefix="/api/v1/tenants", tags=["tenants"])
HubDep = Annotated[Hub, Depends(get_hub)]


def _record(hub: Hub, name: str, reason: str, message: str) -> None:
    hub.store.events.add(
        [Event(time=utcnow(), kind="Tenant", name=name, reason=reason, message=message)]
    )


def describe_policy(tenant: Tenant) -> str:
    """The policy in one line, for events."""
    spec = tenant.spec
    quota = spec.quota
    limits = [
        f"{label} {shown}"
        for label, shown in (
            ("replicas", None if quota.replicas is None else str(quota.replicas)),
            ("cpu", None if quota.cpu is None else format_cpu(quota.cpu)),
            ("memory", None if quota.memory is None else format_memory(quota.memory)),
        )
        if shown is not None
    ]
    parts = [
        f"regions {', '.join(spec.regions) or 'any'}",
        f"quota {', '.join(limits) or 'none'}",
        "access "
        + (
            "any client"
            if spec.access.open
            else ", ".join(spec.access.networks + spec.access.regions)
        ),
    ]
    return "; ".join(parts)


async def _changed(hub: Hub) -> None:
    """A policy changed: place again, route again, and wake the sites whose apps it governs."""
    await hub.watch.refresh()
    hub.wrote()


@router.get(
    "",
    response_model=ObjectList[Tenant],
    response_model_exclude_none=True,
    responses={400: {"description": "The continue token is not one of this list."}},
)
def list_tenants(
    hub: HubDep, principal: PrincipalDep, limit: Limit = None, continue_: Continue = None
) -> Response:
    """Tenants with a policy that the caller may see, with what their apps take now, by name:
    every one, or a page of ``limit``."""
    start = after(continue_, paging.TENANTS)
    page = hub.store.objects.page_tenants(
        names=visible_tenants(principal), after=start[0] if start else None, limit=limit
    )
    return answer(Tenant, page, paging.TENANTS, lambda tenant: [tenant.metadata.name])


@router.post(
    "",
    response_model=Tenant,
    response_model_exclude_none=True,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "A tenant with this name exists."}},
)
async def create_tenant(tenant: Tenant, hub: HubDep) -> Tenant:
    """Create a tenant's policy; 409 if it has one."""
    stored, _ = await asyncio.to_thread(hub.store.objects.put, tenant, create_only=True)
    await asyncio.to_thread(_record, hub, stored.metadata.name, "Created", describe_policy(stored))
    await _changed(hub)
    return stored


@router.get("/{name}", response_model=Tenant, response_model_exclude_none=True)
def get_tenant(name: str, hub: HubDep) -> Tenant:
    """One tenant's policy, with what its apps take now."""
    return hub.store.objects.get_tenant(name)


@router.put(
    "/{name}",
    response_model=Tenant,
    response_model_exclude_none=True,
    responses={201: {"description": "Created."}, 409: {"description": "Stale resourceVersion."}},
)
async def apply_tenant(name: str, tenant: Tenant, hub: HubDep, response: Response) -> Tenant:
    """Create or update a tenant's policy (``apply``); a stale ``resourceVersion`` gets 409.

    Apps already running are not refused by a new policy: placement moves them into its regions
    and cuts them to its quota, and their status says so.
    """
    if tenant.metadata.name != name:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"metadata.name {tenant.metadata.name!r} does not match the URL's {name!r}",
        )
    stored, outcome = await asyncio.to_thread(hub.store.objects.put, tenant)
    response.headers[OUTCOME_HEADER] = outcome.value
    if outcome != Outcome.UNCHANGED:
        reason = "Created" if outcome == Outcome.CREATED else "Updated"
        await asyncio.to_thread(_record, hub, name, reason, describe_policy(stored))
        await _changed(hub)
    if outcome == Outcome.CREATED:
        response.status_code = status.HTTP_201_CREATED
    return stored


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tenant(name: str, hub: HubDep) -> None:
    """Delete a tenant's policy: its apps stay, now without residency, quota or access rules."""
    await asyncio.to_thread(hub.store.objects.delete_tenant, name)
    await asyncio.to_thread(_record, hub, name, "Deleted", "policy lifted; apps stay")
    await _changed(hub)
