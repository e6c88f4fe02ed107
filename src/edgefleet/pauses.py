"""Garbage collections long enough to stall a process: kept short, and logged.

A hub that holds ten thousand sites with their agents connected keeps millions of objects, and a
full collection walks all of them while nothing else runs: no request is answered, no heartbeat
read. Measured at 10,000 simulated sites (registration and a rollout, about five minutes): 43
full collections stalled the hub 21.4 s in all, up to 0.99 s each. Such a pause shows as a late
answer to any call that meets it (an API call's p99) and as loop lag (which the health monitor
forgives its sites). A simulator of ten thousand sites (``edgefleet sim``) is the same kind of
process, with tens of thousands of long-lived objects: its event loop was seen stalled 0.6 to
3.3 s at a time, about every 8 s and longer as its objects grew (on a machine another process
kept busy; taken for collections, not timed as such), all its sites at once.

So such a process leaves what survived a full collection out of the next ones (``gc.freeze``):
what lives that long is its long-lived state (the hub's picture of the fleet, the routing table
and its indexes; the simulator's sites), which changes slowly, and a later full collection walks
only what came since. The hub's run above: 25 full collections, 3.4 s in all, none over 0.23 s.
What was frozen and dies later is freed by its reference count; should it die in a reference
cycle, a collection would never see it, so every ``THAW_EVERY`` seconds the process thaws
everything and the next full collection walks (and frees) it all once.

Every collection over ``SLOW`` seconds is logged, so a slow answer can be told apart from a slow
route.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

SLOW = 0.1
"""Seconds a collection takes before it is logged."""

THAW_EVERY = 600.0
"""Seconds between two full collections that walk everything (frozen objects included)."""


class Collections:
    """A ``gc.callbacks`` entry: times each collection, logs the slow ones and, when
    ``freezing``, freezes what survived a full collection (see the module)."""

    def __init__(self, slow: float = SLOW, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.slow = slow
        self.freezing = False
        self.longest = 0.0
        """The longest collection seen, in seconds."""
        self.slow_count = 0
        """Collections that took ``slow`` or longer."""
        self._clock = clock
        self._started = 0.0
        self._thawed = clock()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.longest = max(self.longest, took)
        generation = info.get("generation", -1)
        if took >= self.slow:
            self.slow_count += 1
            log.info(
                "a garbage collection (generation %d) stalled this process %.2fs: %d objects freed",
                generation,
                took,
                info.get("collected", 0),
            )
        if self.freezing and generation == 2:
            now = self._clock()
            if now - self._thawed >= THAW_EVERY:
                self._thawed = now
                gc.unfreeze()  # the next full collection walks everything once
            else:
                gc.freeze()


def watch(*, freeze: bool = False) -> Collections:
    """Time this process's collections from now on, and with ``freeze`` keep the survivors of
    full collections out of the next ones (a process of the hub's or the simulator's own;
    not one that embeds them beside other work). Once per process: a second call returns the
    watch in place."""
    for callback in gc.callbacks:
        if isinstance(callback, Collections):
            callback.freezing = callback.freezing or freeze
            return callback
    collections = Collections()
    collections.freezing = freeze
    gc.callbacks.append(collections)
    return collections
