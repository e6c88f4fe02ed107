"""How the CLI prints lists a page at a time: the same text as the whole list at once."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.cli.formats import OutputFormat
from edgefleet.cli.output import TableStream, dump, list_stream, wire
from edgefleet.model import Site
from tests.factories import make_site

SITES = [make_site(f"s{i}", region=["eu-west", "us-east-long"][i % 2]) for i in range(9)]


def split(items: list[Site], cuts: list[int]) -> list[list[Site]]:
    """``items`` in pages cut at ``cuts`` (empty pages included)."""
    edges = [0, *sorted(cuts), len(items)]
    return [items[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=50)
@given(count=st.integers(0, 9), cuts=st.lists(st.integers(0, 9), max_size=4))
def test_a_list_streamed_by_pages_is_the_whole_list_dumped(count: int, cuts: list[int]) -> None:
    items = SITES[:count]
    pages = split(items, [min(c, count) for c in cuts])
    for fmt in (OutputFormat.JSON, OutputFormat.YAML):
        whole = dump({**wire(items, False), "kind": "SiteList"}, fmt)
        assert "".join(list_stream("SiteList", pages, fmt)) == whole


def test_later_pages_keep_the_first_pages_columns() -> None:
    table = TableStream(["NAME", "REGION"])
    first = table.page([[("s1", ""), ("eu", "green")]])
    later = table.page([[("a-much-longer-name", ""), ("us", "")]])
    assert first.splitlines() == [" [bold]NAME[/]  [bold]REGION[/]", " s1    [green]eu[/]"]
    # A longer cell pushes the rest of its own line; the columns stay.
    assert later == " a-much-longer-name  us"
    assert table.page([]) == ""
