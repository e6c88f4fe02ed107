"""/api/v1/demand and /api/v1/stream: the whole fleet at once, for dashboards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from edgefleet.hub.accounts import Refused
from edgefleet.hub.auth import (
    PrincipalDep,
    Unavailable,
    authenticate,
    bearer,
    visible_tenants,
)
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.hub.store import utcnow
from edgefleet.model import FleetDemand

router = APIRouter(prefix="/api/v1", tags=["fleet"])
HubDep = Annotated[Hub, Depends(get_hub)]

KEEPALIVE = 15.0
"""Seconds between keep-alive comments on a quiet stream."""


@router.get("/demand", response_model=list[FleetDemand])
async def fleet_demand(hub: HubDep, principal: PrincipalDep) -> list[FleetDemand]:
    """Every app's decayed demand per origin site, for the apps the caller may see.

    One call for the whole fleet (a map sizes each site by the requests it draws); the same
    figures as each app's ``/demand``.
    """
    visible = visible_tenants(principal)
    matrix = await asyncio.to_thread(hub.store.demand.matrix, utcnow(), hub.demand.tau)
    return [
        FleetDemand(tenant=tenant, app=app, **row.model_dump())
        for (tenant, app), rows in sorted(matrix.items())
        if visible is None or tenant in visible
        for row in rows
    ]


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}},
)
async def stream(request: Request, hub: HubDep, principal: PrincipalDep) -> StreamingResponse:
    """Server-sent events saying what changed: ``sites``, ``apps``, ``events``, ``demand``.

    The events carry no objects: read them again through the API (with the same token, so each
    caller sees only its tenants' changes). ``ready`` comes first; a comment every 15 s keeps
    quiet connections open. The token is checked again before each event or comment: once it is
    revoked or expired, a ``refused`` event ends the stream. Send the token in the
    ``Authorization`` header, never in the URL.
    """
    token = bearer(request) or ""
    watcher = hub.changes.watch(visible_tenants(principal))

    async def body() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\nevent: ready\ndata: {}\n\n"
            while True:
                kinds = await watcher.next(KEEPALIVE)
                if kinds is None:
                    return
                # The token is checked again at every wake: one revoked or expired since the
                # stream opened ends it at the next change or keep-alive.
                try:
                    await asyncio.to_thread(authenticate, hub, token)
                except Refused as exc:
                    yield f"event: refused\ndata: {json.dumps({'detail': str(exc)})}\n\n"
                    return
                except Unavailable:
                    pass  # the store is down for a moment: the next wake decides
                if not kinds:
                    yield ": keep-alive\n\n"
                    continue
                at = utcnow().isoformat()
                for kind in kinds:
                    yield f"event: {kind}\ndata: {json.dumps({'at': at})}\n\n"
        finally:
            hub.changes.forget(watcher)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
