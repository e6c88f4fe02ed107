"""Demand at a site: requests and DNS queries per app and origin site, reported per window.

The ingress calls ``DemandCounter.request`` once per request it served (on the event loop); the
edge DNS counts queries per question name in a tally that ``drain_dns_tally`` moves into the
counter once per window, with this site as the origin (a client asks the edge DNS nearest to
it). ``DemandReporter`` closes a window every ``window`` seconds and sends its counts to the
hub as a ``DemandReport``.

Reports survive the hub being away and the agent restarting: a report the hub has not taken
stays queued (at most ``max_pending``, the oldest dropped first) and is sent again, in order,
with the same ``seq``; the queue is written to ``state_dir/demand-pending.json`` after a failed
send and at exit, and read back at start. The hub ignores a ``seq`` it has taken, so a report
sent twice counts once. Sequence numbers are reserved in blocks recorded in the same file, so a
restarted agent never reuses one, at one file write per block instead of one per report. An
agent without the file (first start, new disk) starts from the clock in milliseconds, above any
number an earlier agent of the site could have used, so the hub does not ignore its reports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from edgefleet.agent.cache import ModelCache
from edgefleet.agent.hubclient import HubClient, HubUnreachable
from edgefleet.agent.ingress import ZONE, parse_app_host
from edgefleet.model import DemandReport, DemandRow
from edgefleet.routing.origins import MAX_NETWORKS, NETWORK_MARK

log = logging.getLogger(__name__)

PENDING_FILE = "demand-pending.json"
"""The queue of unsent reports and the sequence reservation, under the agent's state_dir."""

MAX_WINDOW = 3600.0
"""The longest window a report may cover (``DemandReport.window_seconds``)."""

_MIN_WINDOW = 0.001
_NOT_TENANTS = frozenset({"ns", "sites"})
"""Names the fleet zone keeps for itself: ``<site>.sites.<zone>`` is a site, not an app."""
_REJECTED = frozenset({400, 413, 422})
"""Statuses that say the report itself is wrong: sending it again cannot help."""


class _Counts:
    """One app's counts from one origin in the current window."""

    __slots__ = ("busy", "queries", "requests")

    def __init__(self, requests: int = 0, busy: float = 0.0, queries: int = 0) -> None:
        self.requests = requests
        self.busy = busy
        self.queries = queries


@dataclass(frozen=True)
class DemandWindow:
    """The counts of one closed window."""

    start: float
    """Start of the window, seconds since the epoch."""
    end: float
    """End of the window, seconds since the epoch."""
    rows: tuple[DemandRow, ...]
    """``(tenant/app, origin, requests, busy seconds, DNS queries)``, by app and origin."""


