"""Long-poll watches of per-site desired state that cost no thread while they wait.

The hub keeps every site's desired-state revision in memory and refreshes it with one indexed
query for "revisions above the highest seen" (``Store.sites_changed_since``). Local writes call
``refresh`` at once; a periodic refresh picks up the writes of other hub replicas. A waiting agent
is an asyncio future, woken only when its own site changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from edgefleet.hub.store import Store

log = logging.getLogger(__name__)


class SiteWatch:
    """Per-site revisions and the agents waiting on them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._revisions: dict[str, int] = {}
        self._high = -1
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._nudged = asyncio.Event()
        self._closed = False

    def revision(self, site: str) -> int:
        """The last known desired-state revision of ``site`` (0 if it never had one)."""
        return self._revisions.get(site, 0)

    async def refresh(self) -> None:
        """Read revisions changed since the last refresh and wake their watchers."""
        async with self._lock:
            changed = await asyncio.to_thread(self._store.revisions.changed_since, self._high)
            for site, revision in changed.items():
                self._revisions[site] = revision
                self._high = max(self._high, revision)
                for waiter in self._waiters.pop(site, ()):
                    if not waiter.done():
                        waiter.set_result(None)

    def nudge(self) -> None:
        """Desired states may have changed: refresh soon (``run``)."""
        self._nudged.set()

    async def run(self, period: float) -> None:
        """Refresh when nudged, and every ``period`` seconds anyway (writes of other hubs)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), period)
            self._nudged.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("watch refresh failed")
                await asyncio.sleep(period)

    def forget(self, site: str) -> None:
        """Drop a deleted site, waking its watchers so they see it is gone."""
        self._revisions.pop(site, None)
        for waiter in self._waiters.pop(site, ()):
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Answer every waiting agent now and every later one at once (the hub is stopping)."""
        self._closed = True
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, site: str, since: int, timeout: float) -> bool:
        """Wait until ``site``'s revision differs from ``since``; False on timeout.

        "Differs", not "is greater": an agent whose cached revision is ahead of the hub (the hub's
        database was restored from a backup) must still get the hub's state.
        """
        if self.revision(site) != since:
            return True
        if self._closed:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[site].add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(site)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[site]
        return self.revision(site) != since

    @property
    def watchers(self) -> int:
        """Agents waiting right now."""
        return sum(len(w) for w in self._waiters.values())
