"""Garbage collections long enough to stall the hub, logged.

A hub that holds ten thousand sites keeps millions of objects, and a full collection walks all
of them while nothing else runs: no request is answered, no heartbeat read. Such a pause shows
as a late answer to any call that meets it (an API call's p99) and as loop lag (which the health
monitor forgives its sites). The hub logs every collection over ``SLOW`` seconds, so a slow
answer can be told apart from a slow route.

What the hub loads at its start (the fleet's picture, the routing table, the shares' indexes)
lives as long as the hub: ``keep_loaded`` moves it out of the collector's way (``gc.freeze``),
so later full collections walk only what came after. A hub holding 10,000 sites and no agents
tracks about 400,000 objects, and a full collection of them takes 0.28 s on the project's
development machine; after the freeze, none of that.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

SLOW = 0.1
"""Seconds a collection takes before it is logged."""


class Collections:
    """A ``gc.callbacks`` entry that times each collection and logs the slow ones."""

    def __init__(self, slow: float = SLOW) -> None:
        self.slow = slow
        self.longest = 0.0
        """The longest collection seen, in seconds."""
        self.slow_count = 0
        """Collections that took ``slow`` or longer."""
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.longest = max(self.longest, took)
        if took >= self.slow:
            self.slow_count += 1
            log.info(
                "a garbage collection (generation %d) stalled the hub %.2fs: %d objects freed",
                info.get("generation", -1),
                took,
                info.get("collected", 0),
            )


def watch() -> Collections:
    """Time this process's collections from now on (once per process: a second call returns
    the watch already in place)."""
    for callback in gc.callbacks:
        if isinstance(callback, Collections):
            return callback
    collections = Collections()
    gc.callbacks.append(collections)
    return collections


def keep_loaded() -> None:
    """Collect once, then leave everything alive now out of later collections (the hub's
    loaded state; what of it dies later is freed by its reference count, as all of it is
    acyclic data)."""
    gc.collect()
    gc.freeze()
