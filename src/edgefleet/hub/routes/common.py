"""Pieces shared by the routers."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

from edgefleet.hub.runtime import Hub
from edgefleet.hub.store import utcnow
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
    hub.store.add_events(
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
