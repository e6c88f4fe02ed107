"""Demand at a site: the counter, the edge DNS tally and its draining, the reporter's queue."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import dns.message
import dns.query
import httpx
import pytest

from edgefleet.agent.demand import (
    MAX_NETWORKS,
    PENDING_FILE,
    DemandCounter,
    DemandReporter,
    app_key,
    drain_dns_tally,
)
from edgefleet.agent.hubclient import HttpxTransport, HubClient
from edgefleet.dns import DnsServer, Responder, StaticZone, Target
from edgefleet.dns.server import UDP_MMSG_AVAILABLE
from edgefleet.model import DemandReport
from tests.support.dns_server import ServerThread

SITE = "paris"
PARIS = Target("paris", "10.0.0.1", None, 8080)
HELLO = b"\x05hello\x04demo\x04edge\x08internal\x00"
WORLD = b"\x05world\x04demo\x04edge\x08internal\x00"


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the counter ---------------------------------------------------------------------------------


def test_the_counter_sums_per_app_and_origin_and_starts_a_new_window() -> None:
    clock = Clock()
    counter = DemandCounter(clock=clock)
    counter.request("demo/hello", "paris", 0.25)
    counter.request("demo/hello", "paris", 0.5)
    counter.request("demo/hello", "lyon", 1.0)
    counter.dns("demo/hello", "paris", 7)
    counter.dns("demo/world", "paris")
    counter.dns("demo/world", "paris", 0)  # nothing
    clock.now += 10
    window = counter.take(clock.now)
    assert (window.start, window.end) == (1_700_000_000.0, 1_700_000_010.0)
    assert window.rows == (
        ("demo/hello", "lyon", 1, 1.0, 0),
        ("demo/hello", "paris", 2, 0.75, 7),
        ("demo/world", "paris", 0, 0.0, 1),
    )
    assert counter.window_start == clock.now
    assert counter.take(clock.now + 10).rows == ()
    assert counter.last_request("demo/hello") == 1_700_000_000.0
    assert counter.last_request("demo/world") is None
    assert counter.last_requests() == {"demo/hello": 1_700_000_000.0}


def test_rows_the_hub_would_refuse_are_not_reported() -> None:
    counter = DemandCounter()
    counter.request("no-slash", "paris", 0.1)
    counter.request("a/b/c", "paris", 0.1)
    counter.request("demo/hello", "", 0.1)
    counter.request("demo/hello", "paris", -1.0)  # a clock step: no negative busy time
    assert counter.take(0.0).rows == (("demo/hello", "paris", 1, 0.0, 0),)


def test_the_counter_loses_nothing_to_concurrent_counting() -> None:
    counter = DemandCounter()
    threads, per_thread = 4, 5_000
    totals: Counter[str] = Counter()
    done = threading.Event()

    def count() -> None:
        for i in range(per_thread):
            counter.request("demo/hello", f"s{i % 3}", 0.001)
            counter.dns("demo/hello", "paris", 2)

    def collect() -> None:
        for key, origin, requests, _busy, queries in counter.take(0.0).rows:
            totals[f"{key} {origin} requests"] += requests
            totals["dns"] += queries

    def take() -> None:
        while not done.is_set():
            collect()

    taker = threading.Thread(target=take)
    taker.start()
    workers = [threading.Thread(target=count) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    taker.join()
    collect()
    assert sum(n for k, n in totals.items() if k != "dns") == threads * per_thread
    assert totals["dns"] == 2 * threads * per_thread


# -- the DNS tally -------------------------------------------------------------------------------


def make_zone() -> StaticZone:
    return StaticZone(
        nameserver=Target("ns1", "127.0.0.53", None, 53),
        apps={("demo", "hello"): [PARIS], ("demo", "world"): [PARIS]},
        sites=[PARIS],
    )


def wire(name: str, rdtype: str = "A", *, qid: int = 1, ecs: bool = False) -> bytes:
    options = [dns.edns.ECSOption("192.0.2.0", 24)] if ecs else None
    query = dns.message.make_query(name, rdtype, id=qid, use_edns=0, options=options)
    return query.to_wire()


def test_the_responder_counts_every_answer_in_every_path() -> None:
    tally: Counter[bytes] = Counter()
    responder = Responder(make_zone(), tally=tally)
    hello = wire("hello.demo.edge.internal")
    assert responder.handle(hello, "192.0.2.1", tcp=False) is not None  # uncached
    assert tally == {HELLO: 1}
    assert responder.handle(hello, "192.0.2.1", tcp=False) is not None  # cached
    assert tally == {HELLO: 2}
    # The server's UDP loop: a hit in the flat table, without calling handle.
    table = responder.udp_fast_answers()
    assert table is not None
    assert table.get(hello[2:]) is not None
    assert table.get(wire("nobody.asked.edge.internal")[2:]) is None  # a miss is not counted
    assert tally == {HELLO: 3}
    # TCP, uncached then cached; a name in mixed case (0x20) counts as its lowercase.
    for _ in range(2):
        assert responder.handle(wire("HeLLo.DEMO.edge.internal"), "192.0.2.1", tcp=True)
    assert tally == {HELLO: 5}
    # With ECS (not in the flat table), NXDOMAIN, the apex: all answered, all counted.
    for _ in range(2):
        assert responder.handle(wire("world.demo.edge.internal", ecs=True), "192.0.2.1", tcp=False)
    assert responder.handle(wire("nope.demo.edge.internal"), "192.0.2.1", tcp=False)
    assert responder.handle(wire("edge.internal", "SOA"), "192.0.2.1", tcp=False)
    assert tally[WORLD] == 2
    assert tally[b"\x04nope\x04demo\x04edge\x08internal\x00"] == 1
    assert tally[b"\x04edge\x08internal\x00"] == 1
    # Nothing answered, nothing counted: a response (QR set) and a runt.
    response = bytearray(hello)
    response[2] |= 0x80
    assert responder.handle(bytes(response), "192.0.2.1", tcp=False) is None
    assert responder.handle(b"\x00\x01", "192.0.2.1", tcp=False) is None
    assert sum(tally.values()) == 9


def test_a_new_zone_version_keeps_counting_from_a_fresh_table() -> None:
    tally: Counter[bytes] = Counter()
    zone = make_zone()
    responder = Responder(zone, tally=tally)
    hello = wire("hello.demo.edge.internal")
    responder.handle(hello, "192.0.2.1", tcp=False)
    old = responder.udp_fast_answers()
    assert old is not None and old.get(hello[2:]) is not None
    zone.set_app("demo", "hello", [PARIS])  # new version: caches emptied
    fresh = responder.udp_fast_answers()
    assert fresh is not None and fresh is not old and fresh.get(hello[2:]) is None
    responder.handle(hello, "192.0.2.1", tcp=False)
    assert fresh.get(hello[2:]) is not None
    assert tally == {HELLO: 4}


def test_without_a_tally_the_flat_table_is_a_plain_dict() -> None:
    responder = Responder(make_zone())
    hello = wire("hello.demo.edge.internal")
    responder.handle(hello, "192.0.2.1", tcp=False)
    table = responder.udp_fast_answers()
    assert type(table) is dict and hello[2:] in table


@pytest.fixture(params=["mmsg", "thread", "batched"])
def server_keywords(request: pytest.FixtureRequest) -> dict[str, bool]:
    if request.param == "mmsg" and not UDP_MMSG_AVAILABLE:
        pytest.skip("the recvmmsg reader needs Linux and a libc with recvmmsg")
    return {
        "mmsg": {"udp_thread": True, "udp_mmsg": True},
        "thread": {"udp_thread": True, "udp_mmsg": False},
        "batched": {"udp_thread": False, "batch_udp": True},
    }[request.param]


def test_a_real_server_counts_each_query_once(server_keywords: dict[str, bool]) -> None:
    tally: Counter[bytes] = Counter()
    server = DnsServer(Responder(make_zone(), tally=tally), "127.0.0.1", 0, **server_keywords)
    with ServerThread(server) as running:
        for i in range(20):  # repeated: after the first, answered from the flat table
            query = dns.message.make_query("hello.demo.edge.internal", "A", id=i)
            dns.query.udp(query, "127.0.0.1", port=running.port, timeout=5)
        for i in range(3):
            query = dns.message.make_query("world.demo.edge.internal", "A", id=100 + i)
            dns.query.tcp(query, "127.0.0.1", port=running.port, timeout=5)
    assert tally == {HELLO: 20, WORLD: 3}


def test_app_keys_of_question_names() -> None:
    assert app_key(HELLO) == "demo/hello"
    assert app_key(b"\x05HELLO\x04Demo\x04edge\x08internal\x00") == "demo/hello"
    assert app_key(b"\x04edge\x08internal\x00") is None
    assert app_key(b"\x05paris\x05sites\x04edge\x08internal\x00") is None
    assert app_key(b"\x05hello\x04demo\x07example\x03com\x00") is None
    assert app_key(b"\x05hel") is None  # cut short
    assert app_key(b"\x02\xff\xfe\x04demo\x04edge\x08internal\x00") is None


def test_draining_moves_app_counts_and_drops_the_rest() -> None:
    tally: Counter[bytes] = Counter({HELLO: 5, WORLD: 2, b"\x04edge\x08internal\x00": 9})
    counter = DemandCounter()
    assert drain_dns_tally(tally, counter, SITE) == 7
    assert not tally
    assert drain_dns_tally(tally, counter, SITE) == 0
    assert counter.take(0.0).rows == (
        ("demo/hello", SITE, 0, 0.0, 5),
        ("demo/world", SITE, 0, 0.0, 2),
    )


def test_draining_while_the_responder_counts_loses_and_doubles_nothing() -> None:
    tally: Counter[bytes] = Counter()
    responder = Responder(make_zone(), tally=tally)
    hello = wire("hello.demo.edge.internal")
    responder.handle(hello, "192.0.2.1", tcp=False)
    table = responder.udp_fast_answers()
    assert table is not None
    counter = DemandCounter()
    hits = 200_000

    def serve() -> None:  # as the server's UDP thread does
        get = table.get
        key = hello[2:]
        for _ in range(hits):
            get(key)

    thread = threading.Thread(target=serve)
    drained = 0
    thread.start()
    while thread.is_alive():
        drained += drain_dns_tally(tally, counter, SITE)
    thread.join()
    drained += drain_dns_tally(tally, counter, SITE)
    assert drained == hits + 1
    (row,) = counter.take(0.0).rows
    assert row[4] == hits + 1


# -- the reporter --------------------------------------------------------------------------------


class FakeHub:
    """The hub's demand route, as a function: records what it took; fails while ``down``."""

    def __init__(self) -> None:
        self.taken: list[DemandReport] = []
        self.down = False
        self.status = 204

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        assert request.url.path == f"/api/v1/agent/sites/{SITE}/demand"
        report = DemandReport.model_validate_json(request.content)
        if self.status == 204:
            self.taken.append(report)
        return httpx.Response(self.status, json={"detail": "as told"})


