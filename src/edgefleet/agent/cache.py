"""The agent's on-disk copy of its desired state: what lets a site run with the hub away."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from edgefleet.files import write_atomic
from edgefleet.model import DesiredState, RoutingTable

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger(__name__)


class ModelCache(Generic[M]):
    """One JSON file replaced atomically: a crash leaves the old or the new state, never half."""

    model: type[M]

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> M | None:
        """The last saved state, or None if there is none or it is unreadable."""
        try:
            return self.model.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, ValueError) as exc:
            # Unreadable cache: start empty and let the hub refill it, but say so.
            log.warning("ignoring unreadable cache %s: %s", self.path, exc)
            return None

    def save(self, state: M) -> None:
        """Write ``state`` durably: temp file, fsync, rename, fsync the directory."""
        write_atomic(self.path, state.model_dump_json(by_alias=True, indent=1).encode())


class DesiredStateCache(ModelCache[DesiredState]):
    """The site's last desired state."""

    model = DesiredState


class RoutingTableCache(ModelCache[RoutingTable]):
    """The fleet's last routing table, for the edge DNS with the hub away."""

    model = RoutingTable
