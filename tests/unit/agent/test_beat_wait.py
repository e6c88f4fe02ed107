"""Heartbeats are jittered: sites lined up by one stall drift apart again."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.hublink import BEAT_JITTER, beat_wait


@given(
    interval=st.floats(min_value=0.1, max_value=3600.0),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_a_wait_stays_within_the_jitter_of_the_interval(interval: float, draw: float) -> None:
    wait = beat_wait(interval, lambda: draw)
    assert interval * (1 - BEAT_JITTER) - 1e-9 <= wait <= interval * (1 + BEAT_JITTER) + 1e-9


def test_sites_that_beat_together_drift_apart() -> None:
    # A thousand sites whose beats one stall lined up: ten beats later they are spread over
    # several seconds (with no jitter they would still beat in the same instant).
    rng = random.Random(7)
    interval = 7.0
    due = [0.0] * 1000
    for _ in range(10):
        due = [t + beat_wait(interval, rng.random) for t in due]
    assert max(due) - min(due) > 2.0
    assert all(
        10 * interval * (1 - BEAT_JITTER) <= t <= 10 * interval * (1 + BEAT_JITTER) for t in due
    )
