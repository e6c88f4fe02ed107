"""/api/v1/events: what happened to sites and apps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from edgefleet.hub.auth import PrincipalDep, visible_tenants
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.model import Event

router = APIRouter(prefix="/api/v1/events", tags=["events"])


@router.get("", response_model=list[Event], response_model_exclude_none=True)
def list_events(
    hub: Annotated[Hub, Depends(get_hub)],
    principal: PrincipalDep,
    kind: str | None = None,
    tenant: str | None = None,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[Event]:
    """The newest events matching the filters, oldest first."""
    visible = visible_tenants(principal)
    if visible is None:
        return hub.store.events.list(kind=kind, tenant=tenant, name=name, limit=limit)
    if tenant is not None:
        return (
            hub.store.events.list(kind=kind, tenant=tenant, name=name, limit=limit)
            if tenant in visible
            else []
        )
    # A developer or viewer sees the events of its tenants only: merge them, newest last.
    merged = [
        e
        for t in sorted(visible)
        for e in hub.store.events.list(kind=kind, tenant=t, name=name, limit=limit)
    ]
    return sorted(merged, key=lambda e: e.time)[-limit:]
