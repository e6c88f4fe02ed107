"""Demand at the hub: decayed rates per app and origin site, what traffic placement reads.

Agents count, per window, the requests, busy seconds and DNS queries of every app by the site its
clients are nearest to (the origin), and send the counts as a ``DemandReport``. The hub keeps one
row per (tenant, app, origin): three exponentially weighted rates with time constant ``tau``, as
of the row's time. Readers decay a row to their own now; nothing has to tick in between.

The estimator is the continuous exponential moving average of a rate ``r``::

    R(t) = 1/tau * integral of r(s) * exp(-(t - s) / tau) ds, over s <= t

so with no new counts ``R(t) = R(t0) * exp(-(t - t0) / tau)``, and a window of ``count`` events
over ``W`` seconds ending at ``t`` adds ``count / W * (1 - exp(-W / tau))`` at ``t``. For a window
short against ``tau`` that is ``count / tau``; the exact form spreads the window's events over
the window, so a steady rate is estimated exactly at every window end instead of overshooting by
``W / (2 tau)``. Each window's counts are applied at its own end time, so windows absorbed out of
order (a report resent after an outage) give the same rates as in order.

Concurrency is the same estimator over busy seconds (Little's law: busy seconds per second are
the average number of requests in flight), DNS queries the same over queries.

``decayed``, ``window_rate`` and ``absorb`` are pure. ``DemandBuffer`` is the shell: the agent
route adds reports to it without I/O and a loop writes them to the store once a second, in one
transaction, as ``HeartbeatBuffer`` does for heartbeats.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from edgefleet.hub.batches import GroupCommit
from edgefleet.model import AppDemand, DemandReport, DemandRow
from edgefleet.routing.origins import MAX_NETWORKS, NETWORK_MARK, NetworkIndex, reported_network

if TYPE_CHECKING:
    from edgefleet.hub.store import DemandStore

log = logging.getLogger(__name__)

DemandKey = tuple[str, str, str]
"""(tenant, app, origin site): one row of the demand matrix."""

ORIGIN_MAX = 63
"""Longest origin site name (a DNS label, as site names are)."""

DEFAULT_TAU = 60.0
"""Seconds: the time constant of the decayed rates (a rate halves in ``tau * ln 2``)."""

PRUNE_EPSILON = 1e-3
"""Rates (per second, or requests in flight) below which a row counts as idle."""

PRUNE_RETENTION = timedelta(hours=24)
"""An idle row is kept this long after its last request, so placement still sees the app was
used here (``last_request``) when it decides whether to keep a site at zero."""


def _aware(value: datetime) -> datetime:
    # Reports and SQLite may carry naive datetimes; everything here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def decayed(rate: float, since: datetime, now: datetime, tau: float) -> float:
    """``rate`` as of ``since``, decayed to ``now`` (``now`` before ``since``: unchanged).

    A rate never grows by going back in time: a reader whose clock is behind the writer's sees
    the rate as written.
    """
    elapsed = (now - since).total_seconds()
    if elapsed <= 0:
        return rate
    return rate * math.exp(-elapsed / tau)


def window_rate(count: float, seconds: float, tau: float) -> float:
    """What a window of ``count`` events over ``seconds`` adds to the rate at the window's end."""
    return count / seconds * -math.expm1(-seconds / tau)


def window_end(report: DemandReport, *, latest: datetime | None = None) -> datetime:
    """When a report's counts are applied: the end of its window, but not after ``latest``.

    ``latest`` is the hub's time when it takes the report: an agent whose clock runs ahead of the
    hub's cannot put demand in the future.
    """
    end = _aware(report.window_start) + timedelta(seconds=report.window_seconds)
    if latest is not None and end > latest:
        return latest
    return end


@dataclass(frozen=True)
class DemandState:
    """The decayed demand for one app from one origin site, as of ``at``."""

    requests: float
    """Requests per second."""
    concurrency: float
    """Average requests in flight (busy seconds per second)."""
    dns: float
    """DNS queries per second."""
    at: datetime
    """When these rates hold; they decay from here."""
    last_request: datetime | None = None
    """End of the newest window with requests, None if there never was one."""

    def decayed_to(self, now: datetime, tau: float) -> DemandState:
        """The same demand as of ``now`` (no earlier than ``at``)."""
        at = max(self.at, now)
        return DemandState(
            requests=decayed(self.requests, self.at, at, tau),
            concurrency=decayed(self.concurrency, self.at, at, tau),
            dns=decayed(self.dns, self.at, at, tau),
            at=at,
            last_request=self.last_request,
        )

    def idle(self, epsilon: float = PRUNE_EPSILON) -> bool:
        """Whether every rate is below ``epsilon``."""
        return max(self.requests, self.concurrency, self.dns) < epsilon

    def app_demand(self, origin: str) -> AppDemand:
        """The API object for this state (decay it first)."""
        return AppDemand(
            origin=origin,
            requests_per_second=self.requests,
            concurrency=self.concurrency,
            dns_per_second=self.dns,
            last_request=self.last_request,
        )


