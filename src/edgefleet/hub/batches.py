"""Group commit: what agents send, written in batches, each sender answered once its item is.

Ten thousand agents sending a status or a demand report are thousands of items a second; one
transaction each would be as many commits. ``GroupCommit`` collects items and writes them with
one call per batch (``write``, in a thread), at most every ``period`` seconds while items wait.
``submit`` returns once the item's batch is written: an agent told "taken" can lose it only
with the database. ``add`` only buffers (an item added so is lost if the hub dies first, and
kept for the next batch when a write fails); a submitted item whose write fails is given back
to its sender (``submit`` returns False: it sends it again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from edgefleet.hub.lanes import Lane

log = logging.getLogger(__name__)

SLOW = 0.5
"""Seconds a batch's write may take before the log says how long it took."""

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Items waiting to be written together (see the module)."""

    def __init__(
        self,
        write: Callable[[Sequence[T]], R],
        *,
        what: str,
        period: float,
        limit: int = 50_000,
    ) -> None:
        self._write = write
        self._what = what
        self._period = period
        self._limit = limit
        self._pending: list[T] = []
        self._waiters: list[asyncio.Future[bool] | None] = []
        """Per pending item, the future its sender waits on (``submit``), or None."""
        self._wake = asyncio.Event()
        self._lane = Lane(what.replace(" ", "-"))
        self.batches = 0
        """Batches written (for tests and metrics)."""

    @property
    def pending(self) -> int:
        """Items received and not yet written."""
        return len(self._pending)

    def add(self, item: T) -> bool:
        """Take an item (no I/O); False when ``limit`` items already wait (store away):
        refusing beats dropping, the sender keeps it and sends it again."""
        return self._take(item, None)

    def _take(self, item: T, waiter: asyncio.Future[bool] | None) -> bool:
        if len(self._pending) >= self._limit:
            return False
        self._pending.append(item)
        self._waiters.append(waiter)
        self._wake.set()
        return True

    async def submit(self, item: T) -> bool:
        """Take an item and return once it is written: True; False when too many wait or the
        write failed."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if not self._take(item, done):
            return False
        return await done

    async def flush(self) -> R | None:
        """Write what has been collected: what ``write`` returned, or None when nothing
        waited or the write failed."""
        if not self._pending:
            return None
        batch, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        started = time.monotonic()
        began: list[float] = []

        def write() -> R:
            began.append(time.monotonic())
            return self._write(batch)

        try:
            written = await self._lane.run(write)
        except Exception:
            log.exception(
                "writing %d %s failed; they are kept or sent again", len(batch), self._what
            )
            kept = [item for item, w in zip(batch, waiters, strict=True) if w is None]
            self._pending = kept + self._pending
            unwaited: list[asyncio.Future[bool] | None] = [None] * len(kept)
            self._waiters = unwaited + self._waiters
            if kept:
                self._wake.set()
            _settle(waiters, False)
            return None
        self.batches += 1
        _settle(waiters, True)
        elapsed = time.monotonic() - started
        if elapsed > SLOW:
            log.info(
                "writing %d %s took %.2fs (%.2fs waiting for a thread)",
                len(batch),
                self._what,
                elapsed,
                began[0] - started,
            )
        return written

    async def run(self) -> None:
        """Write a batch as soon as items wait, at most every ``period`` seconds: the first
        item of a burst waits up to ``period`` for the others to join it, and items that came
        while a batch was written (a write longer than ``period``) go at once, together."""
        last = -self._period
        carried = False
        while True:
            await self._wake.wait()
            # A burst's first item waits for the others; items that waited through a write
            # have had their company, and wait only for ``period`` since the last batch.
            wait = last + self._period - time.monotonic() if carried else self._period
            await asyncio.sleep(max(0.0, wait))
            self._wake.clear()
            last = time.monotonic()
            await self.flush()
            carried = bool(self._pending)


def _settle(waiters: list[asyncio.Future[bool] | None], result: bool) -> None:
    for done in waiters:
        if done is not None and not done.done():  # a sender that gave up cancelled it
            done.set_result(result)
