"""Costly requests are admitted a few at a time, with a bounded line; the rest are refused at
once, and a refused or finished request frees its place."""

from __future__ import annotations

import asyncio

import pytest

from edgefleet.hub.admission import Admission, Busy


def test_a_few_at_work_a_bounded_line_and_the_rest_refused_at_once() -> None:
    async def scenario() -> None:
        gate = Admission(concurrent=2, waiting=3)
        release = asyncio.Event()
        at_work = 0
        most = 0

        async def request() -> str:
            nonlocal at_work, most
            try:
                async with gate.slot():
                    at_work += 1
                    most = max(most, at_work)
                    await release.wait()
                    at_work -= 1
                    return "served"
            except Busy:
                return "busy"

        tasks = [asyncio.create_task(request()) for _ in range(8)]
        await asyncio.sleep(0.01)
        # Two at work, three in line: the other three were refused without waiting.
        assert [t.done() for t in tasks].count(True) == 3 and gate.refused == 3
        release.set()
        results = await asyncio.gather(*tasks)
        assert results.count("served") == 5 and results.count("busy") == 3
        assert most == 2
        # Everyone left: the next request is served at once.
        release.clear()
        release.set()
        assert await request() == "served"

    asyncio.run(scenario())


def test_an_error_at_work_frees_the_slot() -> None:
    async def scenario() -> None:
        gate = Admission(concurrent=1, waiting=0)
        with pytest.raises(ZeroDivisionError):
            async with gate.slot():
                _ = 1 / 0
        async with gate.slot():
            pass
        assert gate.refused == 0

    asyncio.run(scenario())


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="concurrent"):
        Admission(concurrent=0, waiting=1)
    with pytest.raises(ValueError, match="waiting"):
        Admission(concurrent=1, waiting=-1)
