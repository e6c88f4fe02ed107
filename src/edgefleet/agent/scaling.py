"""Local scaling at a site: how many replicas of an app to run, from the requests in flight.

In ``traffic`` placement the hub gives each site, per app, a count (``replicas``) and bounds
(``scaling``: a ``LocalScaling``). Between the hub's rounds, and with the hub away, the agent
scales the app itself within those bounds, following the concurrency (requests in flight) its
ingress observes, as Knative's autoscaler (KPA) does.

``ConcurrencyWindow`` keeps one app's requests in flight as a step function in time buckets, and
answers time-weighted averages. ``decide`` is the pure decision: it takes the assignment, the
window averages, the ready count and the idle clock (``WindowStats``) and what it decided last
time (``ScalerState``), and returns the count, the new state and why. ``Autoscaler`` holds one
window and state per app for the agent: the ingress feeds it, the agent's loop ticks it and hands
``effective(...)`` to its driver. Nothing here does I/O, starts a thread or reads a clock: time
is always passed in (seconds on a monotonic clock).

The rules of ``decide``, for an app whose assignment has ``scaling``; ``[min, max]`` are
``min_replicas`` and ``max_replicas`` (min wins if they cross):

1. An assignment without ``scaling`` is fixed: the count is the hub's ``replicas``, always.
2. Current count: the last decision, except that when the hub's ``replicas`` differs from the
   one the last decision saw (a new hub round), the hub's count clamped into ``[min, max]``
   becomes the current count: the site continues from the hub's word, its load then moves it.
3. No concurrency data yet (just assigned, or the agent just restarted): the hub's ``replicas``
   clamped into ``[min, max]``; at least 1 if a request arrived within ``idle_timeout``.
4. Wanted counts: ``stable = ceil(stable-window average / target_concurrency)`` and
   ``panic = ceil(panic-window average / target_concurrency)``, each clamped into ``[min, max]``.
5. Panic: a burst is a panic-window average at or above ``panic_threshold`` x the capacity of
   the ready replicas (``max(ready, 1) x target_concurrency``). From a burst until a whole stable
   window passes without one, the scaler is in panic: the count is the highest of the panic and
   stable figures and the current count; it goes up at once and never down.
6. Sleep: when ``min_replicas`` is 0, ``idle_timeout`` > 0, no request arrived for
   ``idle_timeout`` seconds (counted from the assignment when none arrived since), nothing was
   in flight over the stable window and there is no panic, the count is 0 at once.
7. Otherwise, scale up at once to the stable figure when it exceeds the current count. Scale down
   only as far as the stable window agrees: never below the highest stable figure of the last
   stable window (the current count stands in for the history when the data or the hub's count
   is new), and never below half the current count (rounded up) in one decision.
8. Only rule 6 takes a running app to 0: otherwise the count stays at least 1 while the app runs
   or there is demand (a request within ``idle_timeout``, or anything in flight). An app at 0
   stays there until demand comes; ``Autoscaler.wake`` (the activator) brings it to 1 at once.
9. The result is clamped into ``[min, max]``; bounds win over every rule above.

Every rule is monotone in load: for the same state, more concurrency never gives fewer replicas.
A decision costs O(max_replicas) at worst (the history of stable figures is kept as a decreasing
sequence); an average costs O(window / bucket).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from edgefleet.model import AppAssignment, LocalScaling

BUCKET_SECONDS = 0.5
"""Width of a concurrency bucket: a 60 s window is 120 floats per app."""

_EPSILON = 1e-9
"""Forgiven when dividing load by target, so an average of 30.000000001 / 10 wants 3, not 4."""


# ---------------------------------------------------------------------------------------------
# Concurrency over time


class ConcurrencyWindow:
    """Requests in flight for one app over the last ``retention`` seconds, for time averages.

    In flight is a step function of time: a sample holds until the next one. The ingress records
    on every request start and end (then the function is exact), or a sampler every few tenths of
    a second. Each bucket holds the integral of the function over its span (request-seconds), so
    a burst of 100 in flight for 0.1 s weighs 10 request-seconds however many samples it made; a
    plain mean of samples would take it for 100. Memory: one bucket per ``bucket`` seconds of
    ``retention``. Samples must come in time order; a late one counts as made at the latest time.
    """

    def __init__(self, retention: float, *, bucket: float = BUCKET_SECONDS) -> None:
        if not (math.isfinite(bucket) and bucket > 0):
            raise ValueError(f"bucket must be a finite number of seconds > 0, not {bucket}")
        self.bucket = bucket
        """Width of a bucket, seconds."""
        self.retention = retention
        self._buckets: deque[tuple[int, float]] = deque()
        """(bucket index, request-seconds) in index order; buckets with nothing are left out."""
        self._first: float | None = None
        self._last_time = 0.0
        self._last_value = 0.0

    @property
    def retention(self) -> float:
        """Seconds of history kept; the longest window an average can cover."""
        return self._retention

    @retention.setter
    def retention(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"retention must be a finite number of seconds > 0, not {seconds}")
        self._retention = seconds

    @property
    def since(self) -> float | None:
        """Time of the first sample; None before any."""
        return self._first

    @property
    def latest(self) -> float:
        """The last sample's requests in flight (0 before any)."""
        return self._last_value

    @property
    def bucket_count(self) -> int:
        """Buckets held: bounded by ``retention / bucket + 2`` whatever the number of samples."""
        return len(self._buckets)

    def record(self, now: float, in_flight: float) -> None:
        """From ``now`` on, ``in_flight`` requests are in flight."""
        if not (math.isfinite(in_flight) and in_flight >= 0):
            raise ValueError(f"in_flight must be a finite number >= 0, not {in_flight}")
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time, not {now}")
        if self._first is None:
            self._first = self._last_time = now
            self._last_value = in_flight
            return
        now = max(now, self._last_time)
        self._integrate(self._last_time, now, self._last_value)
        self._last_time = now
        self._last_value = in_flight
        self._trim(now)

    def average(self, now: float, seconds: float) -> float | None:
        """Time-weighted average in flight over the last ``seconds`` before ``now``.

        Over less when the data is younger, or than ``retention``. None before the first sample.
        Where the window starts inside a bucket, that bucket counts in proportion to its overlap.
        """
        if self._first is None:
            return None
        now = max(now, self._last_time)
        span = min(seconds, self._retention, now - self._first)
        if span <= 0:
            return self._last_value
        start = now - span
        # The last sample holds from its time to now; the buckets hold what came before.
        total = self._last_value * (now - max(self._last_time, start))
        width = self.bucket
        for index, area in reversed(self._buckets):
            known_low = max(index * width, self._first)
            known_high = min((index + 1) * width, self._last_time)
            if known_high <= start:
                break
            if known_high <= known_low:
                continue
            total += area * (known_high - max(known_low, start)) / (known_high - known_low)
        return total / span

    def _integrate(self, start: float, end: float, value: float) -> None:
        if value <= 0 or end <= start:
            return
        # A long gap only matters for the part still retained.
        start = max(start, end - self._retention - self.bucket)
        width = self.bucket
        index = math.floor(start / width)
        while True:
            edge = (index + 1) * width
            piece_end = min(end, edge)
            if piece_end > start:
                self._add(index, value * (piece_end - start))
            if end <= edge:
                return
            start = edge
            index += 1

    def _add(self, index: int, area: float) -> None:
        if self._buckets and self._buckets[-1][0] == index:
            self._buckets[-1] = (index, self._buckets[-1][1] + area)
        else:
            self._buckets.append((index, area))

    def _trim(self, now: float) -> None:
        horizon = now - self._retention
        while self._buckets and (self._buckets[0][0] + 1) * self.bucket <= horizon:
            self._buckets.popleft()