def absorb(
    row: DemandRow,
    report: DemandReport,
    previous: DemandState | None,
    tau: float,
    *,
    latest: datetime | None = None,
) -> DemandState:
    """``previous`` (None: no demand yet) with one report row's counts added.

    The counts are applied at the window's end (``window_end``); the result holds as of the
    later of that end and ``previous.at``, so absorbing windows in any order gives the same
    rates (up to float rounding).
    """
    _key, _origin, requests, busy, queries = row
    end = window_end(report, latest=latest)
    seconds = report.window_seconds
    at = end if previous is None or previous.at < end else previous.at

    def rate(old: float, count: float) -> float:
        added = decayed(window_rate(count, seconds, tau), end, at, tau)
        return added if previous is None else decayed(old, previous.at, at, tau) + added

    last = previous.last_request if previous is not None else None
    if requests > 0 and (last is None or last < end):
        last = end
    return DemandState(
        requests=rate(previous.requests if previous else 0.0, requests),
        concurrency=rate(previous.concurrency if previous else 0.0, busy),
        dns=rate(previous.dns if previous else 0.0, queries),
        at=at,
        last_request=last,
    )


def place_origins(report: DemandReport, networks: NetworkIndex) -> DemandReport:
    """``report`` with each client network its site could not place (``~198.51.100.0/24``)
    replaced by the site whose networks hold it, or by the reporting site when none does;
    rows that come to name one origin are summed. ValueError, saying where, for a report with
    more client networks of one app than a site counts (``MAX_NETWORKS``): each costs a lookup
    here, on the hub's loop."""
    if not any(origin.startswith(NETWORK_MARK) for _, origin, *_ in report.rows):
        return report
    per_app = Counter(key for key, origin, *_ in report.rows if origin.startswith(NETWORK_MARK))
    for key, count in per_app.items():
        if count > MAX_NETWORKS + 1:
            raise ValueError(
                f"{count} client networks for {key}; a site reports at most {MAX_NETWORKS} "
                "(and the rest as one unplaced origin)"
            )
    summed: dict[tuple[str, str], tuple[int, float, int]] = {}
    for key, origin, requests, busy, queries in report.rows:
        if origin.startswith(NETWORK_MARK):
            network = reported_network(origin)
            origin = (networks.locate(network) if network is not None else None) or report.site
        n, b, q = summed.get((key, origin), (0, 0.0, 0))
        summed[(key, origin)] = (n + requests, b + busy, q + queries)
    rows = [(key, origin, *counts) for (key, origin), counts in summed.items()]
    return report.model_copy(update={"rows": rows})


class DemandBuffer:
    """Collects demand reports in memory; a loop writes them in one transaction per period.

    Ten thousand agents reporting every ten seconds are a thousand reports a second: batched,
    they are one transaction a second. Each hub process buffers the reports it receives and
    writes them itself; ``DemandStore.record`` is safe against another hub's concurrent write
    and ignores a report already taken (its ``seq``), so an agent may resend freely.

    ``submit`` is a group commit: the report joins the next batch and the call returns once that
    batch is written, so an agent is told "taken" only when a crash of this hub can no longer
    lose the report. ``add`` only buffers (a report added so is lost if the hub dies first).
    """

    def __init__(
        self,
        store: DemandStore,
        *,
        tau: float = DEFAULT_TAU,
        period: float = 1.0,
        limit: int = 50_000,
        prune_every: float = 600.0,
    ) -> None:
        if tau <= 0:
            raise ValueError(f"demand tau must be > 0 seconds, not {tau}")
        self._store = store
        self.tau = tau
        """Time constant of the decayed rates, seconds."""
        self._period = period
        self._prune_every = prune_every
        self._commit: GroupCommit[DemandReport, int] = GroupCommit(
            self._record, what="demand reports", period=period, limit=limit
        )

    def _record(self, batch: Sequence[DemandReport]) -> int:
        return self._store.record(list(batch), self.tau)

    @property
    def pending(self) -> int:
        """Reports received and not yet written."""
        return self._commit.pending

    def add(self, report: DemandReport) -> bool:
        """Take a report (no I/O); False when ``limit`` reports already wait (store away).

        Refusing beats dropping: the agent keeps a refused report queued and sends it again.
        """
        return self._commit.add(report)

    async def submit(self, report: DemandReport) -> bool:
        """Take a report and return once it is written: True; False when the buffer is full or
        the write failed (the sender keeps the report and sends it again)."""
        return await self._commit.submit(report)

    async def flush(self) -> int:
        """Write what has been collected; returns the reports taken (resends not counted).

        When the write fails, reports that a sender waits for are given back to their senders
        (``submit`` returns False; they resend), the others are kept for the next flush.
        """
        return await self._commit.flush() or 0

    async def prune(self) -> int:
        """Delete rows idle for longer than the retention; returns how many."""
        try:
            return await asyncio.to_thread(self._store.prune, datetime.now(UTC), tau=self.tau)
        except Exception:
            log.exception("demand prune failed")
            return 0

    async def run(self) -> None:
        """Flush every period; prune every ``prune_every`` seconds."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + self._prune_every
        while True:
            await asyncio.sleep(self._period)
            await self.flush()
            if loop.time() >= next_prune:
                next_prune = loop.time() + self._prune_every
                await self.prune()


__all__ = [
    "DEFAULT_TAU",
    "ORIGIN_MAX",
    "PRUNE_EPSILON",
    "PRUNE_RETENTION",
    "DemandBuffer",
    "DemandKey",
    "DemandState",
    "absorb",
    "decayed",
    "window_end",
    "window_rate",
]