@pytest.fixture
def hub() -> FakeHub:
    return FakeHub()


@pytest.fixture
def reporters(hub: FakeHub, tmp_path: Path) -> Iterator[Callable[..., DemandReporter]]:
    """Makes reporters over one state dir, each with its own client of the fake hub."""
    clients: list[httpx.AsyncClient] = []

    def make(counter: DemandCounter, clock: Clock, **kwargs: object) -> DemandReporter:
        http = httpx.AsyncClient(base_url="http://hub", transport=httpx.MockTransport(hub))
        clients.append(http)
        client = HubClient(HttpxTransport(http))
        return DemandReporter(SITE, counter, client, tmp_path, clock=clock, **kwargs)

    yield make
    for http in clients:
        asyncio.run(http.aclose())


def test_reports_wait_on_disk_while_the_hub_is_away_and_go_in_order(
    hub: FakeHub, reporters: Callable[..., DemandReporter], tmp_path: Path
) -> None:
    clock = Clock()
    counter = DemandCounter(clock=clock)
    first = reporters(counter, clock, window=10.0)
    hub.down = True
    for n in (1, 2):
        counter.request("demo/hello", "paris", 0.1 * n)
        clock.now += 10
        assert asyncio.run(first.flush_once(clock.now)) == 0
    queued = first.pending
    assert [r.seq for r in queued] == [queued[0].seq, queued[0].seq + 1]
    assert queued[0].window_start == datetime.fromtimestamp(clock.now - 20, UTC)
    assert queued[0].window_seconds == 10.0
    assert queued[1].rows == [("demo/hello", "paris", 1, 0.2, 0)]
    saved = json.loads((tmp_path / PENDING_FILE).read_text())
    assert [r["seq"] for r in saved["reports"]] == [r.seq for r in queued]
    assert saved["next_seq"] > queued[-1].seq

    # The agent restarts: a new reporter finds the queue, and the hub is back.
    hub.down = False
    counter = DemandCounter(clock=clock)
    second = reporters(counter, clock)
    assert [r.seq for r in second.pending] == [r.seq for r in queued]
    counter.request("demo/hello", "lyon", 0.3)
    clock.now += 10
    assert asyncio.run(second.flush_once(clock.now)) == 3
    assert [r.seq for r in hub.taken[:2]] == [r.seq for r in queued]
    assert hub.taken[:2] == queued  # the same reports, byte for byte what was counted
    assert hub.taken[2].seq > queued[-1].seq
    assert hub.taken[2].rows == [("demo/hello", "lyon", 1, 0.3, 0)]
    assert second.pending == []
    # Sent: the file no longer lists them, so a third start resends nothing.
    assert json.loads((tmp_path / PENDING_FILE).read_text())["reports"] == []
    third = reporters(DemandCounter(clock=clock), clock)
    assert third.pending == []


