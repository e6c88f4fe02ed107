"""Open-loop HTTP load from clients near one site, as a device at that site would send it.

A client near a site asks the site's edge DNS for ``<app>.<tenant>.edge.internal``, connects to
the first address answered (the nearest serving site; the edge DNS orders answers best first)
and sends HTTP with that ``Host``. The generator does the same from a source address inside the
site's client networks, so that the fleet locates these clients at that site.

Open loop: request ``k`` is started at ``start + k / rps`` whatever happened to the earlier ones,
so a slow or failing fleet shows as latency and failures, never as a lower rate (no coordinated
omission: latency is measured from the scheduled start). Above ``concurrency_limit`` requests in
flight, a request due is not sent and counts as dropped by the generator.

Layout: pure helpers (percentiles, the schedule, failure classification, reading DNS answers,
HTTP heads and ``Via`` headers), the engine ``run_open_loop`` over an injected clock and ``send``
function (so the schedule is tested with a fake clock), and ``run_load``, which wires the engine
to the edge DNS (dnspython) and HTTP (``HttpPool``, keep-alive connections).

Why not httpx for the requests: on a 2-core machine against the sample app, an httpx request
costs about 1.5 ms of CPU and its pool slows down as connections multiply (87 requests/s with 50
in flight), while a plain HTTP/1.1 exchange on asyncio streams costs about 0.05 ms. An open-loop
generator that slows down under load reports its own queueing as the fleet's latency, so the
generator speaks the little HTTP it needs itself: GET, keep-alive, Content-Length or chunked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, ip_network
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

ZONE = "edge.internal"
"""The fleet zone apps are named in."""

NO_DNS_ANSWER = "no DNS answer"
"""Failure: the edge DNS gave no address (NXDOMAIN, NODATA) or did not answer."""
CONNECT_ERROR = "connect error"
"""Failure: the TCP connection to the answered address was refused or could not be made."""
TIMEOUT = "timeout"
"""Failure: no answer within the request timeout (connecting, sending or reading)."""
CONNECTION_LOST = "connection lost"
"""Failure: the connection broke or the server spoke broken HTTP mid-request."""

NO_ANSWER_RETRY = 1.0
"""Seconds before asking the DNS again after an empty or failed answer."""
SERVE_STALE = 30.0
"""Seconds past its TTL an answer is still used while the DNS server does not answer."""
CONNECT_TIMEOUT = 3.0
"""Seconds a TCP connection may take before the next answered address is tried."""

# ---------------------------------------------------------------------------------------------
# Percentiles


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``ordered`` (sorted ascending).

    The smallest value with at least ``q`` percent of the values at or below it: always one of
    the values, never an interpolation. ``q`` = 0 gives the minimum. Raises ValueError for an
    empty sequence or ``q`` outside 0..100.
    """
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be 0 to 100, not {q}")
    # q * n first: q / 100 * n turns 7 % of 100 into 7.000000000000001 and the rank into 8.
    rank = max(1, math.ceil(q * len(ordered) / 100 - 1e-9))
    return ordered[rank - 1]


class LatencyHistogram:
    """Latencies in logarithmic buckets: percentiles within ``precision`` in bounded memory.

    A run that lasts hours at thousands of requests per second cannot keep every latency; like
    HdrHistogram, this keeps counts per bucket, each bucket ``precision`` (relative) wide, and
    the exact minimum, maximum and sum. A percentile is the geometric middle of the bucket
    holding the nearest-rank value, clamped to the exact extremes.
    """

    def __init__(self, *, precision: float = 0.01, floor_ms: float = 0.001) -> None:
        if not 0 < precision < 1:
            raise ValueError(f"precision must be between 0 and 1, not {precision}")
        self._log_growth = math.log1p(precision)
        self._floor = floor_ms
        self._counts: Counter[int] = Counter()
        self.count = 0
        """Values recorded."""
        self.total = 0.0
        """Sum of the values recorded, milliseconds."""
        self.minimum = math.inf
        """Smallest value recorded, milliseconds."""
        self.maximum = -math.inf
        """Largest value recorded, milliseconds."""

    def _bucket(self, ms: float) -> int:
        if ms <= self._floor:
            return -1
        return int(math.log(ms / self._floor) / self._log_growth)

    def record(self, ms: float) -> None:
        """Add one latency, milliseconds."""
        self._counts[self._bucket(ms)] += 1
        self.count += 1
        self.total += ms
        self.minimum = min(self.minimum, ms)
        self.maximum = max(self.maximum, ms)

    def percentile(self, q: float) -> float:
        """The nearest-rank ``q``-th percentile, within the precision; ValueError when empty."""
        if not self.count:
            raise ValueError("percentile of no values")
        if not 0 <= q <= 100:
            raise ValueError(f"percentile q must be 0 to 100, not {q}")
        rank = max(1, math.ceil(q * self.count / 100 - 1e-9))
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                break
        if bucket < 0:
            middle = self._floor
        else:
            middle = self._floor * math.exp((bucket + 0.5) * self._log_growth)
        return min(max(middle, self.minimum), self.maximum)


