"""Local scaling: examples on a fake clock as documentation, then properties of the decision.

Time is a plain float (seconds) that the tests advance; nothing sleeps.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.agent.scaling import (
    Autoscaler,
    ConcurrencyWindow,
    ScalerState,
    WindowStats,
    decide,
    replicas_for,
)
from edgefleet.model import AppAssignment, LocalScaling, ProcessWorkload

PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = "demo/hello"
NOW = 10_000.0
"""A fixed time for decisions made outside a simulation."""


def assignment(
    *,
    replicas: int = 1,
    min_replicas: int = 0,
    max_replicas: int = 10,
    target: float = 10.0,
    stable_window: float = 60.0,
    panic_window: float = 6.0,
    panic_threshold: float = 2.0,
    idle_timeout: float = 300.0,
    fixed: bool = False,
    app: str = "hello",
) -> AppAssignment:
    """An assignment of ``demo/<app>``; ``fixed``: without local scaling."""
    scaling = (
        None
        if fixed
        else LocalScaling(
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_concurrency=target,
            stable_window=stable_window,
            panic_window=panic_window,
            panic_threshold=panic_threshold,
            idle_timeout=idle_timeout,
        )
    )
    return AppAssignment(
        tenant="demo",
        app=app,
        generation=1,
        replicas=replicas,
        workload=ProcessWorkload(command="edgefleet-hello"),
        scaling=scaling,
    )


def simulate(
    scaler: Autoscaler,
    *,
    start: float,
    seconds: float,
    load: Callable[[float], float],
    sample: float = 0.25,
    every: float = 2.0,
    key: str = KEY,
    arriving: Callable[[float], bool] | None = None,
) -> list[tuple[float, int]]:
    """Feed ``load(t)`` in flight every ``sample`` s, tick every ``every`` s; (time, desired).

    Requests arrive when ``arriving(t)``, by default whenever something is in flight; replicas
    are ready as soon as decided.
    """
    per_tick = round(every / sample)
    desired = scaler.desired(key)
    assert desired is not None
    out: list[tuple[float, int]] = []
    for step in range(1, round(seconds / sample) + 1):
        now = start + step * sample
        in_flight = load(now)
        if arriving(now) if arriving is not None else in_flight > 0:
            scaler.request_seen(key, now)
        scaler.record(key, now, in_flight)
        if step % per_tick == 0:
            desired = scaler.tick(now, ready={key: desired})[key]
            out.append((now, desired))
    return out


def state_of(scaler: Autoscaler, key: str = KEY) -> ScalerState:
    state = scaler.state(key)
    assert state is not None
    return state


def counts(run: list[tuple[float, int]]) -> list[int]:
    return [n for _, n in run]


def changes(sequence: list[int]) -> int:
    return sum(a != b for a, b in itertools.pairwise(sequence))


# ---------------------------------------------------------------------------------------------
# The window


def test_window_averages_are_time_weighted_so_a_short_burst_weighs_little() -> None:
    window = ConcurrencyWindow(60.0)
    # 100 in flight for 0.1 s, sampled 10 times, then 0 for 9.9 s: 1 on average over 10 s.
    for i in range(10):
        window.record(100.0 + i * 0.01, 100)
    window.record(100.1, 0)
    assert window.average(110.0, 10.0) == pytest.approx(1.0)
    # A mean of the samples would say 100 / 11 * 10 = 90.9.


def test_window_covers_only_the_data_it_has_and_the_last_sample_holds() -> None:
    window = ConcurrencyWindow(60.0)
    assert window.average(5.0, 60.0) is None
    window.record(10.0, 4)
    assert window.average(10.0, 60.0) == 4
    window.record(12.0, 8)
    # Over the 4 s known: 4 for 2 s, then 8 for 2 s (the last sample holds until now).
    assert window.average(14.0, 60.0) == pytest.approx(6.0)
    assert window.average(14.0, 1.0) == pytest.approx(8.0)
    assert window.since == 10.0
    assert window.latest == 8


def test_window_memory_is_bounded_by_its_retention() -> None:
    window = ConcurrencyWindow(60.0, bucket=0.5)
    rng = random.Random(3)
    now = 0.0
    for _ in range(50_000):
        now += rng.uniform(0.0, 0.05)
        window.record(now, rng.randint(0, 50))
    assert now > 1000
    assert window.bucket_count <= 60.0 / 0.5 + 2
    # A long gap at a steady level costs at most the retention, not the gap.
    held = window.latest
    window.record(now + 10_000.0, 0)
    assert window.bucket_count <= 60.0 / 0.5 + 2
    assert window.average(now + 10_000.0, 60.0) == pytest.approx(held)


def test_window_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="retention"):
        ConcurrencyWindow(0.0)
    window = ConcurrencyWindow(10.0)
    with pytest.raises(ValueError, match="in_flight"):
        window.record(1.0, -1)
    with pytest.raises(ValueError, match="in_flight"):
        window.record(1.0, math.nan)


SAMPLES = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 30)),  # (gap in 0.1 s, in flight)
    min_size=1,
    max_size=60,
)


@PROPERTIES
@given(samples=SAMPLES, window_buckets=st.integers(1, 200), tail=st.integers(0, 30))
def test_window_average_is_the_exact_time_average_over_whole_buckets(
    samples: list[tuple[int, int]], window_buckets: int, tail: int
) -> None:
    """With the window edges on bucket edges, the average is exact (compared with a brute-force
    integral of the step function in tenths of a second)."""
    window = ConcurrencyWindow(50.0, bucket=0.5)
    tenths: list[tuple[int, int]] = []  # (time in 0.1 s, value)
    time = 1000
    for gap, value in samples:
        time += gap
        tenths.append((time, value))
        window.record(time / 10, value)
    # ``now`` on a bucket edge (multiple of 5 tenths) at or after the last sample.
    now = (time + tail + 4) // 5 * 5
    seconds = window_buckets * 0.5
    first = tenths[0][0]
    span = min(round(seconds * 10), 500, now - first)
    average = window.average(now / 10, seconds)
    assert average is not None
    if span <= 0:
        assert average == tenths[-1][1]
        return
    area = 0
    for i, (t, value) in enumerate(tenths):
        until = tenths[i + 1][0] if i + 1 < len(tenths) else now
        area += value * max(0, min(until, now) - max(t, now - span))
    assert average == pytest.approx(area / span, rel=1e-9, abs=1e-9)


@PROPERTIES
@given(samples=SAMPLES, offset=st.integers(0, 600), seconds=st.floats(0.1, 100))
def test_window_average_lies_between_the_lowest_and_highest_sample(
    samples: list[tuple[int, int]], offset: int, seconds: float
) -> None:
    window = ConcurrencyWindow(60.0)
    time = 0
    for gap, value in samples:
        time += gap
        window.record(time / 10, value)
    average = window.average((time + offset) / 10, seconds)
    assert average is not None
    values = [v for _, v in samples]
    assert min(values) - 1e-9 <= average <= max(values) + 1e-9


# ---------------------------------------------------------------------------------------------
# The scaler, by example


def test_steady_concurrency_of_25_at_target_10_runs_3() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=2)], now=0.0)
    run = simulate(scaler, start=0.0, seconds=120.0, load=lambda t: 25)
    # Up from the hub's 2 at the first tick (on the 2 s of data there are by then), then steady.
    assert set(counts(run)) == {3}
    assert not state_of(scaler).panicking
    assert scaler.explain(KEY) == (
        "demo/hello: 3 replicas: steady: 25 in flight over 60 s / 10 each: 3"
    )


def test_a_burst_panics_and_scales_up_at_once() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=1)], now=0.0)
    calm = simulate(scaler, start=0.0, seconds=120.0, load=lambda t: 8)
    assert counts(calm)[-1] == 1
    burst = simulate(scaler, start=120.0, seconds=2.0, load=lambda t: 60)
    # At the first tick in the burst (sampled from 120.25 s) the 6 s average is
    # (4.25 x 8 + 1.75 x 60) / 6 = 23.2 >= 2 x 1 ready x 10: panic, on that figure; the 60 s
    # average alone would want 1.
    assert burst == [(122.0, 3)]
    assert state_of(scaler).panicking
    assert scaler.explain(KEY) == (
        "demo/hello: 3 replicas: panic: 23.2 in flight over 6 s for 1 ready x 10: 3"
    )
    burst = simulate(scaler, start=122.0, seconds=4.0, load=lambda t: 60)
    assert counts(burst) == [5, 6]
    # 60 in flight is no burst for 5 ready, but the panic goes on: up on the 6 s figure.
    assert scaler.explain(KEY) == (
        "demo/hello: 6 replicas: panic for 4 s, last burst 4 s ago: 57.8 in flight over 6 s"
        " / 10 each: 6; no scale-down before 60 s without a burst"
    )
    # What the 60 s average alone would want by now.
    assert replicas_for((54.25 * 8 + 5.75 * 60) / 60, 10.0) == 2


def test_no_scale_down_during_panic_then_a_gradual_one() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=1, max_replicas=20)], now=0.0)
    simulate(scaler, start=0.0, seconds=60.0, load=lambda t: 5)
    simulate(scaler, start=60.0, seconds=10.0, load=lambda t: 120)
    assert scaler.desired(KEY) == 12
    last_burst = state_of(scaler).panic_last
    assert last_burst is not None
    after = simulate(scaler, start=70.0, seconds=200.0, load=lambda t: 3)
    during = [n for t, n in after if t - last_burst < 60.0]
    assert during and all(n == 12 for n in during)
    later = [n for t, n in after if t - last_burst >= 60.0]
    assert later[-1] == 1
    for before, now in zip([12, *later], later, strict=False):
        assert now <= before
        assert now >= math.ceil(before / 2)  # never faster than halving per decision
    assert len(set(later)) > 3  # several steps down, not one jump


def test_scale_down_waits_until_the_stable_window_agrees() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=10, max_replicas=20)], now=0.0)
    simulate(scaler, start=0.0, seconds=120.0, load=lambda t: 100)
    assert scaler.desired(KEY) == 10
    after = simulate(scaler, start=120.0, seconds=150.0, load=lambda t: 5)
    # The 60 s average falls below 90 within seconds, but 10 was wanted within the last 60 s.
    assert all(n == 10 for t, n in after if t < 180.0)
    assert scaler.desired(KEY) == 1
    down = [n for t, n in after if t >= 180.0]
    assert all(a >= b for a, b in itertools.pairwise(down))
    assert len(set(down)) > 3


def test_to_zero_only_after_the_idle_timeout_when_min_is_0() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=1, idle_timeout=300.0)], now=0.0)
    run = simulate(scaler, start=0.0, seconds=400.0, load=lambda t: 1 if t <= 5 else 0)
    assert all(n == 1 for t, n in run if t < 305.0)
    assert all(n == 0 for t, n in run if t >= 306.0)
    assert scaler.explain(KEY) == "demo/hello: 0 replicas: idle 395 s: asleep"
    assert scaler.desired(KEY) == 0


def test_a_request_still_in_flight_keeps_the_app_awake() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=1, idle_timeout=300.0)], now=0.0)
    scaler.request_seen(KEY, 0.0)
    # One long request (a stream) from 0 s to 400 s, and no other: the idle timeout passes
    # while it is in flight; the app sleeps once a stable window has passed without it.
    run = simulate(
        scaler,
        start=0.0,
        seconds=600.0,
        load=lambda t: 1 if t < 400 else 0,
        arriving=lambda t: False,
    )
    assert all(n == 1 for t, n in run if t < 460.0)
    assert next(t for t, n in run if n == 0) == 460.0


def test_an_app_no_request_ever_reached_sleeps_an_idle_timeout_after_its_assignment() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=3, idle_timeout=100.0)], now=50.0)
    run = simulate(scaler, start=50.0, seconds=200.0, load=lambda t: 0)
    assert all(n >= 1 for t, n in run if t < 150.0)
    assert next(t for t, n in run if n == 0) == 150.0


@pytest.mark.parametrize(
    ("min_replicas", "idle_timeout", "floor"), [(1, 300.0, 1), (2, 300.0, 2), (0, 0.0, 1)]
)
def test_never_to_zero_with_min_above_0_or_no_idle_timeout(
    min_replicas: int, idle_timeout: float, floor: int
) -> None:
    scaler = Autoscaler()
    scaler.set_assignments(
        [assignment(replicas=4, min_replicas=min_replicas, idle_timeout=idle_timeout)], now=0.0
    )
    run = simulate(scaler, start=0.0, seconds=3600.0, load=lambda t: 2 if t <= 5 else 0)
    assert min(counts(run)) == floor
    assert counts(run)[-1] == floor


def test_wake_from_zero_gives_1_at_once_and_restarts_the_idle_clock() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=0, idle_timeout=60.0)], now=0.0)
    assert scaler.tick(100.0) == {KEY: 0}
    assert scaler.explain(KEY) == "demo/hello: 0 replicas: no concurrency data yet: the hub's 0"
    assert scaler.wake(KEY, 120.0) is True
    assert scaler.desired(KEY) == 1
    assert scaler.explain(KEY).endswith("woken by a request, no concurrency data yet: 1")
    assert scaler.wake(KEY, 120.5) is False  # already awake
    # The request is served and done; the app sleeps again one idle timeout after it.
    run = simulate(scaler, start=120.5, seconds=120.0, load=lambda t: 1 if t < 122 else 0)
    assert all(n == 1 for t, n in run if t < 182.0)
    assert all(n == 0 for t, n in run if t >= 184.0)
    # Woken again from zero, with the window's (idle) data this time.
    assert scaler.wake(KEY, 300.0) is True
    assert scaler.desired(KEY) == 1
    assert scaler.explain(KEY) == "demo/hello: 1 replicas: woken by a request: 1"


def test_wake_does_nothing_where_it_cannot() -> None:
    scaler = Autoscaler()
    scaler.set_assignments(
        [
            assignment(app="fixed", replicas=0, fixed=True),
            assignment(app="capped", replicas=0, max_replicas=0),
        ],
        now=0.0,
    )
    assert scaler.wake("demo/fixed", 1.0) is False
    assert scaler.wake("demo/capped", 1.0) is False
    assert scaler.wake("demo/elsewhere", 1.0) is False
    assert scaler.tick(2.0) == {"demo/fixed": 0, "demo/capped": 0}
    assert scaler.explain("demo/elsewhere") == "demo/elsewhere: not assigned to this site"


def test_bounds_are_respected() -> None:
    scaler = Autoscaler()
    scaler.set_assignments(
        [assignment(replicas=3, min_replicas=2, max_replicas=5, idle_timeout=10.0)], now=0.0
    )
    run = simulate(scaler, start=0.0, seconds=30.0, load=lambda t: 1000)
    assert counts(run)[-1] == 5
    assert scaler.explain(KEY).endswith("(max 5; 100 wanted)")
    run = simulate(scaler, start=30.0, seconds=600.0, load=lambda t: 0)
    assert counts(run)[-1] == 2
    assert min(counts(run)) == 2


def test_fixed_assignments_are_untouched() -> None:
    scaler = Autoscaler()
    fixed = assignment(replicas=4, fixed=True)
    scaler.set_assignments([fixed], now=0.0)
    run = simulate(scaler, start=0.0, seconds=60.0, load=lambda t: 500)
    assert set(counts(run)) == {4}
    assert scaler.effective([fixed], now=61.0) == [fixed]
    assert scaler.explain(KEY) == "demo/hello: 4 replicas: fixed: 4 from the hub"


def test_without_data_the_hub_count_clamped_into_the_bounds() -> None:
    scaler = Autoscaler()
    scaler.set_assignments(
        [
            assignment(app="a", replicas=2, min_replicas=1, max_replicas=3),
            assignment(app="b", replicas=7, min_replicas=1, max_replicas=3),
            assignment(app="c", replicas=0, min_replicas=1, max_replicas=3),
        ],
        now=0.0,
    )
    assert scaler.tick(30.0) == {"demo/a": 2, "demo/b": 3, "demo/c": 1}
    assert scaler.explain("demo/b") == (
        "demo/b: 3 replicas: no concurrency data yet: the hub's 7, clamped into [1, 3]: 3"
    )


def test_effective_hands_the_driver_the_decided_counts() -> None:
    scaler = Autoscaler()
    scaled = assignment(replicas=1)
    fixed = assignment(app="fixed", replicas=2, fixed=True)
    assert scaler.effective([scaled, fixed], now=0.0) == [scaled, fixed]
    simulate(scaler, start=0.0, seconds=60.0, load=lambda t: 45)
    result = scaler.effective([scaled, fixed], now=60.0)
    assert [a.replicas for a in result] == [5, 2]
    assert result[0] == scaled.model_copy(update={"replicas": 5})
    assert scaled.replicas == 1  # the hub's assignment itself is not changed
    # An app no longer assigned is forgotten: its reports are ignored.
    assert scaler.effective([fixed], now=61.0) == [fixed]
    scaler.record(KEY, 62.0, 100)
    assert scaler.desired(KEY) is None


def test_a_new_count_from_the_hub_is_the_new_starting_point() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=2)], now=0.0)
    simulate(scaler, start=0.0, seconds=120.0, load=lambda t: 15)
    assert scaler.desired(KEY) == 2
    # The hub moves traffic here: 6; the site holds that for a stable window, then follows load.
    scaler.set_assignments([assignment(replicas=6)], now=120.0)
    run = simulate(scaler, start=120.0, seconds=200.0, load=lambda t: 15)
    assert all(n == 6 for t, n in run if t < 180.0)
    assert counts(run)[-1] == 2


def test_the_scale_down_hold_never_scales_up() -> None:
    app = assignment(replicas=3)
    # 8 was wanted 10 s ago, the count is 3 (the hub's bounds or a rebase cut it), 1 is wanted.
    state = ScalerState(desired=3, hub_replicas=3, history=((NOW - 10.0, 8), (NOW - 5.0, 2)))
    stats = WindowStats(stable=4.0, panic=4.0, ready=3, last_request=NOW, tracked_since=0.0)
    decision = decide(NOW, app, stats, state)
    assert decision.desired == 3
    assert decision.reason == (
        "holding 3: 4 in flight over 60 s / 10 each wants 1; 8 wanted within the last 60 s"
    )
    assert decision.state.history == ((NOW - 10.0, 8), (NOW - 5.0, 2), (NOW, 1))


def test_a_restarted_agent_starts_from_the_hub_count() -> None:
    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=4)], now=1000.0)
    assert scaler.desired(KEY) == 4
    run = simulate(scaler, start=1000.0, seconds=58.0, load=lambda t: 3)
    # Little load, but the first stable window of data may not take the count down.
    assert set(counts(run)) == {4}


# ---------------------------------------------------------------------------------------------
# Flapping


def test_a_noisy_steady_load_rarely_changes_the_count() -> None:
    """+-30 % noise around 25 in flight for 10 minutes: the windows absorb it; a scaler that
    acts on each sample (what the bound is compared with) changes its count all the time."""
    rng = random.Random(20240501)
    samples: dict[float, int] = {}

    def noisy(t: float) -> float:
        samples[t] = round(25 * rng.uniform(0.7, 1.3))
        return samples[t]

    scaler = Autoscaler()
    scaler.set_assignments([assignment(replicas=3)], now=0.0)
    run = simulate(scaler, start=0.0, seconds=600.0, load=noisy)
    naive = [replicas_for(samples[t], 10.0) for t, _ in run]
    bound = 2
    assert changes(counts(run)) <= bound
    assert changes(naive) > 20 * bound
    assert set(counts(run)) <= {3, 4}


# ---------------------------------------------------------------------------------------------
# Properties of the decision


@st.composite
def scalings(draw: st.DrawFn) -> LocalScaling:
    low = draw(st.integers(0, 4))
    stable = draw(st.floats(1.0, 120.0))
    return LocalScaling(
        min_replicas=low,
        max_replicas=draw(st.integers(low, 12)),
        target_concurrency=draw(st.floats(0.5, 50.0)),
        stable_window=stable,
        panic_window=draw(st.floats(0.5, stable)),
        panic_threshold=draw(st.floats(1.1, 5.0)),
        idle_timeout=draw(st.sampled_from([0.0, 30.0, 300.0]) | st.floats(0.0, 600.0)),
    )


LOADS = st.floats(0.0, 2000.0) | st.sampled_from([0.0, 10.0, 25.0])
AGES = st.floats(0.0, 1000.0)


@st.composite
def states(draw: st.DrawFn, hub: int) -> ScalerState:
    if draw(st.booleans()):
        return ScalerState()
    last = draw(st.none() | AGES)
    since = None if last is None else last + draw(st.floats(0.0, 100.0))
    entries = draw(st.lists(st.tuples(st.floats(0.0, 150.0), st.integers(0, 15)), max_size=6))
    ages = sorted({age for age, _ in entries}, reverse=True)
    figures = sorted({n for _, n in entries}, reverse=True)
    history = tuple((NOW - age, n) for age, n in zip(ages, figures, strict=False))
    return ScalerState(
        desired=draw(st.integers(0, 15)),
        hub_replicas=draw(st.sampled_from([hub, hub, hub + 1])),
        panic_since=None if since is None else NOW - since,
        panic_last=None if last is None else NOW - last,
        history=history,
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[AppAssignment, WindowStats, ScalerState]:
    scaling = draw(scalings())
    hub = draw(st.integers(0, 15))
    app = AppAssignment(
        tenant="demo",
        app="hello",
        generation=1,
        replicas=hub,
        workload=ProcessWorkload(command="edgefleet-hello"),
        scaling=scaling,
    )
    with_data = draw(st.booleans())
    last_request = draw(st.none() | AGES)
    stats = WindowStats(
        stable=draw(LOADS) if with_data else None,
        panic=draw(LOADS) if with_data else None,
        ready=draw(st.integers(0, 15)),
        last_request=None if last_request is None else NOW - last_request,
        tracked_since=NOW - draw(st.floats(0.0, 2000.0)),
    )
    return app, stats, draw(states(hub))


def _recently_requested(app: AppAssignment, stats: WindowStats) -> bool:
    assert app.scaling is not None
    if stats.last_request is None:
        return False
    return app.scaling.idle_timeout == 0 or NOW - stats.last_request < app.scaling.idle_timeout


@PROPERTIES
@given(situation=situations())
def test_desired_is_within_bounds_and_never_0_soon_after_a_request(
    situation: tuple[AppAssignment, WindowStats, ScalerState],
) -> None:
    app, stats, state = situation
    assert app.scaling is not None
    decision = decide(NOW, app, stats, state)
    assert app.scaling.min_replicas <= decision.desired <= app.scaling.max_replicas
    if _recently_requested(app, stats) and app.scaling.max_replicas >= 1:
        assert decision.desired >= 1
    assert decision.state.desired == decision.desired
    assert decision.reason
    if stats.stable is not None and stats.panic is not None:
        # No count comes from nowhere: it is the current one, or what the load or demand wants.
        low, high = app.scaling.min_replicas, app.scaling.max_replicas
        rebased = state.desired is None or state.hub_replicas != app.replicas
        current = min(high, max(low, app.replicas)) if rebased else state.desired
        assert current is not None
        target = app.scaling.target_concurrency
        wanted = max(current, replicas_for(max(stats.stable, stats.panic), target), 1)
        assert decision.desired <= min(high, max(low, wanted))
    # The kept history stays short and ordered: figures strictly decrease, times increase.
    history = decision.state.history
    assert all(a[1] > b[1] and a[0] <= b[0] for a, b in itertools.pairwise(history))
    # Deterministic: the same inputs give the same decision, reason and state.
    assert decide(NOW, app, stats, state) == decision


@PROPERTIES
@given(situation=situations())
def test_fixed_assignments_always_run_the_hub_count(
    situation: tuple[AppAssignment, WindowStats, ScalerState],
) -> None:
    app, stats, state = situation
    fixed = app.model_copy(update={"scaling": None})
    assert decide(NOW, fixed, stats, state).desired == app.replicas


@PROPERTIES
@given(situation=situations(), more_stable=LOADS, more_panic=LOADS)
def test_more_load_never_gives_fewer_replicas(
    situation: tuple[AppAssignment, WindowStats, ScalerState],
    more_stable: float,
    more_panic: float,
) -> None:
    app, stats, state = situation
    if stats.stable is None or stats.panic is None:
        stats = WindowStats(
            stable=0.0,
            panic=0.0,
            ready=stats.ready,
            last_request=stats.last_request,
            tracked_since=stats.tracked_since,
        )
    assert stats.stable is not None and stats.panic is not None
    heavier = WindowStats(
        stable=stats.stable + more_stable,
        panic=stats.panic + more_panic,
        ready=stats.ready,
        last_request=stats.last_request,
        tracked_since=stats.tracked_since,
    )
    assert decide(NOW, app, heavier, state).desired >= decide(NOW, app, stats, state).desired


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["record", "request", "wake", "tick"]),
        st.floats(0.0, 120.0),  # seconds since the previous operation
        st.integers(0, 200),  # in flight, or ready replicas for a tick
    ),
    max_size=60,
)


@PROPERTIES
@given(scaling=scalings(), hub=st.integers(0, 15), operations=OPERATIONS)
def test_the_autoscaler_keeps_every_count_within_bounds(
    scaling: LocalScaling, hub: int, operations: list[tuple[str, float, int]]
) -> None:
    app = assignment(
        replicas=hub,
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        target=scaling.target_concurrency,
        stable_window=scaling.stable_window,
        panic_window=scaling.panic_window,
        panic_threshold=scaling.panic_threshold,
        idle_timeout=scaling.idle_timeout,
    )
    scaler = Autoscaler()
    now = 0.0
    scaler.set_assignments([app], now=now)
    last_request: float | None = None
    for operation, gap, number in operations:
        now += gap
        if operation == "record":
            scaler.record(KEY, now, number)
        elif operation == "request":
            scaler.request_seen(KEY, now)
            last_request = now
        elif operation == "wake":
            before = scaler.desired(KEY)
            woke = scaler.wake(KEY, now)
            last_request = now
            assert woke == (before == 0 and scaler.desired(KEY) != 0)
        else:
            scaler.tick(now, ready={KEY: number % 16})
        desired = scaler.desired(KEY)
        assert desired is not None
        assert scaling.min_replicas <= desired <= scaling.max_replicas
        recent = last_request is not None and (
            scaling.idle_timeout == 0 or now - last_request < scaling.idle_timeout
        )
        if recent and scaling.max_replicas >= 1 and operation in ("wake", "tick"):
            assert desired >= 1
