"""The narrow interface between an agent and whatever runs its replicas."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from edgefleet.model import AppAssignment, ReplicaState


class Driver(Protocol):
    """Runs an agent's replicas. Level-based: ``converge`` is given the whole desired state."""

    def start(self, on_change: Callable[[], None]) -> None:
        """Adopt what already runs and start supervising; ``on_change`` fires on state changes."""

    def converge(self, assignments: Sequence[AppAssignment]) -> None:
        """Make the running replicas match ``assignments``; apps not listed are removed."""

    def observe(self) -> dict[str, list[ReplicaState]]:
        """Replicas per app key (``tenant/app``), as they are now."""

    def problem(self) -> str | None:
        """Why replicas cannot be run or changed now (the cluster's API does not answer), or
        None; the agent's heartbeat carries it, and the hub stops placing at the site."""

    def logs(self, tenant: str, app: str, *, replica: str | None = None, tail: int = 100) -> str:
        """The last ``tail`` lines of each replica's log (one replica if named)."""

    def close(self) -> None:
        """Stop supervising and leave the replicas running (they are adopted on restart)."""

    def stop_all(self) -> None:
        """Stop every replica this driver runs (site teardown), then close."""