@dataclass(frozen=True)
class LatencySummary:
    """Latency of the successful requests of a run, milliseconds (None: no request succeeded)."""

    count: int
    """Successful requests measured."""
    min_ms: float | None
    """Fastest."""
    mean_ms: float | None
    """Arithmetic mean."""
    p50_ms: float | None
    """Median."""
    p90_ms: float | None
    """90th percentile."""
    p99_ms: float | None
    """99th percentile."""
    max_ms: float | None
    """Slowest."""

    @classmethod
    def of(cls, histogram: LatencyHistogram) -> LatencySummary:
        """The summary of a histogram."""
        if not histogram.count:
            return cls(0, None, None, None, None, None, None)
        return cls(
            count=histogram.count,
            min_ms=histogram.minimum,
            mean_ms=histogram.total / histogram.count,
            p50_ms=histogram.percentile(50),
            p90_ms=histogram.percentile(90),
            p99_ms=histogram.percentile(99),
            max_ms=histogram.maximum,
        )


# ---------------------------------------------------------------------------------------------
# The schedule


def due_count(elapsed: float, rps: float) -> int:
    """How many requests of an open-loop schedule at ``rps`` are due ``elapsed`` seconds in.

    Request ``k`` (from 0) is due at ``k / rps``, so one is due at once and the count steps up
    every ``1 / rps`` seconds. The tolerance keeps float error from delaying a request due now.
    """
    if elapsed < 0:
        return 0
    return math.floor(elapsed * rps + 1e-9) + 1


def planned_total(duration: float | None, rps: float) -> int | None:
    """Requests a run of ``duration`` seconds at ``rps`` starts (those due before the end);
    None for a run without end."""
    if duration is None:
        return None
    return max(0, math.ceil(duration * rps - 1e-9))


# ---------------------------------------------------------------------------------------------
# Outcomes


@dataclass(frozen=True)
class Result:
    """What became of one request, as ``send`` reports it (the engine adds the latency)."""

    failure: str | None = None
    """Why it failed (``http 503``, ``timeout``, ...); None when it succeeded."""
    site: str | None = None
    """The site that served it, when the response says so."""


def classify_status(status: int) -> str | None:
    """The failure an HTTP status is: None for 1xx-3xx, ``http <status>`` otherwise."""
    return None if status < 400 else f"http {status}"


class ConnectFailed(Exception):
    """The TCP connection could not be made (refused, unreachable, no such address)."""


class ConnectionLost(Exception):
    """The connection broke mid-exchange, or the server's answer was not valid HTTP/1.x."""


def classify_exception(exc: BaseException) -> str:
    """The failure a request's exception is: ``timeout`` (a connect timeout too), ``connect
    error``, ``connection lost``, else ``error (<type>)``."""
    if isinstance(exc, TimeoutError):
        return TIMEOUT
    if isinstance(exc, ConnectFailed | ConnectionRefusedError):
        return CONNECT_ERROR
    if isinstance(exc, ConnectionLost | ConnectionError):
        return CONNECTION_LOST
    return f"error ({type(exc).__name__})"


def served_by(via: Iterable[str], body: bytes = b"", content_type: str = "") -> str | None:
    """The site that served a response, or None when the response does not say.

    The sample app names its site in its JSON body (``"site"``), which is where the replica
    really ran, even after a spill-over between ingresses; any other app is known by the
    ``Via: 1.1 edgefleet-<site>`` the site ingresses add. Each hop appends to ``Via``
    (RFC 9110 7.6.3), so the first edgefleet entry is the ingress nearest the replica.
    """
    if "json" in content_type.lower() and 0 < len(body) <= 4096:
        with contextlib.suppress(ValueError):
            data = json.loads(body)
            if isinstance(data, dict) and isinstance(data.get("site"), str) and data["site"]:
                return str(data["site"])
    for value in via:
        for entry in value.split(","):
            parts = entry.split()
            if len(parts) >= 2 and parts[1].startswith("edgefleet-"):
                return parts[1].removeprefix("edgefleet-") or None
    return None


# ---------------------------------------------------------------------------------------------
# The per-second record and the summary


@dataclass(frozen=True)
class Tick:
    """What happened during one second of a run (the last one may be shorter)."""

    second: int
    """Which second, from 1."""
    span: float
    """Seconds this record covers: 1.0, except for the partial last second."""
    sent: int
    """Requests started."""
    dropped: int
    """Requests due but not started: the concurrency limit was reached."""
    ok: int
    """Requests that completed with a status below 400."""
    failed: Mapping[str, int]
    """Requests that failed, by reason (``http 503``, ``timeout``, ``no DNS answer``...)."""
    in_flight: int
    """Requests started and not yet complete at the end of the second."""
    p50_ms: float | None
    """Median latency of the successful requests that completed in this second."""
    p99_ms: float | None
    """99th percentile of the same."""
    served_by: Mapping[str, int]
    """Successful requests per serving site ("unknown" when the response did not say)."""
    lag_ms: float = 0.0
    """How late the generator started its latest request of the second: above a few
    milliseconds, this machine cannot keep the rate and latencies include the delay."""

    @property
    def failed_total(self) -> int:
        """Failed requests, all reasons."""
        return sum(self.failed.values())