# ---------------------------------------------------------------------------------------------
# The decision


@dataclass(frozen=True)
class WindowStats:
    """What the site measured for one app, as ``decide`` needs it."""

    stable: float | None
    """Average requests in flight over the stable window; None: no concurrency data yet."""
    panic: float | None
    """Average requests in flight over the panic window; None exactly when ``stable`` is."""
    ready: int
    """Ready replicas of the app at the site now."""
    last_request: float | None
    """When the last request for the app arrived (or a wake); None: none since tracking began."""
    tracked_since: float
    """When the site began tracking the app (its assignment arrived): the idle clock's start
    while no request has arrived."""

    def __post_init__(self) -> None:
        if (self.stable is None) != (self.panic is None):
            raise ValueError("stable and panic averages must both be known or both None")
        for name, value in (("stable", self.stable), ("panic", self.panic)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} average must be a finite number >= 0, not {value}")
        if self.ready < 0:
            raise ValueError(f"ready must be >= 0, not {self.ready}")


@dataclass(frozen=True)
class ScalerState:
    """What ``decide`` remembers between decisions for one app; the initial state is empty."""

    desired: int | None = None
    """The last decision's count; None before the first."""
    hub_replicas: int | None = None
    """The hub's ``replicas`` the last decision saw; a different one re-bases the count."""
    panic_since: float | None = None
    """When the current panic began; None when not in panic."""
    panic_last: float | None = None
    """The latest burst of the current panic; the panic ends a stable window after it."""
    history: tuple[tuple[float, int], ...] = ()
    """(time, stable figure) of the last stable window, oldest first, figures strictly
    decreasing: only those that could still be the window's highest are kept."""

    def __post_init__(self) -> None:
        if self.desired is not None and self.desired < 0:
            raise ValueError(f"desired must be >= 0, not {self.desired}")

    @property
    def panicking(self) -> bool:
        """Whether the last decision was in panic."""
        return self.panic_last is not None