def test_empty_windows_send_nothing_and_use_no_seq(
    hub: FakeHub, reporters: Callable[..., DemandReporter]
) -> None:
    clock = Clock()
    counter = DemandCounter(clock=clock)
    reporter = reporters(counter, clock)
    counter.request("demo/hello", "paris", 0.1)
    clock.now += 10
    assert asyncio.run(reporter.flush_once(clock.now)) == 1
    for _ in range(3):
        clock.now += 10
        assert asyncio.run(reporter.flush_once(clock.now)) == 0
    counter.dns("demo/hello", "paris", 3)
    clock.now += 10
    assert asyncio.run(reporter.flush_once(clock.now)) == 1
    assert [r.seq - hub.taken[0].seq for r in hub.taken] == [0, 1]
    # Empty windows are closed too: the report covers the window its counts were made in.
    assert hub.taken[1].window_seconds == 10.0


def test_a_restarted_agent_never_reuses_a_seq(
    hub: FakeHub, reporters: Callable[..., DemandReporter]
) -> None:
    clock = Clock()
    for _ in range(3):  # three agent lifetimes, three reports each
        counter = DemandCounter(clock=clock)
        reporter = reporters(counter, clock, seq_block=2)
        for _ in range(3):
            counter.request("demo/hello", "paris", 0.1)
            clock.now += 10
            asyncio.run(reporter.flush_once(clock.now))
    seqs = [r.seq for r in hub.taken]
    assert len(seqs) == 9 and seqs == sorted(set(seqs))


