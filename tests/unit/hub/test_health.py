"""Site health verdicts from heartbeat times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.hub.health import site_phase
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
