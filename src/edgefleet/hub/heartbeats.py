"""Heartbeats, collected in memory and written in one small transaction per period.

Ten thousand agents beating every few seconds would otherwise be thousands of transactions a
second; batched, they are one upsert per second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from edgefleet.hub.lanes import Lane
from edgefleet.hub.store import Store, utcnow

log = logging.getLogger(__name__)


class HeartbeatBuffer:
    """Collects heartbeats in memory and writes them in one small transaction per period.

    Ten thousand agents beating every few seconds would otherwise be thousands of transactions a
    second; batched, they are one upsert per second.
    """

    def __init__(self, store: Store, *, period: float = 1.0) -> None:
        self._store = store
        self._lane = Lane("heartbeats")
        self._period = period
        self._pending: dict[str, tuple[datetime, int, str | None]] = {}
        self._problems: dict[str, str | None] = {}
        self._listeners: list[Callable[[str, datetime, str | None], None]] = []

    def listen(self, listener: Callable[[str, datetime, str | None], None]) -> None:
        """Call ``listener(site, at, problem)`` for each heartbeat as it comes (no I/O in it)."""
        self._listeners.append(listener)

    def beat(self, site: str, observed_revision: int, problem: str | None = None) -> None:
        """Record a heartbeat and what the agent says keeps it from running replicas (no I/O)."""
        at = utcnow()
        self._pending[site] = (at, observed_revision, problem)
        self._problems[site] = problem
        for listener in self._listeners:
            listener(site, at, problem)

    def problem(self, site: str) -> str | None:
        """The problem the site's latest heartbeat to this hub reported, if any."""
        return self._problems.get(site)

    def recent(self) -> dict[str, datetime]:
        """Heartbeats received but not yet written."""
        return {site: at for site, (at, _, _) in self._pending.items()}

    def recent_problems(self) -> dict[str, str | None]:
        """Per site with a heartbeat not yet written, its problem (None: it has none now)."""
        return {site: problem for site, (_, _, problem) in self._pending.items()}

    async def flush(self) -> None:
        """Write what has been collected."""
        batch, self._pending = self._pending, {}
        beats = [(site, at, rev, problem) for site, (at, rev, problem) in batch.items()]
        try:
            await self._lane.run(self._store.observed.record_heartbeats, beats)
        except Exception:
            log.exception("heartbeat flush failed; keeping %d heartbeats", len(beats))
            for site, at, rev, problem in beats:
                self._pending.setdefault(site, (at, rev, problem))

    async def run(self) -> None:
        """Flush every period."""
        while True:
            await asyncio.sleep(self._period)
            await self.flush()