LAG_WARNING_MS = 50.0
"""Schedule lag beyond which the summary warns that the generator fell behind."""


@dataclass(frozen=True)
class LoadSummary:
    """The outcome of a whole run."""

    rps: float
    """Target rate, requests started per second."""
    duration: float | None
    """Planned seconds; None for a run until stopped."""
    window: float
    """Seconds requests were scheduled over (the duration, or until stopped)."""
    scheduled: int
    """Requests due: sent plus dropped."""
    sent: int
    """Requests started."""
    dropped: int
    """Requests not started because ``concurrency_limit`` were in flight."""
    ok: int
    """Requests that completed with a status below 400."""
    failed: Mapping[str, int]
    """Failed requests by reason."""
    unfinished: int
    """Requests still in flight when the run ended (cancelled after the drain time)."""
    latency: LatencySummary
    """Latency of the successful requests, from their scheduled start."""
    served_by: Mapping[str, int]
    """Successful requests per serving site."""
    max_lag_ms: float = 0.0
    """The latest any request was started after its scheduled time."""
    name: str = ""
    """The DNS name asked, ``<app>.<tenant>.edge.internal``."""
    source_address: str | None = None
    """Source address of DNS and HTTP; None: the system's default."""
    dns_server: str = ""
    """``ip:port`` of the edge DNS asked."""
    dns_queries: int = 0
    """DNS queries sent (one per TTL, plus retries)."""
    last_answer: tuple[str, ...] = ()
    """Addresses of the last DNS answer, nearest first."""
    connections: int = 0
    """HTTP connections opened (fewer than requests: connections are reused)."""
    notes: tuple[str, ...] = ()
    """Problems worth telling, e.g. why the DNS had no answer."""

    @property
    def failed_total(self) -> int:
        """Failed requests, all reasons."""
        return sum(self.failed.values())

    @property
    def achieved_rps(self) -> float:
        """Requests started per second of the window."""
        return self.sent / self.window if self.window > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (camelCase, like the API), for ``edgefleet load --json``."""
        latency = self.latency
        return {
            "name": self.name,
            "source": self.source_address,
            "dnsServer": self.dns_server,
            "rps": self.rps,
            "durationS": self.duration,
            "windowS": round(self.window, 3),
            "achievedRps": round(self.achieved_rps, 2),
            "scheduled": self.scheduled,
            "sent": self.sent,
            "dropped": self.dropped,
            "ok": self.ok,
            "failed": dict(sorted(self.failed.items())),
            "failedTotal": self.failed_total,
            "unfinished": self.unfinished,
            "latencyMs": {
                "count": latency.count,
                "min": _ms(latency.min_ms),
                "mean": _ms(latency.mean_ms),
                "p50": _ms(latency.p50_ms),
                "p90": _ms(latency.p90_ms),
                "p99": _ms(latency.p99_ms),
                "max": _ms(latency.max_ms),
            },
            "servedBy": dict(sorted(self.served_by.items())),
            "maxLagMs": round(self.max_lag_ms, 3),
            "dnsQueries": self.dns_queries,
            "lastAnswer": list(self.last_answer),
            "connections": self.connections,
            "notes": list(self.notes),
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---------------------------------------------------------------------------------------------
# The engine


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Send = Callable[[], Awaitable[Result]]


@dataclass
class _Window:
    """Counts of one second, then of the whole run."""

    sent: int = 0
    dropped: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)
    lag: float = 0.0

    def active(self) -> bool:
        return bool(self.sent or self.dropped or self.ok or self.failed)


class _OpenLoop:
    """One run of the schedule; see ``run_open_loop``."""

    def __init__(
        self,
        *,
        rps: float,
        duration: float | None,
        concurrency_limit: int,
        send: Send,
        on_second: Callable[[Tick], None] | None,
        stop: asyncio.Event | None,
        clock: Clock,
        sleep: Sleep,
        drain_timeout: float,
        stop_grace: float,
    ) -> None:
        self.rps = rps
        self.duration = duration
        self.limit = concurrency_limit
        self.send = send
        self.on_second = on_second
        self.stop = stop
        self.clock = clock
        self.sleep = sleep
        self.drain_timeout = drain_timeout
        self.stop_grace = stop_grace
        self.tasks: set[asyncio.Task[None]] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.window = _Window()
        self.totals = _Window()
        self.histogram = LatencyHistogram()
        self.start = 0.0
        self.next_tick = 1

    def _dispatch(self, scheduled_at: float, now: float) -> None:
        lag = max(0.0, now - scheduled_at)
        self.window.lag = max(self.window.lag, lag)
        self.totals.lag = max(self.totals.lag, lag)
        if len(self.tasks) >= self.limit:
            self.window.dropped += 1
            self.totals.dropped += 1
            return
        self.window.sent += 1
        self.totals.sent += 1
        task = asyncio.ensure_future(self._one(scheduled_at))
        self.tasks.add(task)
        self.idle.clear()
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self.idle.set()

    async def _one(self, scheduled_at: float) -> None:
        try:
            result = await self.send()
        except Exception as exc:  # a broken send counts as a failure, not a crashed run
            result = Result(failure=classify_exception(exc))
        if result.failure is None:
            latency_ms = (self.clock() - scheduled_at) * 1000
            for counts in (self.window, self.totals):
                counts.ok += 1
                counts.served[result.site or "unknown"] += 1
            self.window.latencies.append(latency_ms)
            self.histogram.record(latency_ms)
        else:
            self.window.failed[result.failure] += 1
            self.totals.failed[result.failure] += 1

    def _emit(self, span: float) -> None:
        window, self.window = self.window, _Window()
        ordered = sorted(window.latencies)
        tick = Tick(
            second=self.next_tick,
            span=span,
            sent=window.sent,
            dropped=window.dropped,
            ok=window.ok,
            failed=dict(window.failed),
            in_flight=len(self.tasks),
            p50_ms=percentile(ordered, 50) if ordered else None,
            p99_ms=percentile(ordered, 99) if ordered else None,
            served_by=dict(window.served),
            lag_ms=window.lag * 1000,
        )
        self.next_tick += 1
        if self.on_second is not None:
            self.on_second(tick)

    def _ticks_due(self, now: float) -> None:
        while now - self.start >= self.next_tick:
            self._emit(1.0)

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay``, but wake as soon as nothing is in flight or the run is stopped."""
        waits = [asyncio.ensure_future(self.sleep(delay)), asyncio.ensure_future(self.idle.wait())]
        if self.stop is not None and not self.stop.is_set():
            waits.append(asyncio.ensure_future(self.stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def run(self) -> LoadSummary:
        self.start = self.clock()
        total = planned_total(self.duration, self.rps)
        started = 0
        # Schedule: start what is due, then sleep to the next request or second boundary.
        while not self._stopped():
            now = self.clock()
            self._ticks_due(now)
            if self._stopped():  # on_second may have asked to stop
                break
            due = due_count(now - self.start, self.rps)
            if total is not None:
                due = min(due, total)
            for k in range(started, due):
                self._dispatch(self.start + k / self.rps, now)
            started = max(started, due)
            if total is not None and started >= total:
                break
            wake = min(self.start + started / self.rps, self.start + self.next_tick)
            await self.sleep(max(0.0, wake - self.clock()))
        # Drain: keep the per-second records going until the window is over and nothing is in
        # flight, or the drain time is up.
        if self.duration is not None and not self._stopped():
            window_end = self.start + self.duration
            grace = self.drain_timeout
        else:
            window_end = self.clock()
            grace = self.stop_grace
        deadline = max(window_end, self.clock()) + grace
        while True:
            now = self.clock()
            self._ticks_due(now)
            if self._stopped() and now < window_end:
                window_end = now
                deadline = min(deadline, now + self.stop_grace)
            if now >= window_end and not self.tasks:
                break
            if now >= deadline:
                break
            boundary = self.start + self.next_tick
            if now < window_end:
                await self.sleep(max(0.0, min(boundary, window_end) - now))
            else:
                if self._stopped():
                    deadline = min(deadline, now + self.stop_grace)
                await self._wait(max(0.0, min(boundary, deadline) - now))
        unfinished = len(self.tasks)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        elapsed = self.clock() - self.start
        if self.window.active() or self.next_tick == 1:
            self._emit(max(0.0, elapsed - (self.next_tick - 1)))
        notes: tuple[str, ...] = ()
        if self.totals.lag * 1000 > LAG_WARNING_MS:
            notes = (
                f"the generator started requests up to {self.totals.lag * 1000:.0f} ms late: "
                "this machine could not keep the rate, and latencies include that delay",
            )
        return LoadSummary(
            rps=self.rps,
            duration=self.duration,
            window=window_end - self.start,
            scheduled=self.totals.sent + self.totals.dropped,
            sent=self.totals.sent,
            dropped=self.totals.dropped,
            ok=self.totals.ok,
            failed=dict(self.totals.failed),
            unfinished=unfinished,
            latency=LatencySummary.of(self.histogram),
            served_by=dict(self.totals.served),
            max_lag_ms=self.totals.lag * 1000,
            notes=notes,
        )


async def run_open_loop(
    *,
    rps: float,
    duration: float | None,
    send: Send,
    concurrency_limit: int = 1000,
    on_second: Callable[[Tick], None] | None = None,
    stop: asyncio.Event | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    drain_timeout: float = 15.0,
    stop_grace: float = 1.0,
) -> LoadSummary:
    """Start ``send()`` ``rps`` times a second for ``duration`` seconds (None: until ``stop``).

    Request ``k`` starts at ``start + k / rps`` whether or not earlier ones have answered; with
    ``concurrency_limit`` in flight, a request due is dropped instead. ``on_second`` gets a
    ``Tick`` at every second boundary, and one for the partial last second. After the window
    the run waits for requests in flight up to ``drain_timeout`` seconds (``stop_grace`` once
    ``stop`` is set), then cancels the rest and counts them unfinished. Latency runs from the
    scheduled start to the end of ``send``. ``clock`` and ``sleep`` are injectable so that the
    schedule can be checked on a fake clock.
    """
    if rps <= 0:
        raise ValueError(f"rps must be > 0, not {rps}")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be > 0 seconds, not {duration}")
    if concurrency_limit < 1:
        raise ValueError(f"concurrency_limit must be >= 1, not {concurrency_limit}")
    loop = _OpenLoop(
        rps=rps,
        duration=duration,
        concurrency_limit=concurrency_limit,
        send=send,
        on_second=on_second,
        stop=stop,
        clock=clock,
        sleep=sleep,
        drain_timeout=drain_timeout,
        stop_grace=stop_grace,
    )
    return await loop.run()


# ---------------------------------------------------------------------------------------------
# Source address


def source_candidates(networks: Iterable[str]) -> list[str]:
    """The first host address of each IPv4 network, in order: where a client of the site sits.

    IPv6 networks are skipped: the generator asks for A records and connects over IPv4.
    """
    candidates = []
    for text in networks:
        network = ip_network(text, strict=False)
        if isinstance(network, IPv4Network):
            candidates.append(str(next(iter(network.hosts()), network.network_address)))
    return candidates


def can_bind(address: str) -> bool:
    """Whether a UDP socket can bind ``address`` here (it is one of this machine's addresses;
    on Linux, all of 127.0.0.0/8 is)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def choose_source(
    networks: Iterable[str], *, bindable: Callable[[str], bool] = can_bind
) -> str | None:
    """The first of ``source_candidates(networks)`` that ``bindable`` accepts, else None
    (send from the default source: the fleet will not locate the client at the site)."""
    return next((a for a in source_candidates(networks) if bindable(a)), None)


# ---------------------------------------------------------------------------------------------
# DNS


class LoadError(Exception):
    """The run cannot start; the message says what is wrong and what to do."""


class NoDnsAnswer(Exception):
    """The edge DNS gave no address for the name (its message says why)."""


@dataclass(frozen=True)
class DnsAnswer:
    """What one DNS response says about the name."""

    addresses: tuple[str, ...]
    """A records in answer order (the edge DNS puts the nearest site first)."""
    ttl: int
    """Seconds the addresses may be used: the smallest TTL of the address records."""
    rcode: dns.rcode.Rcode
    """The response code (``NOERROR``, ``NXDOMAIN``...)."""


def read_answer(response: dns.message.Message) -> DnsAnswer:
    """The addresses and TTL in a response to an A query (no I/O)."""
    addresses: list[str] = []
    ttls: list[int] = []
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.A:
            addresses.extend(rdata.address for rdata in rrset)
            ttls.append(rrset.ttl)
    return DnsAnswer(tuple(addresses), min(ttls, default=0), response.rcode())


Query = Callable[[dns.message.Message], Awaitable[dns.message.Message]]


class EdgeResolver:
    """Resolves the app's name at one DNS server, as a stub resolver with a cache would.

    Answers are kept for their TTL; when it runs out, the next request asks again, and every
    request arriving meanwhile waits on that one query. An empty answer or NXDOMAIN is
    remembered for ``retry_after`` seconds, during which requests fail at once with
    ``NoDnsAnswer``. Silence (a timeout, a network error) is not an answer: the last addresses
    are served stale for up to ``serve_stale`` seconds more, asking again every ``retry_after``
    seconds (RFC 8767, as caching resolvers do), so a DNS server that dies between two TTLs costs
    latency, not failures; with no earlier answer, silence fails like an empty answer.
    """

    def __init__(
        self,
        *,
        name: str,
        server: str,
        port: int,
        source: str | None = None,
        timeout: float = 2.0,
        retry_after: float = NO_ANSWER_RETRY,
        serve_stale: float = SERVE_STALE,
        clock: Clock = time.monotonic,
        query: Query | None = None,
    ) -> None:
        self.name = name
        self.server = f"{server}:{port}"
        self._ask: Query = query or (
            lambda message: dns.asyncquery.udp(
                message, server, timeout=timeout, port=port, source=source
            )
        )
        self._timeout = timeout
        self._retry_after = retry_after
        self._serve_stale = serve_stale
        self._clock = clock
        self._addresses: tuple[str, ...] = ()
        self._fresh_until = -math.inf
        self._stale_until = -math.inf
        self._problem = ""
        self._pending: asyncio.Future[None] | None = None
        self.queries = 0
        """Queries sent."""
        self.last_answer: tuple[str, ...] = ()
        """Addresses of the last answer that had some."""
        self.problems: dict[str, int] = {}
        """Why answers were missing, with how many times."""
        self.stale = 0
        """Times the last answer was served stale because the server did not answer."""

    async def addresses(self) -> tuple[str, ...]:
        """The answered addresses, nearest first; raises ``NoDnsAnswer``."""
        if self._clock() >= self._fresh_until:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._refresh())
            # Shielded: a request that times out must not cancel the query the others wait on.
            await asyncio.shield(self._pending)
        if not self._addresses:
            raise NoDnsAnswer(self._problem)
        return self._addresses

    async def _refresh(self) -> None:
        try:
            self.queries += 1
            query = dns.message.make_query(self.name, dns.rdatatype.A)
            try:
                answer = read_answer(await self._ask(query))
            except (dns.exception.DNSException, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                problem = f"the edge DNS at {self.server} did not answer: {reason}"
                if self._addresses and self._clock() < self._stale_until:
                    self.stale += 1
                    self.problems[problem] = self.problems.get(problem, 0) + 1
                    self._fresh_until = self._clock() + self._retry_after
                    return
                self._fail(problem)
                return
            if answer.addresses:
                self._addresses = answer.addresses
                self.last_answer = answer.addresses
                self._fresh_until = self._clock() + answer.ttl
                self._stale_until = self._fresh_until + self._serve_stale
            elif answer.rcode == dns.rcode.NXDOMAIN:
                self._fail(
                    f"the edge DNS at {self.server} says {self.name} does not exist (NXDOMAIN): "
                    "the fleet knows no such app in that tenant"
                )
            else:
                rcode = dns.rcode.to_text(answer.rcode)
                detail = "no site serves it (NODATA)" if rcode == "NOERROR" else rcode
                self._fail(
                    f"the edge DNS at {self.server} has no address for {self.name}: {detail}"
                )
        finally:
            self._pending = None

    def _fail(self, problem: str) -> None:
        self._addresses = ()
        self._problem = problem
        self.problems[problem] = self.problems.get(problem, 0) + 1
        self._fresh_until = self._clock() + self._retry_after

    async def check(self) -> None:
        """Ask once before a run: raise ``LoadError`` when the name does not exist or the server
        does not answer (a run could only fail); an empty answer is fine (the app may be
        starting)."""
        with contextlib.suppress(NoDnsAnswer):
            await self.addresses()
        problem = self._problem if not self._addresses else ""
        if "NXDOMAIN" in problem:
            raise LoadError(f"{problem}; see `edgefleet get apps` for the apps and their tenants")
        if "did not answer" in problem:
            raise LoadError(f"{problem}; is the site's agent running? (`edgefleet get sites`)")


# ---------------------------------------------------------------------------------------------
# HTTP


BODY_KEPT = 4096
"""Bytes of a response body kept for ``served_by``; the rest is read and dropped."""
HEAD_MAX = 64 * 1024
"""Largest response head (status line and headers) accepted."""
IDLE_REUSE = 4.0
"""Seconds an idle connection may be reused; servers close idle ones (uvicorn after 5 s), and a
request sent just as the server closes would fail."""


@dataclass(frozen=True)
class HttpResponse:
    """The parts of a response the generator looks at."""

    status: int
    """Status code."""
    headers: tuple[tuple[str, str], ...]
    """Header fields in order, names in lower case."""
    body: bytes
    """The first ``BODY_KEPT`` bytes of the body."""

    def header(self, name: str) -> list[str]:
        """Every value of the header ``name`` (case-blind), in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key == wanted]


def parse_head(head: bytes) -> tuple[int, tuple[tuple[str, str], ...]]:
    """Status and header fields of a response head (RFC 9112 4, 5), which ends with CRLF CRLF.

    Raises ``ConnectionLost`` when it is not HTTP/1.x.
    """
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ConnectionLost(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ConnectionLost(f"not an HTTP header field: {line[:80]!r}")
        headers.append((name.lower(), value.strip()))
    return int(code), tuple(headers)


@dataclass(frozen=True)
class Framing:
    """How a response body is delimited (RFC 9112 6.3) and whether the connection stays."""

    kind: str
    """``none``, ``length``, ``chunked`` or ``close`` (the body runs until the server closes)."""
    length: int = 0
    """Body length, for ``length``."""
    reusable: bool = True
    """Whether the connection can carry the next request."""


def framing(status: int, headers: Sequence[tuple[str, str]], version_11: bool = True) -> Framing:
    """The framing of a response to a GET; raises ``ConnectionLost`` on a contradictory one."""
    connection = {
        token.strip().lower()
        for key, value in headers
        if key == "connection"
        for token in value.split(",")
    }
    reusable = "close" not in connection and (version_11 or "keep-alive" in connection)
    if 100 <= status < 200 or status in (204, 304):
        return Framing("none", reusable=reusable)
    encodings = [
        token.strip().lower()
        for key, value in headers
        if key == "transfer-encoding"
        for token in value.split(",")
    ]
    if encodings:
        if encodings[-1] != "chunked":
            return Framing("close", reusable=False)
        return Framing("chunked", reusable=reusable)
    lengths = {value.strip() for key, value in headers if key == "content-length"}
    if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
        raise ConnectionLost(f"bad Content-Length: {sorted(lengths)}")
    if lengths:
        return Framing("length", int(lengths.pop()), reusable=reusable)
    return Framing("close", reusable=False)


class _Connection:
    """One kept-alive connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0
        self.used = False

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """HTTP/1.1 GETs over kept-alive connections, all from one source address.

    A connection is reused for the next request to the same address and port, as browsers and
    HTTP libraries do; there is no limit of its own (the generator bounds the requests in
    flight, hence the connections busy). A request on a reused connection that the server had
    already closed is sent once more on a new one, as clients do for idempotent requests.
    """

    def __init__(
        self,
        *,
        source: str | None = None,
        max_idle: int = 1000,
        connect_timeout: float = CONNECT_TIMEOUT,
        clock: Clock = time.monotonic,
    ) -> None:
        self._source = source
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._clock = clock
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self.connections_opened = 0
        """Connections opened so far (a measure of reuse)."""

    async def _connect(self, address: str, port: int) -> _Connection:
        local = (self._source, 0) if self._source else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    address, port, local_addr=local, limit=HEAD_MAX
                )
        except TimeoutError as exc:
            raise ConnectFailed(
                f"{address}:{port}: no connection within {self._connect_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise ConnectFailed(f"{address}:{port}: {exc.strerror or exc}") from exc
        self.connections_opened += 1
        return _Connection(reader, writer)

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = self._clock()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            if now - connection.idle_since < IDLE_REUSE and not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    def _release(self, key: tuple[str, int], connection: _Connection, reusable: bool) -> None:
        self._busy.discard(connection)
        idle = self._idle.setdefault(key, [])
        if reusable and len(idle) < self._max_idle:
            connection.idle_since = self._clock()
            connection.used = True
            idle.append(connection)
        else:
            connection.close()

    async def get(self, address: str, port: int, target: str, host: str) -> HttpResponse:
        """``GET target`` with ``Host: host`` at ``address:port``; raises ``ConnectFailed``,
        ``ConnectionLost`` (the caller bounds the time, e.g. with ``asyncio.timeout``)."""
        key = (address, port)
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edgefleet-load\r\n"
            "Accept: */*\r\n\r\n"
        ).encode("latin-1")
        for attempt in range(2):
            connection = self._take_idle(key) if attempt == 0 else None
            reused = connection is not None
            if connection is None:
                connection = await self._connect(address, port)
            self._busy.add(connection)
            reusable = False
            try:
                connection.writer.write(request)
                try:
                    head = await connection.reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                    partial = getattr(exc, "partial", b"")
                    if reused and not partial:
                        continue  # closed by the server while idle: send again on a new one
                    raise ConnectionLost("the server closed the connection") from exc
                response, reusable = await self._response(connection.reader, head)
                return response
            except asyncio.IncompleteReadError as exc:
                raise ConnectionLost("the server closed the connection mid-response") from exc
            except asyncio.LimitOverrunError as exc:
                raise ConnectionLost(f"a response line is longer than {HEAD_MAX} bytes") from exc
            except OSError as exc:
                raise ConnectionLost(str(exc) or type(exc).__name__) from exc
            finally:
                self._release(key, connection, reusable)
        raise ConnectionLost("the server closed a fresh connection without answering")

    async def _response(
        self, reader: asyncio.StreamReader, head: bytes
    ) -> tuple[HttpResponse, bool]:
        status, headers = parse_head(head)
        while 100 <= status < 200:  # interim answers (RFC 9110 15.2): the real one follows
            status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
        how = framing(status, headers, version_11=head.startswith(b"HTTP/1.1"))
        body = await read_body(reader, how)
        return HttpResponse(status, headers, body), how.reusable

    async def close(self) -> None:
        """Close every connection, idle or busy."""
        everything = [c for idle in self._idle.values() for c in idle] + list(self._busy)
        self._idle.clear()
        self._busy.clear()
        for connection in everything:
            connection.close()
        for connection in everything:
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()


async def read_body(reader: asyncio.StreamReader, how: Framing) -> bytes:
    """Read a whole response body framed as ``how`` from ``reader``, leaving the stream at the
    next response; return its first ``BODY_KEPT`` bytes. Raises ``ConnectionLost`` on broken
    chunked framing and ``asyncio.IncompleteReadError`` when the stream ends early."""
    kept = bytearray()

    def keep(data: bytes) -> None:
        if len(kept) < BODY_KEPT:
            kept.extend(data[: BODY_KEPT - len(kept)])

    async def exactly(count: int) -> None:
        while count > 0:
            data = await reader.readexactly(min(count, 65536))
            keep(data)
            count -= len(data)

    if how.kind == "length":
        await exactly(how.length)
    elif how.kind == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ConnectionLost(f"bad chunk size: {size_text[:20]!r}") from None
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                break
            await exactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise ConnectionLost("a chunk does not end with CRLF")
    elif how.kind == "close":
        while data := await reader.read(65536):
            keep(data)
    return bytes(kept)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class LoadSpec:
    """What to send, where from, and where to ask: the options of ``edgefleet load``."""

    app: str
    """App name."""
    rps: float
    """Requests started per second."""
    dns_server: str
    """Address of the edge DNS to ask (the site's ``addresses.ip``)."""
    tenant: str = "demo"
    """The app's tenant."""
    duration: float | None = 10.0
    """Seconds to send for; None until stopped."""
    path: str = "/"
    """Path (and query) of every request."""
    work_ms: int | None = None
    """Service time to ask of the app (``?work=MS``, which the sample app honours); None: none."""
    concurrency_limit: int = 1000
    """Most requests in flight; requests due beyond it are dropped by the generator."""
    dns_port: int = 5353
    """Port of the edge DNS."""
    http_port: int = 8080
    """Port of the ingress at the answered addresses."""
    source_address: str | None = None
    """Source address for DNS and HTTP (inside the site's client networks); None: default."""
    timeout: float = 10.0
    """Seconds a request may take, connecting included."""
    dns_timeout: float = 2.0
    """Seconds to wait for the edge DNS."""
    connect_timeout: float = CONNECT_TIMEOUT
    """Seconds a TCP connection may take before the next answered address is tried."""
    failover: bool = True
    """Try the next answered address when a connection cannot be made (as browsers do)."""
    zone: str = ZONE
    """Zone the app names are in."""

    def __post_init__(self) -> None:
        if not self.rps > 0:
            raise ValueError(f"rps must be > 0, not {self.rps}")
        if self.duration is not None and not self.duration > 0:
            raise ValueError(f"duration must be > 0 seconds, not {self.duration}")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', not {self.path!r}")
        if self.work_ms is not None and self.work_ms < 0:
            raise ValueError(f"work must be >= 0 milliseconds, not {self.work_ms}")
        if self.concurrency_limit < 1:
            raise ValueError(f"concurrency limit must be >= 1, not {self.concurrency_limit}")
        if not (self.timeout > 0 and self.dns_timeout > 0 and self.connect_timeout > 0):
            raise ValueError("timeout, dns_timeout and connect_timeout must be > 0 seconds")
        for what, port in (("dns_port", self.dns_port), ("http_port", self.http_port)):
            if not 1 <= port <= 65535:
                raise ValueError(f"{what} must be 1 to 65535, not {port}")

    @property
    def name(self) -> str:
        """The DNS name and ``Host`` of the app: ``<app>.<tenant>.<zone>``."""
        return f"{self.app}.{self.tenant}.{self.zone}"

    @property
    def target(self) -> str:
        """Path and query of every request, ``work`` included."""
        if self.work_ms is None:
            return self.path
        return f"{self.path}{'&' if '?' in self.path else '?'}work={self.work_ms}"


async def get_first(pool: HttpPool, addresses: Sequence[str], spec: LoadSpec) -> HttpResponse:
    """GET from the first of ``addresses`` that takes the connection, in the order answered.

    Only a connection that could not be made moves on to the next address (nothing was sent,
    so any request may go elsewhere), as browsers and HTTP libraries do with several A records;
    a request that failed after it was sent is not sent again.
    """
    for address in addresses[:-1]:
        with contextlib.suppress(ConnectFailed):
            return await pool.get(address, spec.http_port, spec.target, spec.name)
    return await pool.get(addresses[-1], spec.http_port, spec.target, spec.name)


async def run_load(
    spec: LoadSpec,
    *,
    on_second: Callable[[Tick], None] | None = None,
    stop: asyncio.Event | None = None,
) -> LoadSummary:
    """Send ``spec.rps`` requests a second to ``spec.name`` as a client at ``spec.source_address``.

    Asks the edge DNS at ``spec.dns_server`` (honouring the TTL), sends each request to the first
    address answered, over kept-alive connections, and returns the summary; ``on_second`` gets a
    ``Tick`` every second. Raises ``LoadError`` before sending anything when the name does not
    exist or the DNS does not answer.
    """
    resolver = EdgeResolver(
        name=spec.name,
        server=spec.dns_server,
        port=spec.dns_port,
        source=spec.source_address,
        timeout=spec.dns_timeout,
    )
    await resolver.check()
    pool = HttpPool(
        source=spec.source_address,
        max_idle=spec.concurrency_limit,
        connect_timeout=spec.connect_timeout,
    )

    async def send() -> Result:
        try:
            async with asyncio.timeout(spec.timeout):
                addresses = await resolver.addresses()
                response = await get_first(
                    pool, addresses if spec.failover else addresses[:1], spec
                )
        except NoDnsAnswer:
            return Result(failure=NO_DNS_ANSWER)
        except (TimeoutError, ConnectFailed, ConnectionLost) as exc:
            return Result(failure=classify_exception(exc))
        site = served_by(
            response.header("via"), response.body, ",".join(response.header("content-type"))
        )
        return Result(failure=classify_status(response.status), site=site)

    try:
        summary = await run_open_loop(
            rps=spec.rps,
            duration=spec.duration,
            send=send,
            concurrency_limit=spec.concurrency_limit,
            on_second=on_second,
            stop=stop,
            drain_timeout=spec.timeout + 1.0,
        )
    finally:
        await pool.close()
    notes = tuple(f"{problem} ({count}x)" for problem, count in resolver.problems.items())
    return replace(
        summary,
        name=spec.name,
        source_address=spec.source_address,
        dns_server=resolver.server,
        dns_queries=resolver.queries,
        last_answer=resolver.last_answer,
        connections=pool.connections_opened,
        notes=summary.notes + notes,
    )
