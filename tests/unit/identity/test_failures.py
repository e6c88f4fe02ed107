"""The failure budget of a source: a token bucket kept as one time (GCRA)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.identity.failures import FailureBudget

BUDGETS = st.builds(
    FailureBudget,
    burst=st.integers(min_value=1, max_value=20).map(float),
    rate=st.sampled_from([0.1, 1 / 6, 0.5, 1.0, 4.0]),
)
GAPS = st.lists(st.floats(min_value=0, max_value=30), min_size=1, max_size=40)


def test_a_source_gets_its_burst_then_one_every_1_over_rate() -> None:
    budget = FailureBudget(burst=3, rate=0.5)
    forgiven = None
    for _ in range(3):
        assert budget.retry_after(forgiven, 0.0) == 0
        forgiven = budget.forgiven_at(forgiven, 0.0)
    assert budget.retry_after(forgiven, 0.0) == 2.0
    assert budget.retry_after(forgiven, 2.0) == 0
    assert budget.refused_beyond(0.0) == 4.0


@given(BUDGETS, GAPS)
def test_it_is_the_token_bucket(budget: FailureBudget, gaps: list[float]) -> None:
    """Failures at ``gaps`` apart: the one time says what a bucket of tokens says."""
    tokens, forgiven, now = budget.burst, None, 0.0
    for gap in gaps:
        now += gap
        tokens = min(budget.burst, tokens + gap * budget.rate)
        wait = (1 - tokens) / budget.rate if tokens < 1 else 0.0
        assert budget.retry_after(forgiven, now) == pytest.approx(wait, abs=1e-6)
        tokens = max(0.0, tokens - 1)
        forgiven = budget.forgiven_at(forgiven, now)
        assert budget.burst - (forgiven - now) * budget.rate == pytest.approx(tokens, abs=1e-6)


@given(BUDGETS, st.floats(min_value=-100, max_value=100), st.integers(1, 30))
def test_failures_add_up_however_they_are_batched(
    budget: FailureBudget, ahead: float, failures: int
) -> None:
    """Hubs send their failures in batches: n at once is n one after the other."""
    before = 1000.0 + ahead
    one_by_one = before
    for _ in range(failures):
        one_by_one = budget.forgiven_at(one_by_one, 1000.0)
    at_once = budget.forgiven_at(before, 1000.0, failures)
    assert at_once == pytest.approx(one_by_one)


@given(BUDGETS, st.floats(min_value=0, max_value=1000), st.floats(min_value=0, max_value=100))
def test_only_a_recent_failure_can_refuse(budget: FailureBudget, at: float, later: float) -> None:
    forgiven = budget.forgiven_at(budget.forgiven_at(None, at, 1000), at)
    now = at + later
    refused = budget.retry_after(forgiven, now) > 0
    assert refused == (forgiven > budget.refused_beyond(now))
    if refused:
        assert at >= budget.recent(now)
    if at < budget.forgotten(now):
        assert budget.retry_after(forgiven, now) == 0 and forgiven <= now
