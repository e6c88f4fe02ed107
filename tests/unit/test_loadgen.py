"""The load generator's pure parts, and its open-loop schedule on a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Awaitable, Callable

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.loadgen import (
    BODY_KEPT,
    CONNECT_ERROR,
    CONNECTION_LOST,
    NO_DNS_ANSWER,
    TIMEOUT,
    ConnectFailed,
    ConnectionLost,
    EdgeResolver,
    Framing,
    HttpResponse,
    LatencyHistogram,
    LatencySummary,
    LoadError,
    LoadSpec,
    LoadSummary,
    NoDnsAnswer,
    Result,
    Tick,
    choose_source,
    classify_exception,
    classify_status,
    due_count,
    framing,
    get_first,
    parse_head,
    percentile,
    planned_total,
    read_answer,
    read_body,
    run_open_loop,
    served_by,
    source_candidates,
)

# -- percentiles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 1), (1, 1), (7, 7), (50, 50), (50.5, 51), (90, 90), (99, 99), (99.5, 100), (100, 100)],
)
def test_percentile_is_the_nearest_rank(q: float, expected: float) -> None:
    assert percentile([float(v) for v in range(1, 101)], q) == expected


def test_percentile_of_few_values() -> None:
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0  # at least half the values are <= 1
    assert percentile([1.0, 2.0], 51) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0 to 100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="no values"):
        LatencyHistogram().percentile(50)


@given(
    st.lists(st.floats(min_value=0.0001, max_value=60_000.0), min_size=1, max_size=300),
    st.floats(min_value=0, max_value=100),
)
def test_percentile_bounds_the_share_of_values_below(values: list[float], q: float) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    at_or_below = sum(v <= p for v in ordered)
    assert at_or_below >= q / 100 * len(ordered) - 1e-6
    # and it is the smallest such value
    strictly_below = sum(v < p for v in ordered)
    assert strictly_below < max(1, math.ceil(q * len(ordered) / 100 - 1e-9))


@given(
    st.lists(st.floats(min_value=0.01, max_value=120_000.0), min_size=1, max_size=500),
    st.sampled_from([0, 1, 50, 90, 99, 99.9, 100]),
)
def test_histogram_percentiles_are_within_one_percent(values: list[float], q: float) -> None:
    histogram = LatencyHistogram(precision=0.01)
    for value in values:
        histogram.record(value)
    exact = percentile(sorted(values), q)
    assert histogram.percentile(q) == pytest.approx(exact, rel=0.01)
    assert histogram.count == len(values)
    assert (histogram.minimum, histogram.maximum) == (min(values), max(values))


def test_histogram_is_exact_at_the_extremes_and_summarises() -> None:
    histogram = LatencyHistogram()
    for value in (2.0, 4.0, 6.0, 1000.0):
        histogram.record(value)
    summary = LatencySummary.of(histogram)
    assert (summary.count, summary.min_ms, summary.max_ms) == (4, 2.0, 1000.0)
    assert summary.mean_ms == pytest.approx(253.0)
    assert summary.p50_ms == pytest.approx(4.0, rel=0.01)
    assert summary.p99_ms == 1000.0
    assert LatencySummary.of(LatencyHistogram()) == LatencySummary(
        0, None, None, None, None, None, None
    )


# -- the schedule: pure --------------------------------------------------------------------------


def test_due_count_steps_every_interval() -> None:
    assert due_count(-0.1, 10) == 0
    assert due_count(0.0, 10) == 1  # the first request goes at once
    assert due_count(0.099, 10) == 1
    assert due_count(0.1, 10) == 2
    assert due_count(0.3, 10) == 4  # 0.3 * 10 is 2.9999999999999996 in floats
    assert due_count(1.0, 0.5) == 1
    assert due_count(2.0, 0.5) == 2


@pytest.mark.parametrize(
    ("duration", "rps", "expected"),
    [(2.0, 50, 100), (1.0, 3, 3), (0.5, 3, 2), (1.0, 0.4, 1), (0.3, 10, 3), (None, 10, None)],
)
def test_planned_total(duration: float | None, rps: float, expected: int | None) -> None:
    assert planned_total(duration, rps) == expected


# -- the schedule: the engine on a fake clock ------------------------------------------------------


class FakeClock:
    """Virtual time, moved only by ``sleep``: in steps of a millisecond, letting every ready task
    run before each step, so that a task sees the time it was started at and a sleep cut short
    (the engine waits for "done or next second, whichever first") moves the clock only so far."""

    STEP = 0.001

    def __init__(self) -> None:
        self.now = 1000.0
        self.steps = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        end = self.now + max(delay, 0.0)
        while True:
            await asyncio.sleep(0)
            if self.now >= end:
                return
            self.steps += 1
            assert self.steps < 1_000_000, "the schedule does not advance"
            self.now = min(end, self.now + self.STEP)


def run(
    clock: FakeClock,
    send: Callable[[], Awaitable[Result]],
    *,
    rps: float,
    duration: float | None,
    limit: int = 1000,
    stop_after: float | None = None,
    drain_timeout: float = 15.0,
) -> tuple[LoadSummary, list[Tick]]:
    ticks: list[Tick] = []

    async def go() -> LoadSummary:
        stop = asyncio.Event()

        def on_second(tick: Tick) -> None:
            ticks.append(tick)
            if stop_after is not None and tick.second >= stop_after:
                stop.set()

        return await run_open_loop(
            rps=rps,
            duration=duration,
            send=send,
            concurrency_limit=limit,
            on_second=on_second,
            stop=stop,
            clock=clock,
            sleep=clock.sleep,
            drain_timeout=drain_timeout,
        )

    return asyncio.run(go()), ticks


def test_requests_start_on_schedule_however_slow_the_answers() -> None:
    clock = FakeClock()
    start = clock.now
    starts: list[float] = []

    async def slow() -> Result:
        starts.append(clock.now)
        end = clock.now + 3.0  # each answer takes 3 s: 30 in flight at 10/s
        while clock.now < end:
            await asyncio.sleep(0)
        return Result(site="paris")

    summary, ticks = run(clock, slow, rps=10, duration=2.0)
    assert [round(t - start, 6) for t in starts] == [k / 10 for k in range(20)]
    assert (summary.scheduled, summary.sent, summary.dropped, summary.ok) == (20, 20, 0, 20)
    assert [t.sent for t in ticks[:2]] == [10, 10]
    assert ticks[0].ok == 0 and ticks[0].in_flight == 10
    assert ticks[1].in_flight == 20
    assert sum(t.ok for t in ticks) == 20
    # Latency runs from the scheduled start: every answer took 3 s, so every latency is ~3 s.
    assert summary.latency.min_ms == pytest.approx(3000, abs=20)
    assert summary.latency.max_ms == pytest.approx(3000, abs=20)
    assert summary.window == pytest.approx(2.0)
    assert summary.achieved_rps == pytest.approx(10.0)
    assert summary.served_by == {"paris": 20}


def test_fast_answers_make_the_same_schedule() -> None:
    clock = FakeClock()
    starts: list[float] = []

    async def fast() -> Result:
        starts.append(clock.now)
        return Result(site="london")

    summary, ticks = run(clock, fast, rps=7, duration=3.0)
    assert len(starts) == 21 == summary.ok
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [round(1 / 7, 6)] * 20
    assert [t.sent for t in ticks] == [7, 7, 7]
    assert [t.served_by for t in ticks] == [{"london": 7}] * 3
    assert all(t.p50_ms == 0 and t.p99_ms == 0 for t in ticks)


def test_a_stalled_generator_catches_up_and_says_so() -> None:
    clock = FakeClock()
    start = clock.now
    starts: list[float] = []
    stalled = False

    async def stalling_sleep(delay: float) -> None:
        nonlocal stalled
        await clock.sleep(delay)
        if not stalled and clock.now - start >= 0.5:
            stalled = True
            clock.now += 0.25  # the process was descheduled: the loop wakes 250 ms late

    async def fast() -> Result:
        starts.append(clock.now - start)
        return Result()

    async def go() -> LoadSummary:
        return await run_open_loop(
            rps=20,
            duration=1.0,
            send=fast,
            clock=clock,
            sleep=stalling_sleep,
            on_second=ticks.append,
        )

    ticks: list[Tick] = []
    summary = asyncio.run(go())
    # Every request due is still sent: the ones due during the stall at once, when it ends.
    assert summary.sent == 20
    on_time = [k / 20 for k in range(10)]
    assert [round(t, 6) for t in starts] == [*on_time, *[0.75] * 6, 0.8, 0.85, 0.9, 0.95]
    assert summary.max_lag_ms == pytest.approx(250)  # the request due at 0.5 s
    assert ticks[0].lag_ms == summary.max_lag_ms
    assert summary.notes and "ms late" in summary.notes[0]
    # Latency counts from the schedule, so the stall shows in it.
    assert summary.latency.max_ms == pytest.approx(summary.max_lag_ms)


def test_beyond_the_concurrency_limit_requests_are_dropped() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    started = 0

    async def stuck() -> Result:
        nonlocal started
        started += 1
        await release.wait()
        return Result()

    async def go() -> tuple[LoadSummary, list[Tick]]:
        ticks: list[Tick] = []

        def on_second(tick: Tick) -> None:
            ticks.append(tick)
            if tick.second == 2:
                release.set()  # answers come back after the window

        summary = await run_open_loop(
            rps=10,
            duration=2.0,
            send=stuck,
            concurrency_limit=5,
            on_second=on_second,
            clock=clock,
            sleep=clock.sleep,
        )
        return summary, ticks

    summary, ticks = asyncio.run(go())
    assert started == 5
    assert (summary.scheduled, summary.sent, summary.dropped, summary.ok) == (20, 5, 15, 5)
    assert [(t.sent, t.dropped) for t in ticks[:2]] == [(5, 5), (0, 10)]


def test_requests_still_in_flight_after_the_drain_time_are_unfinished() -> None:
    clock = FakeClock()

    async def never() -> Result:
        await asyncio.Event().wait()
        return Result()

    summary, ticks = run(clock, never, rps=4, duration=1.0, drain_timeout=2.0)
    assert (summary.sent, summary.ok, summary.failed_total, summary.unfinished) == (4, 0, 0, 4)
    assert summary.latency.count == 0
    assert clock.now - 1000.0 == pytest.approx(3.0)  # the window, then the drain time
    assert [t.in_flight for t in ticks] == [4, 4, 4]


def test_a_run_without_end_stops_when_asked() -> None:
    clock = FakeClock()

    async def fine() -> Result:
        return Result(site="tokyo")

    summary, ticks = run(clock, fine, rps=20, duration=None, stop_after=3)
    assert summary.duration is None
    assert summary.sent == 60 == summary.ok
    assert summary.window == pytest.approx(3.0)
    assert [t.sent for t in ticks] == [20, 20, 20]


def test_failures_are_counted_by_reason() -> None:
    clock = FakeClock()
    outcomes = iter([Result(failure="http 503"), Result(failure=TIMEOUT), Result(site="paris")] * 4)

    async def mixed() -> Result:
        return next(outcomes)

    async def broken() -> Result:
        raise RuntimeError("bug")

    summary, ticks = run(clock, mixed, rps=6, duration=2.0)
    assert summary.failed == {"http 503": 4, TIMEOUT: 4}
    assert summary.failed_total == 8 and summary.ok == 4
    assert ticks[0].failed == {"http 503": 2, TIMEOUT: 2} and ticks[0].failed_total == 4
    assert summary.latency.count == 4  # latency is of successful requests only

    crashed, _ = run(FakeClock(), broken, rps=2, duration=1.0)
    assert crashed.failed == {"error (RuntimeError)": 2}


def test_the_engine_refuses_nonsense() -> None:
    async def fine() -> Result:
        return Result()

    for kwargs in ({"rps": 0}, {"duration": 0.0}, {"concurrency_limit": 0}):
        options: dict[str, object] = {"rps": 1, "duration": 1.0, "send": fine, **kwargs}
        with pytest.raises(ValueError, match="must be"):
            asyncio.run(run_open_loop(**options))  # type: ignore[arg-type]


# -- failure classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectFailed("127.0.0.2:8080: Connection refused"), CONNECT_ERROR),
        (ConnectionRefusedError(), CONNECT_ERROR),
        (TimeoutError(), TIMEOUT),
        (ConnectionLost("the server closed the connection"), CONNECTION_LOST),
        (ConnectionResetError(), CONNECTION_LOST),
        (BrokenPipeError(), CONNECTION_LOST),
        (ValueError("x"), "error (ValueError)"),
    ],
)
def test_classify_exception(exc: BaseException, reason: str) -> None:
    assert classify_exception(exc) == reason


def test_classify_status() -> None:
    assert [classify_status(s) for s in (200, 204, 302, 399)] == [None] * 4
    assert classify_status(404) == "http 404"
    assert classify_status(503) == "http 503"


@pytest.mark.parametrize(
    ("via", "body", "content_type", "site"),
    [
        ([], b'{"site": "paris", "replica": "demo-hello-0"}', "application/json", "paris"),
        (["1.1 edgefleet-london"], b'{"site": "paris"}', "application/json", "paris"),
        (["1.1 edgefleet-london"], b"hello", "text/plain", "london"),
        (["1.1 edgefleet-london, 1.1 edgefleet-paris"], b"", "", "london"),
        (["1.0 squid", "1.1 edgefleet-boston"], b"", "", "boston"),
        (["1.1 edgefleet-tokyo"], b"{not json", "application/json", "tokyo"),
        (["1.1 edgefleet-tokyo"], b'["a list"]', "application/json", "tokyo"),
        (["1.1 proxy.example"], b'{"site": 3}', "application/json", None),
        ([], b"", "", None),
    ],
)
def test_served_by(via: list[str], body: bytes, content_type: str, site: str | None) -> None:
    assert served_by(via, body, content_type) == site


# -- HTTP heads and bodies -----------------------------------------------------------------------


def test_parse_head() -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\nVia: 1.1 edgefleet-paris\r\nX-A:  b \r\n\r\n"
    assert parse_head(head) == (503, (("via", "1.1 edgefleet-paris"), ("x-a", "b")))
    assert parse_head(b"HTTP/1.0 200\r\n\r\n") == (200, ())


@pytest.mark.parametrize(
    "head",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2xx OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    ],
)
def test_parse_head_refuses_what_is_not_http(head: bytes) -> None:
    with pytest.raises(ConnectionLost):
        parse_head(head)


@pytest.mark.parametrize(
    ("status", "headers", "version_11", "expected"),
    [
        (200, [("content-length", "12")], True, Framing("length", 12)),
        (200, [("content-length", "12"), ("content-length", "12")], True, Framing("length", 12)),
        (200, [("transfer-encoding", "chunked")], True, Framing("chunked")),
        (
            200,
            [("transfer-encoding", "gzip, chunked"), ("content-length", "5")],
            True,
            Framing("chunked"),
        ),
        (200, [("transfer-encoding", "gzip")], True, Framing("close", reusable=False)),
        (200, [], True, Framing("close", reusable=False)),
        (204, [], True, Framing("none")),
        (304, [("content-length", "100")], True, Framing("none")),
        (
            200,
            [("content-length", "0"), ("connection", "Close")],
            True,
            Framing("length", 0, False),
        ),
        (200, [("content-length", "3")], False, Framing("length", 3, reusable=False)),
        (200, [("content-length", "3"), ("connection", "keep-alive")], False, Framing("length", 3)),
    ],
)
def test_framing(
    status: int, headers: list[tuple[str, str]], version_11: bool, expected: Framing
) -> None:
    assert framing(status, headers, version_11) == expected


@pytest.mark.parametrize("lengths", [["3", "4"], ["-1"], ["3 4"]])
def test_framing_refuses_contradictory_lengths(lengths: list[str]) -> None:
    with pytest.raises(ConnectionLost, match="Content-Length"):
        framing(200, [("content-length", n) for n in lengths])


def body_of(data: bytes, how: Framing) -> tuple[bytes, bytes]:
    """The body kept, and what is left in the stream after it."""

    async def go() -> tuple[bytes, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        body = await read_body(reader, how)
        return body, await reader.read()

    return asyncio.run(go())


def test_read_body_by_length_and_chunks_leaves_the_next_response() -> None:
    assert body_of(b"hello" + b"HTTP/1.1 ...", Framing("length", 5)) == (
        b"hello",
        b"HTTP/1.1 ...",
    )
    chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    assert body_of(chunked, Framing("chunked")) == (b"hello world", b"NEXT")
    assert body_of(b"to the end", Framing("close")) == (b"to the end", b"")
    assert body_of(b"NEXT", Framing("none")) == (b"", b"NEXT")


def test_read_body_keeps_only_the_start_of_a_large_body() -> None:
    big = b"x" * (BODY_KEPT * 3)
    body, rest = body_of(big + b"NEXT", Framing("length", len(big)))
    assert body == big[:BODY_KEPT] and rest == b"NEXT"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"zz\r\nhello\r\n0\r\n\r\n", ConnectionLost),
        (b"5\r\nhelloXX0\r\n\r\n", ConnectionLost),
        (b"5\r\nhel", asyncio.IncompleteReadError),
    ],
)
def test_read_body_refuses_broken_chunks(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        body_of(data, Framing("chunked"))


# -- source address ------------------------------------------------------------------------------


def test_source_is_the_first_bindable_host_of_the_networks() -> None:
    networks = ["10.1.0.0/16", "fd00::/64", "127.1.1.0/24", "127.1.9.9/32"]
    assert source_candidates(networks) == ["10.1.0.1", "127.1.1.1", "127.1.9.9"]
    assert choose_source(networks, bindable=lambda a: a.startswith("127.")) == "127.1.1.1"
    assert choose_source(networks, bindable=lambda a: a == "127.1.9.9") == "127.1.9.9"
    assert choose_source(networks, bindable=lambda a: False) is None
    assert choose_source([]) is None


def test_loopback_sources_bind_for_real() -> None:
    # Linux routes all of 127/8 to lo: a demo client of site k binds 127.1.k.1.
    assert choose_source(["192.0.2.0/24", "127.1.3.0/24"]) == "127.1.3.1"


# -- DNS answers ---------------------------------------------------------------------------------

NAME = "hello.demo.edge.internal"


def reply(*addresses: str, ttl: int = 5, rcode: dns.rcode.Rcode = dns.rcode.NOERROR) -> bytes:
    query = dns.message.make_query(NAME, dns.rdatatype.A)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if addresses:
        response.answer.append(
            dns.rrset.from_text_list(f"{NAME}.", ttl, "IN", "A", list(addresses))
        )
    return response.to_wire(want_shuffle=False)  # as the edge DNS: best first


def test_read_answer_keeps_the_order_and_the_ttl() -> None:
    answer = read_answer(dns.message.from_wire(reply("127.0.1.2", "127.0.1.1", ttl=7)))
    assert answer.addresses == ("127.0.1.2", "127.0.1.1")
    assert answer.ttl == 7 and answer.rcode == dns.rcode.NOERROR
    empty = read_answer(dns.message.from_wire(reply(rcode=dns.rcode.NXDOMAIN)))
    assert (empty.addresses, empty.rcode) == ((), dns.rcode.NXDOMAIN)


class FakeDns:
    """A query function answering from a list, counting the questions."""

    def __init__(self, clock: FakeClock, answers: list[bytes | Exception]) -> None:
        self.clock = clock
        self.answers = answers
        self.asked: list[float] = []

    async def __call__(self, query: dns.message.Message) -> dns.message.Message:
        self.asked.append(self.clock.now)
        await asyncio.sleep(0)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dns.message.from_wire(answer)


def resolver(clock: FakeClock, dns_: FakeDns) -> EdgeResolver:
    return EdgeResolver(name=NAME, server="127.0.1.1", port=5353, clock=clock, query=dns_)


def test_resolver_honours_the_ttl_and_asks_once_for_many() -> None:
    clock = FakeClock()
    fake = FakeDns(clock, [reply("127.0.1.1", ttl=5), reply("127.0.1.2", ttl=5)])
    edge = resolver(clock, fake)

    async def go() -> list[tuple[str, ...]]:
        first = await asyncio.gather(*(edge.addresses() for _ in range(50)))
        clock.now += 4.9
        cached = await edge.addresses()
        clock.now += 0.2
        renewed = await edge.addresses()
        return [*first, cached, renewed]

    answers = asyncio.run(go())
    assert answers[:51] == [("127.0.1.1",)] * 51
    assert answers[51] == ("127.0.1.2",)
    assert len(fake.asked) == edge.queries == 2


def test_resolver_retries_an_empty_answer_after_a_second() -> None:
    clock = FakeClock()
    fake = FakeDns(clock, [reply(), reply("127.0.1.1")])
    edge = resolver(clock, fake)

    async def go() -> None:
        with pytest.raises(NoDnsAnswer, match="NODATA"):
            await edge.addresses()
        clock.now += 0.5
        with pytest.raises(NoDnsAnswer, match="NODATA"):
            await edge.addresses()  # within the second: no new question
        assert len(fake.asked) == 1
        clock.now += 0.6
        assert await edge.addresses() == ("127.0.1.1",)

    asyncio.run(go())
    assert list(edge.problems.values()) == [1]


def test_resolver_serves_the_last_answer_stale_while_the_server_is_silent() -> None:
    clock = FakeClock()
    silence = dns.exception.Timeout()
    fake = FakeDns(clock, [reply("127.0.1.1", ttl=5), silence, silence, reply("127.0.1.2")])
    edge = resolver(clock, fake)

    async def go() -> None:
        assert await edge.addresses() == ("127.0.1.1",)
        clock.now += 6  # expired; the server does not answer: the old answer still serves
        assert await edge.addresses() == ("127.0.1.1",)
        clock.now += 0.5  # asked again only after retry_after
        assert await edge.addresses() == ("127.0.1.1",)
        assert len(fake.asked) == 2
        clock.now += 0.6
        assert await edge.addresses() == ("127.0.1.1",)
        clock.now += 1.1  # the server is back: its new answer replaces the stale one
        assert await edge.addresses() == ("127.0.1.2",)

    asyncio.run(go())
    assert edge.stale == 2


def test_resolver_stops_serving_stale_after_its_limit_and_never_for_an_empty_answer() -> None:
    clock = FakeClock()
    silence = dns.exception.Timeout()
    old = resolver(clock, FakeDns(clock, [reply("127.0.1.1", ttl=5), silence]))

    async def too_old() -> None:
        await old.addresses()
        clock.now += 5 + 31  # TTL plus more than SERVE_STALE
        with pytest.raises(NoDnsAnswer, match="did not answer"):
            await old.addresses()

    asyncio.run(too_old())
    emptied = resolver(clock, FakeDns(clock, [reply("127.0.1.1", ttl=5), reply()]))

    async def no_site() -> None:
        await emptied.addresses()
        clock.now += 6  # an answer that says "nobody serves it" is believed at once
        with pytest.raises(NoDnsAnswer, match="NODATA"):
            await emptied.addresses()

    asyncio.run(no_site())


def test_get_first_moves_on_only_when_no_connection_could_be_made() -> None:
    spec = LoadSpec(app="hello", rps=1, dns_server="127.0.0.1")
    calls: list[str] = []

    class Pool:
        def __init__(self, failures: dict[str, Exception]) -> None:
            self.failures = failures

        async def get(self, address: str, port: int, target: str, host: str) -> HttpResponse:
            calls.append(address)
            if address in self.failures:
                raise self.failures[address]
            return HttpResponse(200, (), b"")

    refused = {"10.0.0.1": ConnectFailed("refused")}
    response = asyncio.run(get_first(Pool(refused), ["10.0.0.1", "10.0.0.2"], spec))  # type: ignore[arg-type]
    assert response.status == 200 and calls == ["10.0.0.1", "10.0.0.2"]
    calls.clear()
    lost = {"10.0.0.1": ConnectionLost("reset mid-response")}
    with pytest.raises(ConnectionLost):  # it was sent: not sent again elsewhere
        asyncio.run(get_first(Pool(lost), ["10.0.0.1", "10.0.0.2"], spec))  # type: ignore[arg-type]
    assert calls == ["10.0.0.1"]
    calls.clear()
    both = {a: ConnectFailed("refused") for a in ("10.0.0.1", "10.0.0.2")}
    with pytest.raises(ConnectFailed):
        asyncio.run(get_first(Pool(both), ["10.0.0.1", "10.0.0.2"], spec))  # type: ignore[arg-type]
    assert calls == ["10.0.0.1", "10.0.0.2"]


def test_resolver_check_explains_what_cannot_work() -> None:
    clock = FakeClock()
    missing = resolver(clock, FakeDns(clock, [reply(rcode=dns.rcode.NXDOMAIN)]))
    with pytest.raises(LoadError, match=r"does not exist \(NXDOMAIN\).*edgefleet get apps"):
        asyncio.run(missing.check())
    silent = resolver(clock, FakeDns(clock, [dns.exception.Timeout()]))
    with pytest.raises(LoadError, match=r"127.0.1.1:5353 did not answer.*agent running"):
        asyncio.run(silent.check())
    starting = resolver(clock, FakeDns(clock, [reply()]))
    asyncio.run(starting.check())  # NODATA: the app exists, no site serves it yet


# -- the spec and the summary --------------------------------------------------------------------


def test_spec_names_and_targets() -> None:
    spec = LoadSpec(app="hello", rps=5, dns_server="127.0.1.1")
    assert spec.name == NAME and spec.target == "/"
    assert LoadSpec(app="a", tenant="t", rps=1, dns_server="x", work_ms=20).target == "/?work=20"
    with_query = LoadSpec(app="a", rps=1, dns_server="x", path="/p?x=1", work_ms=0)
    assert with_query.target == "/p?x=1&work=0"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rps": 0}, "rps must be > 0"),
        ({"duration": -1.0}, "duration must be > 0"),
        ({"path": "x"}, "path must start with '/'"),
        ({"work_ms": -5}, "work must be >= 0"),
        ({"concurrency_limit": 0}, "concurrency limit must be >= 1"),
        ({"http_port": 0}, "http_port must be 1 to 65535"),
    ],
)
def test_spec_refuses_nonsense(kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"app": "hello", "rps": 5, "dns_server": "127.0.1.1", **kwargs}
    with pytest.raises(ValueError, match=message):
        LoadSpec(**options)  # type: ignore[arg-type]


def test_summary_json_shape() -> None:
    histogram = LatencyHistogram()
    for value in (1.0, 2.0, 3.0):
        histogram.record(value)
    summary = LoadSummary(
        rps=50,
        duration=2.0,
        window=2.0,
        scheduled=100,
        sent=98,
        dropped=2,
        ok=3,
        failed={TIMEOUT: 90, NO_DNS_ANSWER: 5},
        unfinished=0,
        latency=LatencySummary.of(histogram),
        served_by={"paris": 2, "london": 1},
        name=NAME,
        source_address="127.1.1.1",
        dns_server="127.0.1.1:5353",
        dns_queries=3,
        last_answer=("127.0.1.1",),
        notes=("a note",),
    )
    data = json.loads(json.dumps(summary.to_json()))
    assert set(data) == {
        "name",
        "source",
        "dnsServer",
        "rps",
        "durationS",
        "windowS",
        "achievedRps",
        "scheduled",
        "sent",
        "dropped",
        "ok",
        "failed",
        "failedTotal",
        "unfinished",
        "latencyMs",
        "servedBy",
        "dnsQueries",
        "lastAnswer",
        "maxLagMs",
        "connections",
        "notes",
    }
    assert data["achievedRps"] == 49.0
    assert data["failed"] == {NO_DNS_ANSWER: 5, TIMEOUT: 90} and data["failedTotal"] == 95
    assert data["latencyMs"]["count"] == 3 and data["latencyMs"]["max"] == 3.0
    assert set(data["latencyMs"]) == {"count", "min", "mean", "p50", "p90", "p99", "max"}
    assert data["servedBy"] == {"london": 1, "paris": 2}
    assert (data["source"], data["lastAnswer"], data["notes"]) == (
        "127.1.1.1",
        ["127.0.1.1"],
        ["a note"],
    )
    nothing = LoadSummary(
        rps=1,
        duration=None,
        window=0.0,
        scheduled=0,
        sent=0,
        dropped=0,
        ok=0,
        failed={},
        unfinished=0,
        latency=LatencySummary.of(LatencyHistogram()),
        served_by={},
    ).to_json()
    assert nothing["latencyMs"]["p50"] is None and nothing["durationS"] is None
    assert nothing["achievedRps"] == 0.0
