"""Threads for the hub's own work, apart from the requests'.

Blocking store calls run in threads. ``asyncio.to_thread`` hands them to the event loop's
default pool, a handful of threads that requests share: ten thousand sites joining at once (a
signature and a transaction each) fill it for tens of seconds, and the hub's own loops would
wait behind them, status reports unwritten, the change feed unread, heartbeats unrecorded and
sites judged dead. So each loop of the hub's own (a group commit, the heartbeats, the feed, the
desired-state revisions, the health monitor, placement, the shared failure limits) runs its
store calls in a ``Lane``: one thread of its own, which nothing else queues on. Each of those
loops makes one call at a time anyway.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class Lane:
    """One thread for one loop's blocking calls (see the module)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` in this lane's thread (as ``asyncio.to_thread`` would, with
        the caller's context variables)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hub-{self.name}")
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        """Let the thread go once its call (if any) returns."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
