"""Status reports, written in batches: one transaction for every report of a moment.

When an app starts at ten thousand sites, ten thousand reports come within a second or two; one
transaction each would be ten thousand commits. Here a report joins the next batch, written every
``period`` seconds (a group commit), and its sender is answered once the batch is written: an
agent told "taken" can lose its report only with the database, not with the hub. Of the reports
of one site in a batch the last counts (each replaces what the site runs whole).
"""

from __future__ import annotations

import asyncio
import logging

from edgefleet.hub.store import ObservedStore
from edgefleet.model import StatusReport

log = logging.getLogger(__name__)


class ReportBuffer:
    """Status reports waiting to be written (see the module)."""

    def __init__(self, store: ObservedStore, *, period: float = 0.05, limit: int = 50_000) -> None:
        self._store = store
        self._period = period
        self._limit = limit
        self._pending: list[tuple[StatusReport, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self.batches = 0
        """Batches written (for tests and metrics)."""

    @property
    def pending(self) -> int:
        """Reports received and not yet written."""
        return len(self._pending)

    async def submit(self, report: StatusReport) -> bool:
        """Take a report and return once it is written: True; False when too many wait or the
        write failed (the agent sends it again after a backoff)."""
        if len(self._pending) >= self._limit:
            return False
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((report, done))
        self._wake.set()
        return await done

    async def flush(self) -> int:
        """Write what has been collected; returns how many reports."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._store.save_reports, [r for r, _ in batch])
        except Exception:
            log.exception(
                "writing %d status reports failed; their agents send them again", len(batch)
            )
            ok = False
        else:
            ok = True
            self.batches += 1
        for _, done in batch:
            if not done.done():  # a sender that went away cancelled it
                done.set_result(ok)
        return len(batch) if ok else 0

    async def run(self) -> None:
        """Write a batch as soon as reports wait, at most every ``period`` seconds."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._period)  # the reports of this moment join one batch
            self._wake.clear()
            await self.flush()
