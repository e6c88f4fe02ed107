"""Pieces shared by the routers."""

from __future__ import annotations

from typing import Generic, TypeVar

from fastapi import Response, status
from pydantic import BaseModel, Field

from edgefleet.hub.runtime import Hub
from edgefleet.hub.store import Outcome, utcnow
from edgefleet.model import API_VERSION, App, Event, ListMeta, Site, Tenant

T = TypeVar("T")

OUTCOME_HEADER = "X-Edgefleet-Outcome"
"""Response header of an apply: created, configured or unchanged."""
SITE_APPLIED = "site applied"
"""The message of the event of a site applied."""
APP_APPLIED = "generation {generation}"
"""The message of the event of an app applied."""


class ObjectList(BaseModel, Generic[T]):
    """A list of objects, as Kubernetes returns them."""

    apiVersion: str = API_VERSION
    kind: str
    metadata: ListMeta = Field(default_factory=ListMeta)
    items: list[T]


def object_event(obj: Site | App | Tenant, reason: str, message: str) -> Event:
    """An event about ``obj``, now."""
    return Event(
        time=utcnow(),
        kind=obj.kind,
        tenant=obj.metadata.tenant,
        name=obj.metadata.name,
        reason=reason,
        message=message,
    )


def record_event(hub: Hub, obj: Site | App, reason: str, message: str) -> None:
    """Append an event about ``obj``."""
    hub.store.events.add([object_event(obj, reason, message)])


Obj = TypeVar("Obj", Site, App)


def apply_object(hub: Hub, obj: Obj, response: Response, message: str) -> Obj:
    """Create or update ``obj``; sets the outcome header and 201, records, triggers placement."""
    stored, outcome = hub.store.objects.put(obj)
    response.headers[OUTCOME_HEADER] = outcome.value
    if outcome != Outcome.UNCHANGED:
        reason = "Created" if outcome == Outcome.CREATED else "Updated"
        record_event(hub, stored, reason, message.format(generation=stored.metadata.generation))
        hub.wrote()
    if outcome == Outcome.CREATED:
        response.status_code = status.HTTP_201_CREATED
    assert isinstance(stored, type(obj))
    return stored
