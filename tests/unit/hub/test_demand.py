"""The hub's demand estimator (pure decay math) and the buffer in front of the store."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub.demand import (
    DemandBuffer,
    DemandState,
    absorb,
    decayed,
    place_origins,
    window_end,
    window_rate,
)
from edgefleet.hub.store import DemandStore
from edgefleet.model import DemandReport, DemandRow
from edgefleet.routing.origins import MAX_NETWORKS, NetworkIndex

T0 = datetime(2026, 1, 1, tzinfo=UTC)

rates = st.floats(min_value=0.01, max_value=1e5)
taus = st.floats(min_value=1.0, max_value=3600.0)
windows = st.floats(min_value=0.5, max_value=120.0)


def report(
    *, end: datetime, seconds: float, rows: Sequence[DemandRow], seq: int = 1, site: str = "paris"
) -> DemandReport:
    return DemandReport(
        site=site,
        seq=seq,
        window_start=end - timedelta(seconds=seconds),
        window_seconds=seconds,
        rows=list(rows),
    )


def steady(
    rate: float, window: float, tau: float, count: int, *, busy: float = 0.0
) -> DemandState | None:
    """``count`` windows of a steady request rate, absorbed in order."""
    state: DemandState | None = None
    for k in range(1, count + 1):
        r = report(
            end=T0 + timedelta(seconds=k * window),
            seconds=window,
            rows=[("demo/hello", "paris", round(rate * window), busy * window, 0)],
            seq=k,
        )
        state = absorb(r.rows[0], r, state, tau)
    return state


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


@given(rate=rates, window=windows, tau=taus)
def test_a_steady_rate_converges_to_itself(rate: float, window: float, tau: float) -> None:
    # Integer counts per window: the rate actually sent.
    count = max(1, round(rate * window))
    sent = count / window
    n = math.ceil(30 * tau / window)  # 30 time constants: e^-30 is below float noise
    state = steady(sent, window, tau, min(n, 20_000), busy=2.5)
    assert state is not None
    if n <= 20_000:
        assert close(state.requests, sent, rel=1e-6)
        assert close(state.concurrency, 2.5, rel=1e-6)
    # At every window end the estimate is exactly r * (1 - e^(-elapsed / tau)): no overshoot.
    elapsed = min(n, 20_000) * window
    assert close(state.requests, sent * -math.expm1(-elapsed / tau), rel=1e-6)
    # (Window ends are whole microseconds: allow that much rounding.)
    assert state.requests <= sent * (1 + 1e-6)


@given(rate=rates, tau=taus)
def test_a_rate_halves_after_tau_ln2(rate: float, tau: float) -> None:
    later = T0 + timedelta(seconds=tau * math.log(2))
    assert close(decayed(rate, T0, later, tau), rate / 2, rel=1e-6)
    state = DemandState(requests=rate, concurrency=rate / 3, dns=0.0, at=T0)
    half = state.decayed_to(later, tau)
    assert close(half.requests, rate / 2, rel=1e-6)
    assert close(half.concurrency, rate / 6, rel=1e-6)
    assert half.at == later


@given(rate=rates, tau=taus, back=st.floats(min_value=0.0, max_value=1e6))
def test_a_rate_never_grows_back_in_time(rate: float, tau: float, back: float) -> None:
    assert decayed(rate, T0, T0 - timedelta(seconds=back), tau) == rate
    state = DemandState(requests=rate, concurrency=0.0, dns=0.0, at=T0)
    assert state.decayed_to(T0 - timedelta(seconds=back), tau) == state


@given(
    first=st.tuples(st.integers(0, 10_000), st.floats(0, 1e4), st.integers(0, 10_000), windows),
    second=st.tuples(st.integers(0, 10_000), st.floats(0, 1e4), st.integers(0, 10_000), windows),
    gap=st.floats(min_value=-600.0, max_value=600.0),
    tau=taus,
    prior=st.none() | st.floats(min_value=0.0, max_value=1e4),
)
def test_the_order_of_absorption_does_not_matter(
    first: tuple[int, float, int, float],
    second: tuple[int, float, int, float],
    gap: float,
    tau: float,
    prior: float | None,
) -> None:
    (r1, b1, q1, w1), (r2, b2, q2, w2) = first, second
    one = report(end=T0, seconds=w1, rows=[("demo/hello", "paris", r1, b1, q1)], seq=1)
    two = report(
        end=T0 + timedelta(seconds=gap), seconds=w2, rows=[("demo/hello", "paris", r2, b2, q2)]
    )
    start = (
        None
        if prior is None
        else DemandState(prior, prior, prior, T0 - timedelta(seconds=700), None)
    )
    ab = absorb(two.rows[0], two, absorb(one.rows[0], one, start, tau), tau)
    ba = absorb(one.rows[0], one, absorb(two.rows[0], two, start, tau), tau)
    assert ab.at == ba.at == max(T0, T0 + timedelta(seconds=gap))
    for a, b in ((ab.requests, ba.requests), (ab.concurrency, ba.concurrency), (ab.dns, ba.dns)):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    assert ab.last_request == ba.last_request


def test_a_short_window_adds_count_over_tau() -> None:
    # The classic EWMA step, which the exact form approaches for windows short against tau.
    assert math.isclose(window_rate(60, 0.01, 60.0), 1.0, rel_tol=1e-4)
    # A window of 10 s at tau 60 s: 600 requests add 60/s * (1 - e^-1/6).
    assert math.isclose(window_rate(600, 10.0, 60.0), 60 * (1 - math.exp(-1 / 6)))


def test_last_request_is_the_newest_window_with_requests() -> None:
    dns_only = report(end=T0, seconds=10, rows=[("demo/hello", "paris", 0, 0.0, 5)])
    state = absorb(dns_only.rows[0], dns_only, None, 60.0)
    assert state.last_request is None and state.dns > 0 and state.requests == 0
    later = T0 + timedelta(seconds=30)
    busy = report(end=later, seconds=10, rows=[("demo/hello", "paris", 3, 0.5, 0)])
    state = absorb(busy.rows[0], busy, state, 60.0)
    assert state.last_request == later
    # An older window with requests, absorbed late, does not move it back.
    old = report(end=T0, seconds=10, rows=[("demo/hello", "paris", 1, 0.1, 0)])
    assert absorb(old.rows[0], old, state, 60.0).last_request == later


def test_counts_are_not_applied_after_the_hubs_now() -> None:
    ahead = report(end=T0 + timedelta(hours=1), seconds=10, rows=[("demo/hello", "paris", 1, 0, 0)])
    assert window_end(ahead, latest=T0) == T0
    assert window_end(ahead) == T0 + timedelta(hours=1)
    state = absorb(ahead.rows[0], ahead, None, 60.0, latest=T0)
    assert state.at == T0 and state.last_request == T0
    # A naive window start is UTC.
    naive = ahead.model_copy(update={"window_start": datetime(2026, 1, 1, 0, 0, 0)})
    assert window_end(naive) == T0 + timedelta(seconds=10)


class FakeStore:
    """Records what the buffer writes; fails while ``down``."""

    def __init__(self) -> None:
        self.batches: list[list[DemandReport]] = []
        self.taus: list[float] = []
        self.down = False

    def record(self, reports: Sequence[DemandReport], tau: float) -> int:
        if self.down:
            raise ConnectionError("database away")
        self.batches.append(list(reports))
        self.taus.append(tau)
        return len(reports)


def test_the_buffer_writes_one_batch_and_keeps_it_while_the_store_fails() -> None:
    fake = FakeStore()
    buffer = DemandBuffer(cast(DemandStore, fake), tau=30.0, limit=3)
    reports = [
        report(end=T0, seconds=10, rows=[("demo/hello", "paris", 1, 0, 0)], seq=k) for k in range(4)
    ]
    assert all(buffer.add(r) for r in reports[:2])
    fake.down = True
    assert asyncio.run(buffer.flush()) == 0
    assert buffer.pending == 2 and fake.batches == []
    assert buffer.add(reports[2])
    assert not buffer.add(reports[3])  # full: the route answers 503, the agent keeps it
    fake.down = False
    assert asyncio.run(buffer.flush()) == 3
    assert [r.seq for r in fake.batches[0]] == [0, 1, 2]  # kept in arrival order
    assert fake.taus == [30.0] and buffer.pending == 0
    assert asyncio.run(buffer.flush()) == 0 and len(fake.batches) == 1  # nothing: no write


def test_submit_answers_only_once_the_batch_is_written() -> None:
    fake = FakeStore()
    buffer = DemandBuffer(cast(DemandStore, fake), tau=30.0, limit=10)
    reports = [
        report(end=T0, seconds=10, rows=[("demo/hello", "paris", 1, 0, 0)], seq=k) for k in range(3)
    ]

    async def go() -> tuple[list[bool], list[bool]]:
        first = [asyncio.ensure_future(buffer.submit(r)) for r in reports[:2]]
        await asyncio.sleep(0)
        assert not any(f.done() for f in first)  # buffered, not written: nothing answered yet
        assert fake.batches == []
        await buffer.flush()
        answered = [await f for f in first]
        fake.down = True
        failing = asyncio.ensure_future(buffer.submit(reports[2]))
        await asyncio.sleep(0)
        await buffer.flush()
        return answered, [await failing]

    taken, refused = asyncio.run(go())
    assert taken == [True, True] and [r.seq for r in fake.batches[0]] == [0, 1]
    # A write that failed is answered "not taken" (the agent resends it), not kept twice.
    assert refused == [False] and buffer.pending == 0


def test_tau_must_be_positive() -> None:
    with pytest.raises(ValueError, match="tau"):
        DemandBuffer(cast(DemandStore, FakeStore()), tau=0.0)


def test_client_networks_are_placed_at_the_site_that_holds_them() -> None:
    networks = NetworkIndex()
    networks.put("new-york", ["100.64.3.0/24"])
    networks.put("paris", ["100.64.1.0/24"])
    report = DemandReport(
        site="london",
        seq=1,
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_seconds=10,
        rows=[
            ("demo/hello", "london", 5, 0.5, 1),
            # Clients of new-york, seen from two of its networks' addresses: one row.
            ("demo/hello", "~100.64.3.0/24", 7, 0.7, 0),
            ("demo/hello", "new-york", 1, 0.1, 0),
            # Nobody's network, and a malformed one: london's own, as before.
            ("demo/hello", "~192.0.2.0/24", 2, 0.2, 0),
            ("demo/hello", "~", 1, 0.1, 0),
        ],
    )
    placed = place_origins(report, networks)
    rows = {(key, origin): (n, round(busy, 3), q) for key, origin, n, busy, q in placed.rows}
    assert rows == {
        ("demo/hello", "london"): (8, 0.8, 1),
        ("demo/hello", "new-york"): (8, 0.8, 0),
    }
    # A report with site names only is left as it is.
    plain = report.model_copy(update={"rows": [("demo/hello", "paris", 1, 0.1, 0)]})
    assert place_origins(plain, networks) is plain


def test_a_report_with_more_client_networks_than_a_site_counts_is_refused() -> None:
    rows: list[DemandRow] = [
        ("demo/hello", f"~10.{i // 256}.{i % 256}.0/24", 1, 0.0, 0) for i in range(MAX_NETWORKS + 2)
    ]
    report = DemandReport(
        site="london",
        seq=1,
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_seconds=10,
        rows=rows,
    )
    with pytest.raises(ValueError, match=f"a site reports at most {MAX_NETWORKS}"):
        place_origins(report, NetworkIndex())
    # As many as a site sends (its networks and one unplaced origin) are taken.
    taken = report.model_copy(update={"rows": rows[: MAX_NETWORKS + 1]})
    assert place_origins(taken, NetworkIndex()).rows == [("demo/hello", "london", 257, 0.0, 0)]