@dataclass(frozen=True)
class Decision:
    """How many replicas to run, the state for the next decision, and why."""

    desired: int
    """Replicas to run at the site."""
    state: ScalerState
    """State to pass to the next ``decide`` for the app."""
    reason: str
    """A short human explanation, for logs and ``explain``."""


def replicas_for(load: float, target: float) -> int:
    """Replicas that carry ``load`` requests in flight at ``target`` each: ``ceil(load/target)``."""
    return max(0, math.ceil(load / target - _EPSILON))


def decide(
    now: float, assignment: AppAssignment, stats: WindowStats, state: ScalerState
) -> Decision:
    """The replicas an app should run at this site now; the rules are in the module docstring."""
    scaling = assignment.scaling
    hub = assignment.replicas
    if scaling is None:
        return Decision(
            desired=hub,
            state=ScalerState(desired=hub, hub_replicas=hub),
            reason=f"fixed: {hub} from the hub",
        )
    low = scaling.min_replicas
    high = max(low, scaling.max_replicas)

    def clamp(count: int) -> int:
        return min(high, max(low, count))

    history: tuple[tuple[float, int], ...] = ()
    if state.desired is None or state.hub_replicas != hub:
        current = clamp(hub)
    else:
        current, history = state.desired, state.history

    idle_for = now - (stats.last_request if stats.last_request is not None else stats.tracked_since)
    requested = stats.last_request is not None and (
        scaling.idle_timeout == 0 or idle_for < scaling.idle_timeout
    )

    if stats.stable is None or stats.panic is None:
        return _without_data(hub=hub, clamp=clamp, requested=requested, scaling=scaling)

    window = scaling.stable_window
    target = scaling.target_concurrency
    stable_need = replicas_for(stats.stable, target)
    panic_need = replicas_for(stats.panic, target)
    stable_want, panic_want = clamp(stable_need), clamp(panic_need)

    burst = stats.panic >= scaling.panic_threshold * max(stats.ready, 1) * target
    panic_since, panic_last = state.panic_since, state.panic_last
    if panic_last is not None and now - panic_last >= window:
        panic_since = panic_last = None
    if burst:
        panic_since = now if panic_since is None else panic_since
        panic_last = now
    in_panic = panic_last is not None

    history = _remember(history, now=now, want=stable_want, current=current, window=window)
    demand = requested or stats.stable > 0 or stats.panic > 0
    # Only the idle rule takes a running app to zero; an app at zero leaves it on demand.
    floor = clamp(1 if current > 0 or demand else 0)
    stable_text = f"{_num(stats.stable)} in flight over {_num(window)} s / {_num(target)} each"

    if (
        low == 0
        and scaling.idle_timeout > 0
        and idle_for >= scaling.idle_timeout
        and stats.stable == 0
        and stats.panic == 0
        and not in_panic
    ):
        desired = 0
        reason = f"idle {_num(idle_for)} s: " + ("to zero" if current > 0 else "asleep")
    elif in_panic:
        desired = clamp(max(panic_want, stable_want, current, floor))
        if burst:
            reason = (
                f"panic: {_num(stats.panic)} in flight over {_num(scaling.panic_window)} s "
                f"for {stats.ready} ready x {_num(target)}: {desired}"
            )
        else:
            reason = (
                f"panic for {_num(now - (panic_since or now))} s, last burst "
                f"{_num(now - (panic_last or now))} s ago: {_num(stats.panic)} in flight over "
                f"{_num(scaling.panic_window)} s / {_num(target)} each: {desired}; "
                f"no scale-down before {_num(window)} s without a burst"
            )
        reason += _bound_note(max(panic_need, stable_need), desired, high)
    elif stable_want >= current:
        desired = max(stable_want, floor)
        if current == 0 and desired > 0 and requested and stable_want == 0:
            reason = f"woken by a request: {desired}"
        elif desired > current:
            reason = f"up: {stable_text}: {desired}"
        else:
            reason = f"steady: {stable_text}: {desired}"
        reason += _bound_note(stable_need, desired, high)
    else:
        hold = history[0][1]  # the highest of the window: the figures decrease
        halved = math.ceil(current / 2)
        # Capped at the current count: a figure held from before never scales up here.
        desired = clamp(min(current, max(stable_want, hold, halved, floor)))
        wants = f"{stable_text} wants {stable_want}"
        if desired == current:
            why = (
                f"{hold} wanted within the last {_num(window)} s"
                if hold >= current
                else "only the idle rule goes below 1"
            )
            reason = f"holding {desired}: {wants}; {why}"
        elif desired == max(stable_want, floor):
            reason = f"down: {stable_text}: {desired}"
        elif desired == hold:
            reason = f"down to {desired}, the most wanted within the last {_num(window)} s: {wants}"
        else:
            reason = f"down by half at most: {wants}: {desired}"

    return Decision(
        desired=desired,
        state=ScalerState(
            desired=desired,
            hub_replicas=hub,
            panic_since=panic_since,
            panic_last=panic_last,
            history=history,
        ),
        reason=reason,
    )


