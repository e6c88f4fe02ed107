"""The gateway reads an agent's query string as ``parse_qs`` does, faster."""

from __future__ import annotations

from urllib.parse import parse_qs

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub.gateway import parse_query

PIECES = st.sampled_from(
    ["state", "routes", "timeout", "=", "&", "12", "ab-3", "", "%20", "+", ";"]
)


@given(st.lists(PIECES, max_size=12).map("".join))
def test_a_query_reads_as_parse_qs_reads_it(text: str) -> None:
    assert parse_query(text.encode("latin-1")) == parse_qs(text)


def test_an_agents_watch_query() -> None:
    raw = b"state=12&routes=&timeout=30.0"
    assert parse_query(raw) == {"state": ["12"], "timeout": ["30.0"]}