class DemandCounter:
    """Requests, busy seconds and DNS queries per app and origin site, in the current window.

    Thread-safe; one call costs a lock and, for the first count of an app and origin in a
    window, one dict entry. ``take`` swaps the window's dicts for empty ones.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._window: dict[str, dict[str, _Counts]] = {}
        self._start = clock()
        self._last_request: dict[str, float] = {}

    @property
    def window_start(self) -> float:
        """When the current window started, seconds since the epoch."""
        return self._start

    def request(self, key: str, origin: str, seconds: float) -> None:
        """Count one request for ``key`` (``tenant/app``) from ``origin`` that took ``seconds``."""
        now = self._clock()
        seconds = max(seconds, 0.0)
        with self._lock:
            by_origin = self._window.get(key)
            if by_origin is None:
                by_origin = self._window[key] = {}
            counts = by_origin.get(origin)
            if (
                counts is None
                and origin.startswith(NETWORK_MARK)
                and len(by_origin) >= MAX_NETWORKS
            ):
                origin = NETWORK_MARK
                counts = by_origin.get(origin)
            if counts is None:
                by_origin[origin] = _Counts(1, seconds)
            else:
                counts.requests += 1
                counts.busy += seconds
            self._last_request[key] = now

    def dns(self, key: str, origin: str, count: int = 1) -> None:
        """Count ``count`` DNS queries for ``key`` from clients nearest ``origin``."""
        if count <= 0:
            return
        with self._lock:
            by_origin = self._window.get(key)
            if by_origin is None:
                by_origin = self._window[key] = {}
            counts = by_origin.get(origin)
            if counts is None:
                by_origin[origin] = _Counts(queries=count)
            else:
                counts.queries += count

    def last_request(self, key: str) -> float | None:
        """When the last request for ``key`` was counted (seconds since the epoch), or None."""
        return self._last_request.get(key)

    def last_requests(self) -> dict[str, float]:
        """When the last request was counted, per app key."""
        with self._lock:
            return dict(self._last_request)

    def take(self, now: float) -> DemandWindow:
        """Close the current window at ``now`` and return its counts; a new window starts."""
        with self._lock:
            window, self._window = self._window, {}
            start, self._start = self._start, now
        rows = [
            (key, origin, counts.requests, counts.busy, counts.queries)
            for key, by_origin in window.items()
            for origin, counts in by_origin.items()
            if key.count("/") == 1 and origin
        ]
        rows.sort()
        return DemandWindow(start=start, end=now, rows=tuple(rows))


def app_key(name: bytes, zone: str = ZONE) -> str | None:
    """``tenant/app`` of a question name (wire format) ``<app>.<tenant>.<zone>``, or None."""
    labels = []
    at = 0
    try:
        while name[at]:
            length = name[at]
            labels.append(name[at + 1 : at + 1 + length].decode("ascii"))
            at += 1 + length
    except (IndexError, UnicodeDecodeError):
        return None
    target = parse_app_host(".".join(labels), zone)
    if target is None or target[0] in _NOT_TENANTS:
        return None
    return f"{target[0]}/{target[1]}"


def drain_dns_tally(tally: Counter[bytes], counter: DemandCounter, site: str) -> int:
    """Move the edge DNS's query counts into ``counter`` as demand from ``site``.

    Names that are not apps (the apex, sites, unknown names) are dropped. Each name's count is
    taken with ``pop``, so the responder may keep counting in another thread meanwhile (see
    ``edgefleet.dns.responder``). Returns the queries counted for apps.
    """
    by_key: dict[str, int] = {}
    for name in tuple(tally):
        count = tally.pop(name, 0)
        key = app_key(name) if count > 0 else None
        if key is not None:
            by_key[key] = by_key.get(key, 0) + count
    for key, count in by_key.items():
        counter.dns(key, site, count)
    return sum(by_key.values())


class PendingDemand(BaseModel):
    """What ``demand-pending.json`` holds."""

    next_seq: int = Field(ge=0, description="No report was sent with a seq from here on.")
    reports: list[DemandReport] = Field(
        default_factory=list, description="Reports not yet taken by the hub, oldest first."
    )


class _PendingFile(ModelCache[PendingDemand]):
    model = PendingDemand


class DemandReporter:
    """Every ``window`` seconds, sends the closed window's demand to the hub.

    Empty windows are not sent, and use no sequence number. A report the hub does not take
    (unreachable, 5xx, 404 for a site it does not know yet) stays queued and is sent again, in
    order, after the next window; one it rejects as invalid (400, 413, 422) is dropped.
    """

    def __init__(
        self,
        site: str,
        counter: DemandCounter,
        hub: HubClient,
        state_dir: Path,
        *,
        window: float = 10.0,
        dns_tally: Counter[bytes] | None = None,
        clock: Callable[[], float] = time.time,
        max_pending: int = 360,
        seq_block: int = 360,
    ) -> None:
        """``hub`` is the site's client of the hub."""
        if window <= 0 or window > MAX_WINDOW:
            raise ValueError(f"demand window must be within (0, {MAX_WINDOW:.0f}] s, not {window}")
        self.site = site
        self.counter = counter
        self.window = window
        self._hub = hub
        self._tally = dns_tally
        self._clock = clock
        self._max_pending = max_pending
        self._seq_block = seq_block
        self._path = f"/api/v1/agent/sites/{site}/demand"
        self._file = _PendingFile(state_dir / PENDING_FILE)
        # One writer at a time, newest state last: a write in a thread may still be under way
        # when ``close`` writes.
        self._file_lock = threading.Lock()
        self._states = 0
        self._written = 0
        saved = self._file.load()
        self._pending: deque[DemandReport] = deque()
        if saved is not None:
            self._next_seq = saved.next_seq
            self._pending.extend(r for r in saved.reports[-max_pending:] if r.site == site)
            if self._pending:
                log.info("%d demand reports from before the restart to send", len(self._pending))
        else:
            self._next_seq = int(clock() * 1000)
        # Every number below this may have been used: reserve a block before using one.
        self._reserved = self._next_seq
        self._saved_reports = bool(self._pending)
        self._failing = False
        self.sent = 0
        """Reports the hub took since start."""
        self.dropped = 0
        """Reports dropped because the queue was full or the hub rejected them."""

    @property
    def pending(self) -> list[DemandReport]:
        """Reports waiting to be sent, oldest first."""
        return list(self._pending)

    async def flush_once(self, now: float | None = None) -> int:
        """Close the window at ``now``, queue its report if it counted anything, and send the
        queue in order until the hub fails; returns how many reports the hub took."""
        window = self._take(self._clock() if now is None else now)
        if window is not None:
            if self._next_seq >= self._reserved:
                self._reserved = self._next_seq + self._seq_block
                await self._persist()
            self._queue(self._report(window))
        return await self._send_pending()

    async def run(self) -> None:
        """Report every ``window`` seconds until cancelled; then keep the last, partial window
        and the queue on disk for the next start."""
        try:
            while True:
                due = self.counter.window_start + self.window
                await asyncio.sleep(max(0.0, due - self._clock()))
                try:
                    await self.flush_once()
                except Exception:  # a bug here must not end demand reporting
                    log.exception("demand report failed")
        finally:
            self.close()

    def close(self) -> None:
        """Queue the current window's counts and write the queue to disk (no network)."""
        window = self._take(self._clock())
        if window is not None:
            self._reserved = max(self._reserved, self._next_seq + 1)
            self._queue(self._report(window))
        if self._pending or self._saved_reports:
            self._write(self._state())

    # -- inside ----------------------------------------------------------------------------------

    def _take(self, now: float) -> DemandWindow | None:
        if self._tally is not None:
            drain_dns_tally(self._tally, self.counter, self.site)
        window = self.counter.take(now)
        return window if window.rows else None

    def _report(self, window: DemandWindow) -> DemandReport:
        seconds = min(max(window.end - window.start, _MIN_WINDOW), MAX_WINDOW)
        seq = self._next_seq
        self._next_seq += 1
        return DemandReport(
            site=self.site,
            seq=seq,
            window_start=datetime.fromtimestamp(window.end - seconds, UTC),
            window_seconds=seconds,
            rows=list(window.rows),
        )

    def _queue(self, report: DemandReport) -> None:
        self._pending.append(report)
        if len(self._pending) > self._max_pending:
            self._pending.popleft()
            self.dropped += 1
            log.warning(
                "demand queue full (%d reports): dropped the oldest; %d dropped since start",
                self._max_pending,
                self.dropped,
            )

    async def _send_pending(self) -> int:
        sent = 0
        while self._pending:
            report = self._pending[0]
            try:
                reply = await self._hub.post(
                    self._path, report.model_dump_json(by_alias=True).encode()
                )
            except HubUnreachable as exc:
                await self._failed(str(exc) or type(exc).__name__)
                return sent
            if reply.status in _REJECTED:
                self._pending.popleft()
                self.dropped += 1
                log.error(
                    "hub rejected demand report %d (HTTP %d: %s); dropped it",
                    report.seq,
                    reply.status,
                    reply.text[:200],
                )
                continue
            if reply.status >= 400:
                await self._failed(f"HTTP {reply.status}: {reply.text[:200]}")
                return sent
            self._pending.popleft()
            sent += 1
            self.sent += 1
        if self._failing:
            log.info("demand reports reach the hub again")
            self._failing = False
        if self._saved_reports:
            # The file still lists reports the hub has taken since: a restart would send them
            # again (harmless, the hub ignores them, but wasted).
            await self._persist()
        return sent

    async def _failed(self, reason: str) -> None:
        if not self._failing:
            log.warning(
                "demand report not sent (%s); %d queued, sent again after the next window",
                reason,
                len(self._pending),
            )
        self._failing = True
        await self._persist()

    def _state(self) -> tuple[int, PendingDemand]:
        self._states += 1
        return self._states, PendingDemand(next_seq=self._reserved, reports=list(self._pending))

    async def _persist(self) -> None:
        await asyncio.to_thread(self._write, self._state())

    def _write(self, numbered: tuple[int, PendingDemand]) -> None:
        number, state = numbered
        try:
            with self._file_lock:
                if number < self._written:
                    return  # a newer state is on disk already (written by ``close``)
                self._file.save(state)
                self._written = number
        except OSError as exc:
            # Reporting goes on; only what a restart would need is at risk.
            log.error("cannot write %s: %s", self._file.path, exc)
            return
        self._saved_reports = bool(state.reports)


__all__ = [
    "PENDING_FILE",
    "DemandCounter",
    "DemandReporter",
    "DemandWindow",
    "PendingDemand",
    "app_key",
    "drain_dns_tally",
]