def _without_data(
    *, hub: int, clamp: Callable[[int], int], requested: bool, scaling: LocalScaling
) -> Decision:
    desired = clamp(hub)
    if desired == 0 and requested and clamp(1) > 0:
        desired = clamp(1)
        reason = f"woken by a request, no concurrency data yet: {desired}"
    elif desired != hub:
        reason = (
            f"no concurrency data yet: the hub's {hub}, "
            f"clamped into [{scaling.min_replicas}, {scaling.max_replicas}]: {desired}"
        )
    else:
        reason = f"no concurrency data yet: the hub's {hub}"
    return Decision(
        desired=desired, state=ScalerState(desired=desired, hub_replicas=hub), reason=reason
    )


def _remember(
    history: tuple[tuple[float, int], ...], *, now: float, want: int, current: int, window: float
) -> tuple[tuple[float, int], ...]:
    """The stable figures of the last window that may still be its highest, with ``want`` added.

    An empty history (new data, or a new count from the hub) starts with the current count, so
    the first stable window after it cannot take the count below it.
    """
    kept = [(t, n) for t, n in history if now - t < window] if history else [(now, current)]
    while kept and kept[-1][1] <= want:
        kept.pop()
    kept.append((now, want))
    return tuple(kept)


def _bound_note(need: int, desired: int, high: int) -> str:
    return f" (max {high}; {need} wanted)" if need > desired == high else ""


def _num(value: float) -> str:
    """A figure for a person: whole when it nearly is, else one decimal."""
    rounded = round(value)
    return str(rounded) if abs(value - rounded) < 0.05 else f"{value:.1f}"


# ---------------------------------------------------------------------------------------------
# The holder the agent uses


@dataclass
class _App:
    assignment: AppAssignment
    window: ConcurrencyWindow | None
    state: ScalerState
    tracked_since: float
    desired: int
    reason: str
    ready: int | None = None
    last_request: float | None = None


