"""Pieces shared by the routers."""

from __future__ import annotations

from typing import Generic, TypeVar

from fastapi import Response, status
from pydantic import BaseModel

from edgefleet.hub.runtime import Hub
from edgefleet.hub.store import Outcome, utcnow
from edgefleet.model import API_VERSION, App, Event, Site

T = TypeVar("T")

OUTCOME_HEADER = "X-Edgefleet-Outcome"
"""Response header of an apply: created, configured or unchanged."""


class ObjectList(BaseModel, Generic[T]):
    """A list of objects, as Kubernetes returns them."""

    apiVersion: str = API_VERSION
    kind: str
    items: list[T]


def record_event(hub: Hub, obj: Site | App, reason: str, message: str) -> None:
    """Append an event about ``obj``."""
    hub.store.events.add(
        [
            Event(
                time=utcnow(),
                kind=obj.kind,
                tenant=obj.metadata.tenant,
                name=obj.metadata.name,
                reason=reason,
                message=message,
            )
        ]
    )


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
