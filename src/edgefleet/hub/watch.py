"""The agents' watch: one per site, a stream (or a long-poll) that carries news when its desired
state or its share of the routing table changed, costing no thread while it waits.

``Doorbells`` holds the agents waiting, one asyncio future each, keyed by site: whatever has news
for a site rings its bell (``ring``), and only that site's agent wakes. ``SiteWatch`` keeps every
site's desired-state revision in memory and refreshes it with one indexed query for "revisions
above the highest seen" (``SiteRevisions.changed_since``): this hub's writes nudge it at once,
a periodic refresh picks up the writes of other hubs, and each site whose revision moved has its
bell rung.

One watch per site rather than one per kind of news: ten thousand sites are ten thousand open
connections at the hub, not twenty thousand, and each opens its next stream every few minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable

from edgefleet.hub.lanes import Lane
from edgefleet.hub.store import Store

log = logging.getLogger(__name__)


class Doorbells:
    """Agents waiting for news of their site (see the module)."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._closed = False

    async def wait(self, site: str, timeout: float) -> bool:
        """Wait until ``site``'s bell rings; False after ``timeout`` seconds, or at once when the
        hub is stopping."""
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
        return not self._closed

    def ring(self, sites: Iterable[str]) -> None:
        """Wake the agents of ``sites``."""
        for site in sites:
            for waiter in self._waiters.pop(site, ()):
                if not waiter.done():
                    waiter.set_result(None)

    def close(self) -> None:
        """Answer every waiting agent now, and every later one at once (the hub is stopping)."""
        self._closed = True
        self.ring(list(self._waiters))

    @property
    def closed(self) -> bool:
        """Whether the hub is stopping (``close``)."""
        return self._closed

    @property
    def waiting(self) -> int:
        """Agents waiting right now."""
        return sum(len(w) for w in self._waiters.values())

    def sites(self) -> set[str]:
        """The sites whose agents wait right now."""
        return set(self._waiters)


class SiteWatch:
    """Every site's desired-state revision, and the bells of those whose revision moved."""

    def __init__(self, store: Store, bells: Doorbells) -> None:
        self._store = store
        self._lane = Lane("revisions")
        self._bells = bells
        self._revisions: dict[str, int] = {}
        self._high = -1
        self._lock = asyncio.Lock()
        self._nudged = asyncio.Event()

    def revision(self, site: str) -> int:
        """The last known desired-state revision of ``site`` (0 if it never had one)."""
        return self._revisions.get(site, 0)

    async def refresh(self) -> None:
        """Read revisions changed since the last refresh and ring those sites' bells."""
        async with self._lock:
            changed = await self._lane.run(self._store.revisions.changed_since, self._high)
            for site, revision in changed.items():
                self._revisions[site] = revision
                self._high = max(self._high, revision)
            self._bells.ring(changed)

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
        """Drop a deleted site, waking its agent so it sees it is gone."""
        self._revisions.pop(site, None)
        self._bells.ring([site])
