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
