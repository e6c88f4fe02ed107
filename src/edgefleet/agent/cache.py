"""The agent's on-disk copy of its desired state: what lets a site run with the hub away."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from edgefleet.model import DesiredState

log = logging.getLogger(__name__)


class DesiredStateCache:
    """One JSON file replaced atomically: a crash leaves the old or the new state, never half."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> DesiredState | None:
        """The last saved state, or None if there is none or it is unreadable."""
        try:
            return DesiredState.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, ValueError) as exc:
            # Unreadable cache: start empty and let the hub refill it, but say so.
            log.warning("ignoring unreadable desired-state cache %s: %s", self.path, exc)
            return None

    def save(self, state: DesiredState) -> None:
        """Write ``state`` durably: temp file, fsync, rename, fsync the directory."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps(state.model_dump(mode="json", by_alias=True), indent=1).encode()
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
