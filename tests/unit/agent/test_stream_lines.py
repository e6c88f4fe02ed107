"""A watch stream's body is read as it comes, in parts cut anywhere: its lines come out whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.hubclient import lines

LINE = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))


async def _parts(body: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted({min(c, len(body)) for c in cuts}):
        yield body[start:cut]
        start = cut
    yield body[start:]


async def _read(body: bytes, cuts: list[int]) -> list[bytes]:
    return [line async for line in lines(_parts(body, cuts))]


@given(st.lists(LINE, max_size=8), st.lists(st.integers(0, 300), max_size=10), st.booleans())
def test_lines_come_out_whole_however_the_body_is_cut(
    sent: list[bytes], cuts: list[int], ended: bool
) -> None:
    body = b"\n".join(sent) + (b"\n" if ended and sent else b"")
    got = asyncio.run(_read(body, cuts))
    # What follows the last line end comes out too (a long-poll's one answer has none).
    expected = sent if body else []
    if sent and not ended and sent[-1] == b"":
        expected = sent[:-1]
    assert got == expected
