"""Admission of one kind of costly request: a few at work, a bounded line, the rest told to
come back.

Ten thousand agents started together all join at once. Each join is a signature and a
transaction; taken as they come, thousands wait in line longer than an agent waits for its
answer, each agent tries again, and the hub spends itself on joins nobody waits for any more.
``Admission`` keeps ``concurrent`` at work and ``waiting`` in line, and refuses the rest at once
(``Busy``; the route answers 503 with Retry-After), which costs nothing: the agent backs off and
comes back, and the line moves at the speed the store writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Busy(Exception):
    """The line is full: come back later."""


class Admission:
    """A few at work, a bounded line (see the module)."""

    def __init__(self, *, concurrent: int, waiting: int) -> None:
        if concurrent < 1 or waiting < 0:
            raise ValueError(f"concurrent ({concurrent}) must be >= 1 and waiting ({waiting}) >= 0")
        self.concurrent = concurrent
        self.waiting = waiting
        self._slots = asyncio.Semaphore(concurrent)
        self._in_line = 0
        self.refused = 0
        """Requests refused so far (for tests and metrics)."""

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``concurrent`` slots for the block; Busy at once when ``waiting``
        others wait already."""
        if self._slots.locked() and self._in_line >= self.waiting:
            self.refused += 1
            raise Busy
        self._in_line += 1
        try:
            await self._slots.acquire()
        finally:
            self._in_line -= 1
        try:
            yield
        finally:
            self._slots.release()