class Autoscaler:
    """Local scaling for every app at a site: windows and states per app around ``decide``.

    The agent calls ``set_assignments`` with each desired state from the hub (or its cache), the
    ingress calls ``request_seen`` and ``record`` as requests start and end and ``wake`` for a
    request to an app at zero, and the agent's loop calls ``effective`` (or ``tick``) every second
    or two and hands the result to its driver. Not thread-safe: use it from one thread (the
    agent's event loop). Memory is bounded by the assigned apps and their stable windows; what
    the ingress reports for apps not assigned here is ignored.
    """

    def __init__(self, *, bucket: float = BUCKET_SECONDS) -> None:
        self._bucket = bucket
        self._apps: dict[str, _App] = {}

    def set_assignments(self, assignments: Iterable[AppAssignment], now: float) -> None:
        """Track exactly these apps from now on; apps not among them are forgotten.

        A new app gets its first decision at once (no data: the hub's count).
        """
        apps: dict[str, _App] = {}
        for assignment in assignments:
            key = assignment.key
            app = self._apps.get(key)
            if app is None:
                app = _App(
                    assignment=assignment,
                    window=None,
                    state=ScalerState(),
                    tracked_since=now,
                    desired=0,
                    reason="",
                )
                app.window = self._window_for(assignment, None)
                self._decide(app, now)
            else:
                app.assignment = assignment
                app.window = self._window_for(assignment, app.window)
            apps[key] = app
        self._apps = apps

    def record(self, key: str, now: float, in_flight: float) -> None:
        """``in_flight`` requests for ``key`` are in flight from ``now`` on."""
        app = self._apps.get(key)
        if app is not None and app.window is not None:
            app.window.record(now, in_flight)

    def request_seen(self, key: str, now: float) -> None:
        """A request for ``key`` arrived: the idle clock restarts."""
        app = self._apps.get(key)
        if app is not None:
            app.last_request = now

    def wake(self, key: str, now: float) -> bool:
        """A request arrived for ``key``; True when this took the app from 0 to 1 or more.

        The activator calls it for a request to an app with no replica here, then waits for a
        ready one. False for an app not assigned here, a fixed one, one already running, or one
        whose bounds keep it at 0 (``max_replicas`` 0: the request must go elsewhere).
        """
        app = self._apps.get(key)
        if app is None:
            return False
        app.last_request = now
        if app.assignment.scaling is None or app.desired > 0:
            return False
        self._decide(app, now)
        return app.desired > 0

    def tick(self, now: float, ready: Mapping[str, int] | None = None) -> dict[str, int]:
        """Decide every app's count now; fixed apps get the hub's ``replicas``.

        ``ready`` is ready replicas per ``tenant/app`` (the agent's ``ready_counts``); for an app
        missing from it the last given count is used, or the last decision when none was given.
        """
        counts: dict[str, int] = {}
        for key, app in self._apps.items():
            if ready is not None and key in ready:
                app.ready = ready[key]
            self._decide(app, now)
            counts[key] = app.desired
        return counts

    def effective(
        self,
        assignments: Sequence[AppAssignment],
        now: float,
        ready: Mapping[str, int] | None = None,
    ) -> list[AppAssignment]:
        """``assignments`` with ``replicas`` set to the counts decided now: what the driver runs.

        Tracks exactly these apps (``set_assignments``), then decides (``tick``).
        """
        self.set_assignments(assignments, now)
        counts = self.tick(now, ready)
        return [
            a if a.replicas == counts[a.key] else a.model_copy(update={"replicas": counts[a.key]})
            for a in assignments
        ]

    def desired(self, key: str) -> int | None:
        """The last decided count for ``key``; None for an app not assigned here."""
        app = self._apps.get(key)
        return None if app is None else app.desired

    def state(self, key: str) -> ScalerState | None:
        """The scaler's state for ``key``; None for an app not assigned here."""
        app = self._apps.get(key)
        return None if app is None else app.state

    def explain(self, key: str) -> str:
        """The last decision for ``key`` in one line, for logs."""
        app = self._apps.get(key)
        if app is None:
            return f"{key}: not assigned to this site"
        return f"{key}: {app.desired} replicas: {app.reason}"

    def _window_for(
        self, assignment: AppAssignment, window: ConcurrencyWindow | None
    ) -> ConcurrencyWindow | None:
        scaling = assignment.scaling
        if scaling is None:
            return None
        retention = max(scaling.stable_window, scaling.panic_window)
        if window is None:
            return ConcurrencyWindow(retention, bucket=self._bucket)
        window.retention = retention
        return window

    def _decide(self, app: _App, now: float) -> None:
        assignment = app.assignment
        scaling = assignment.scaling
        if scaling is None or app.window is None:
            stable = panic = None
        else:
            stable = app.window.average(now, scaling.stable_window)
            panic = app.window.average(now, scaling.panic_window)
        if app.ready is not None:
            ready = app.ready
        elif app.state.desired is not None:
            ready = app.state.desired
        else:
            ready = assignment.replicas
        stats = WindowStats(
            stable=stable,
            panic=panic,
            ready=ready,
            last_request=app.last_request,
            tracked_since=app.tracked_since,
        )
        decision = decide(now, assignment, stats, app.state)
        app.state, app.desired, app.reason = decision.state, decision.desired, decision.reason