def test_a_fresh_agent_starts_above_what_an_earlier_one_used(
    hub: FakeHub, reporters: Callable[..., DemandReporter], tmp_path: Path
) -> None:
    clock = Clock()
    counter = DemandCounter(clock=clock)
    reporter = reporters(counter, clock)
    for _ in range(5):
        counter.request("demo/hello", "paris", 0.1)
        clock.now += 10
        asyncio.run(reporter.flush_once(clock.now))
    (tmp_path / PENDING_FILE).unlink()  # a new disk
    counter = DemandCounter(clock=clock)
    reporter = reporters(counter, clock)
    counter.request("demo/hello", "paris", 0.1)
    clock.now += 10
    asyncio.run(reporter.flush_once(clock.now))
    assert hub.taken[-1].seq > hub.taken[-2].seq


def test_the_queue_is_bounded_and_drops_the_oldest(
    hub: FakeHub, reporters: Callable[..., DemandReporter], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    counter = DemandCounter(clock=clock)
    reporter = reporters(counter, clock, max_pending=3)
    hub.down = True
    for _ in range(5):
        counter.request("demo/hello", "paris", 0.1)
        clock.now += 10
        asyncio.run(reporter.flush_once(clock.now))
    seqs = [r.seq for r in reporter.pending]
    assert len(seqs) == 3 and reporter.dropped == 2
    assert "2 dropped since start" in caplog.text
    hub.down = False
    asyncio.run(reporter.flush_once(clock.now))
    assert [r.seq for r in hub.taken] == seqs


def test_a_rejected_report_is_dropped_and_a_refused_one_kept(
    hub: FakeHub, reporters: Callable[..., DemandReporter]
) -> None:
    clock = Clock()
    counter = DemandCounter(clock=clock)
    reporter = reporters(counter, clock)
    counter.request("demo/hello", "paris", 0.1)
    hub.status = 422  # the report itself is wrong: sending it again cannot help
    clock.now += 10
    assert asyncio.run(reporter.flush_once(clock.now)) == 0
    assert reporter.pending == [] and reporter.dropped == 1
    for status in (503, 404):  # busy, or the site not created yet: kept
        hub.status = status
        counter.request("demo/hello", "paris", 0.1)
        clock.now += 10
        asyncio.run(reporter.flush_once(clock.now))
    assert len(reporter.pending) == 2
    hub.status = 204
    assert asyncio.run(reporter.flush_once(clock.now)) == 2


def test_stopping_keeps_the_partial_window_for_the_next_start(
    hub: FakeHub, reporters: Callable[..., DemandReporter]
) -> None:
    clock = Clock()
    counter = DemandCounter(clock=clock)
    reporter = reporters(counter, clock)
    counter.request("demo/hello", "paris", 0.1)
    clock.now += 4
    reporter.close()
    later = reporters(DemandCounter(clock=clock), clock)
    (kept,) = later.pending
    assert kept.window_seconds == 4.0 and kept.rows == [("demo/hello", "paris", 1, 0.1, 0)]
    assert asyncio.run(later.flush_once(clock.now)) == 1
    assert hub.taken == [kept]


def test_the_loop_reports_every_window(hub: FakeHub, tmp_path: Path) -> None:
    async def go() -> None:
        tally: Counter[bytes] = Counter({HELLO: 4})
        counter = DemandCounter()
        counter.request("demo/hello", "lyon", 0.01)
        async with httpx.AsyncClient(
            base_url="http://hub", transport=httpx.MockTransport(hub)
        ) as http:
            reporter = DemandReporter(
                SITE,
                counter,
                HubClient(HttpxTransport(http)),
                tmp_path,
                window=0.05,
                dns_tally=tally,
            )
            task = asyncio.create_task(reporter.run())
            deadline = asyncio.get_running_loop().time() + 10
            while not hub.taken and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert hub.taken, "no report within the deadline"
    assert hub.taken[0].rows == [
        ("demo/hello", "lyon", 1, pytest.approx(0.01), 0),
        ("demo/hello", SITE, 0, 0.0, 4),
    ]


def test_the_window_must_be_sane(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window"):
        DemandReporter(
            SITE,
            DemandCounter(),
            HubClient(HttpxTransport(httpx.AsyncClient())),
            tmp_path,
            window=0,
        )


def test_a_scan_from_many_networks_cannot_grow_a_report() -> None:
    counter = DemandCounter(clock=lambda: 0.0)
    for i in range(MAX_NETWORKS + 50):
        counter.request("demo/hello", f"~10.{i // 256}.{i % 256}.0/24", 0.01)
    counter.request("demo/hello", "paris", 0.01)
    rows = counter.take(10.0).rows
    origins = [origin for _, origin, *_ in rows]
    # The first networks are kept, the rest counted as one unplaced origin; sites still count.
    assert len(rows) == MAX_NETWORKS + 2
    assert "paris" in origins
    unplaced = next(row for row in rows if row[1] == "~")
    assert unplaced[2] == 50
    assert sum(row[2] for row in rows) == MAX_NETWORKS + 51
