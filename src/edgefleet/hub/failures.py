"""Failed authentications counted across hub replicas, so that more hubs do not mean more
guesses.

Each hub limits the failures it sees itself at once, in memory (``FailureLimiter``). Without
more, an address could fail ``burst`` times at each of N hubs behind a balancer: N times the
limit. So every hub also adds the failures it saw to a bucket per source in the store
(``edgefleet.hub.store.auth_failures``) and reads which sources are over their limit there,
both in one exchange, in a thread, every ``interval`` seconds. The request path only reads what
the last exchange brought (a dict), and a failure only counts one in a dict: failed
authentication costs the hub no store write of its own.

How stale it can be: a failure reaches the store at its hub's next exchange, and every other hub
learns at its own next one, so a source over its limit at one hub is refused at all of them
within two intervals (0.8 s by default) and a query or two. Until then each hub's own bucket
still holds at that hub. A hub killed loses at most the failures of its last interval. The
times are wall-clock seconds: the hubs' clocks must agree (NTP) well within a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgefleet.hub.lanes import Lane
from edgefleet.hub.store import AuthFailures
from edgefleet.identity.failures import FailureBudget

log = logging.getLogger(__name__)

PRUNE_EVERY = 60.0
"""Seconds between deletions of the sources forgiven everything."""


@dataclass
class SharedFailures:
    """The failures of every hub replica, as the last exchange with the store left them (see
    the module docstring)."""

    store: AuthFailures
    """Where the hubs share their failures."""
    budget: FailureBudget
    """The failures a source may make (every hub of a fleet has the same)."""
    interval: float = 0.4
    """Seconds between exchanges with the store."""
    max_sources: int = 10_000
    """Sources counted between two exchanges, and sources over the limit held, at most."""
    _counted: dict[str, int] = field(default_factory=dict)
    _refused: dict[str, float] = field(default_factory=dict)
    _pruned: float = 0.0
    _lane: Lane = field(default_factory=lambda: Lane("failures"))

    def failed(self, source: str) -> None:
        """Count one failed authentication from ``source``, for the next exchange."""
        if source in self._counted or len(self._counted) < self.max_sources:
            self._counted[source] = self._counted.get(source, 0) + 1

    def retry_after(self, source: str, now: float | None = None) -> float:
        """Seconds until ``source`` may try again as far as the other hubs know; 0 if it may."""
        forgiven_at = self._refused.get(source)
        if forgiven_at is None:
            return 0.0
        return self.budget.retry_after(forgiven_at, time.time() if now is None else now)

    def exchange(self, counted: Mapping[str, int], now: float) -> dict[str, float] | None:
        """Add ``counted`` to the shared buckets (raises if they were not written) and read the
        sources over their limit (None if that read failed); blocking."""
        self.store.record(counted, now=now, budget=self.budget)
        try:
            if now - self._pruned >= PRUNE_EVERY:
                self._pruned = now
                self.store.prune(now=now, budget=self.budget)
            return self.store.refused(now=now, budget=self.budget, limit=self.max_sources)
        except Exception:
            log.exception("reading the failed authentications of the other hubs failed")
            return None

    async def sync(self) -> None:
        """One exchange with the store; the failures counted stay for the next one if they
        could not be written."""
        counted, self._counted = self._counted, {}
        try:
            refused = await self._lane.run(self.exchange, counted, time.time())
        except Exception:
            log.exception("writing failed authentications for the other hubs failed")
            for source, n in counted.items():
                self._counted[source] = self._counted.get(source, 0) + n
            return
        if refused is not None:
            self._refused = refused

    async def run(self) -> None:
        """Exchange with the store every ``interval`` seconds."""
        while True:
            await asyncio.sleep(self.interval)
            await self.sync()
