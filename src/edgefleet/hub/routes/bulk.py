"""/api/v1/apply: many objects created or updated at once, in order, all or none.

Each object goes through what its own PUT would: its validation (a 422 locates the field from the
request's root, ``["body", "items", 3, "spec", ...]``), its route's access rule (the same RULES
entry and decision: a refusal is exactly the PUT's), the apply check of apps against their
tenant's policy (with the objects before it in the request counted as applied), and the store's
write (``ObjectStore.put_many``: the same per-object write as ``put``, all in one transaction).
A refusal of one object refuses the whole request; the ``X-Edgefleet-Item`` header names the
object by its index. Events are recorded per object changed, and placement and routing are set
off once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from edgefleet.hub.audit import NOTE, AuditNote
from edgefleet.hub.auth import PrincipalDep, decide_apply
from edgefleet.hub.policy import ApplyCheck
from edgefleet.hub.routes.common import APP_APPLIED, SITE_APPLIED, object_event
from edgefleet.hub.routes.tenants import describe_policy
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.hub.store import Outcome, Written
from edgefleet.identity import Principal
from edgefleet.model import (
    ITEM_HEADER,
    App,
    Applied,
    AppliedList,
    ApplyList,
    Event,
    Site,
    Tenant,
    apply_summary,
)

router = APIRouter(prefix="/api/v1", tags=["objects"])
HubDep = Annotated[Hub, Depends(get_hub)]


def _authorize(principal: Principal, objs: Sequence[Site | App | Tenant]) -> None:
    """Refuse the request as the PUT of its first object the caller may not apply would be."""
    for index, obj in enumerate(objs):
        decision = decide_apply(principal, obj.kind, obj.metadata.tenant, obj.metadata.name)
        if not decision.allowed:
            raise HTTPException(decision.status, decision.detail, headers={ITEM_HEADER: str(index)})


def _check(hub: Hub, objs: Sequence[Site | App | Tenant]) -> None:
    """Refuse (422) the request if its tenant's policy cannot take one of its apps."""
    check = ApplyCheck(hub)
    for index, obj in enumerate(objs):
        if isinstance(obj, App):
            refusal = check.refusal(obj)
            if refusal is not None:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    refusal,
                    headers={ITEM_HEADER: str(index)},
                )
        check.applied(obj)


def _event(obj: Site | App | Tenant, written: Written) -> Event:
    """The event of one object changed: what its own PUT records."""
    reason = "Created" if written.outcome == Outcome.CREATED else "Updated"
    if isinstance(obj, Tenant):
        return object_event(obj, reason, describe_policy(obj))
    if isinstance(obj, App):
        return object_event(obj, reason, APP_APPLIED.format(generation=written.generation))
    return object_event(obj, reason, SITE_APPLIED)


@router.post(
    "/apply",
    response_model=AppliedList,
    responses={
        403: {"description": "The caller may not apply one of the objects (its own PUT's rule)."},
        409: {"description": "An object names a stale resourceVersion."},
        422: {"description": "An object is invalid, or its tenant's policy cannot take it."},
    },
)
async def apply_objects(
    batch: ApplyList, hub: HubDep, principal: PrincipalDep, request: Request
) -> Response:
    """Create or update every object of a ``List`` (sites, apps, tenants; at most 1,000), in
    order, in one transaction: all of them or, when one is refused, none. Answers what became
    of each."""
    objs = batch.items
    _authorize(principal, objs)
    await asyncio.to_thread(_check, hub, objs)
    written = await asyncio.to_thread(hub.store.objects.put_many, objs)
    changed = [
        (obj, w) for obj, w in zip(objs, written, strict=True) if w.outcome != Outcome.UNCHANGED
    ]
    if changed:
        await asyncio.to_thread(hub.store.events.add, [_event(obj, w) for obj, w in changed])
        hub.wrote()
    result = AppliedList(
        items=[
            Applied.model_validate(
                {
                    "kind": w.kind,
                    "tenant": w.tenant,
                    "name": w.name,
                    "outcome": w.outcome.value,
                    "resourceVersion": w.resource_version,
                }
            )
            for w in written
        ]
    )
    # One audit entry for the request: what became of the objects, and their tenant if one.
    tenants = {
        obj.metadata.tenant or (obj.metadata.name if isinstance(obj, Tenant) else "")
        for obj in objs
    }
    request.scope[NOTE] = AuditNote(
        result="; ".join(apply_summary(result.items)) or "nothing to apply",
        tenant=tenants.pop() if len(tenants) == 1 else "",
    )
    return Response(result.model_dump_json(by_alias=True), media_type="application/json")
