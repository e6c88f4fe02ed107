"""A lane runs its calls in a thread of its own: not behind the default pool's work."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from edgefleet.hub.lanes import Lane


def test_a_lane_is_not_held_up_by_a_full_default_pool() -> None:
    async def scenario() -> None:
        lane = Lane("reports")
        release = threading.Event()
        loop = asyncio.get_running_loop()
        # Fill the default pool (what requests' to_thread calls share) with calls that wait.
        blockers = [loop.run_in_executor(None, release.wait) for _ in range(64)]
        await asyncio.sleep(0.05)
        try:
            name = await asyncio.wait_for(lane.run(lambda: threading.current_thread().name), 5)
            assert name.startswith("hub-reports")
            # One call at a time, in order.
            seen: list[int] = []
            await asyncio.gather(*(lane.run(seen.append, i) for i in range(5)))
            assert seen == [0, 1, 2, 3, 4]
            with pytest.raises(ZeroDivisionError):
                await lane.run(lambda: 1 / 0)
        finally:
            release.set()
            await asyncio.gather(*blockers)
            lane.close()

    asyncio.run(scenario())


def test_a_closed_lane_starts_a_new_thread_when_used_again() -> None:
    async def scenario() -> None:
        lane = Lane("feed")
        first = await lane.run(threading.get_ident)
        lane.close()
        time.sleep(0.01)
        assert isinstance(await lane.run(threading.get_ident), int)
        assert first
        lane.close()

    asyncio.run(scenario())
