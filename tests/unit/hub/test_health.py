"""Site health verdicts from heartbeat times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub.health import (
    DETECT_WITHIN,
    GRACE_BEATS,
    HEARTBEAT_CEILING,
    PASS_SLACK,
    heartbeat_grace,
    heartbeat_interval,
    site_phase,
)
from edgefleet.model import SitePhase

NOW = datetime(2026, 1, 1, tzinfo=UTC)
GRACE = timedelta(seconds=6)


def test_never_heard_from_is_pending() -> None:
    assert site_phase(last_heartbeat=None, now=NOW, grace=GRACE)[0] == SitePhase.PENDING


def test_recent_is_ready_and_silent_is_unreachable() -> None:
    recent = site_phase(last_heartbeat=NOW - timedelta(seconds=2), now=NOW, grace=GRACE)
    assert recent == (SitePhase.READY, None)
    phase, why = site_phase(last_heartbeat=NOW - timedelta(seconds=30), now=NOW, grace=GRACE)
    assert phase == SitePhase.UNREACHABLE
    assert why == "no heartbeat for 30s"


@given(st.floats(min_value=0, max_value=3600, allow_nan=False))
def test_verdict_is_monotonic_in_silence(silence: float) -> None:
    phase, _ = site_phase(last_heartbeat=NOW - timedelta(seconds=silence), now=NOW, grace=GRACE)
    expected = SitePhase.UNREACHABLE if silence > GRACE.total_seconds() else SitePhase.READY
    assert phase == expected


def test_a_site_never_heard_from_stops_holding_replicas_after_a_while() -> None:
    created = NOW - GRACE * 5
    assert site_phase(last_heartbeat=None, now=NOW, grace=GRACE, created=created)[0] == (
        SitePhase.PENDING
    )
    long_ago = NOW - GRACE * 11
    phase, why = site_phase(last_heartbeat=None, now=NOW, grace=GRACE, created=long_ago)
    assert phase == SitePhase.UNREACHABLE
    assert why == "no agent has reported in the 66s since creation"


def test_an_agent_that_cannot_run_replicas_makes_its_site_unreachable() -> None:
    beat = NOW - timedelta(seconds=1)
    phase, why = site_phase(
        last_heartbeat=beat, now=NOW, grace=GRACE, problem="the kubernetes API does not answer"
    )
    assert phase == SitePhase.UNREACHABLE
    assert why == "the agent reports: the kubernetes API does not answer"
    # Silence says more than an old problem: the link is what is known to be down.
    old = NOW - timedelta(seconds=60)
    assert "no heartbeat" in (
        site_phase(last_heartbeat=old, now=NOW, grace=GRACE, problem="x")[1] or ""
    )
    assert site_phase(last_heartbeat=beat, now=NOW, grace=GRACE, problem=None)[0] == SitePhase.READY


def test_heartbeats_slow_down_as_the_fleet_grows_up_to_a_ceiling() -> None:
    # A small fleet asks for nothing slower than the agents' own interval.
    assert heartbeat_interval(100, rate=1000.0) == 0.1
    assert heartbeat_interval(2_000, rate=1000.0) == 2.0
    assert heartbeat_interval(5_000, rate=1000.0) == 5.0
    assert heartbeat_interval(10_000, rate=1000.0) == HEARTBEAT_CEILING
    assert heartbeat_interval(1_000_000, rate=1000.0) == HEARTBEAT_CEILING
    with pytest.raises(ValueError, match="rate must be > 0"):
        heartbeat_interval(10, rate=0.0)


@given(st.integers(0, 1_000_000), st.integers(0, 1_000_000))
def test_interval_is_monotonic_in_fleet_size(a: int, b: int) -> None:
    small, large = sorted((a, b))
    assert heartbeat_interval(small, rate=1000.0) <= heartbeat_interval(large, rate=1000.0)


@given(st.integers(0, 1_000_000), st.floats(0.0, 60.0))
def test_a_dead_site_is_told_within_thirty_seconds_at_any_size(
    sites: int, configured: float
) -> None:
    interval = heartbeat_interval(sites, rate=1000.0)
    grace = heartbeat_grace(interval, configured)
    # Never less than the operator configured, nor fewer than GRACE_BEATS beats.
    assert grace >= configured
    assert grace >= GRACE_BEATS * interval
    # With the default grace (at most 6 s) the verdict comes within 30 s at any fleet size,
    # a monitor pass and a feed poll included.
    if configured <= 6.0:
        assert grace + PASS_SLACK <= DETECT_WITHIN
