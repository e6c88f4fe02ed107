"""The simulated driver: replicas as records that start, become ready, stop and fail."""

from __future__ import annotations

from collections.abc import Callable

from edgefleet.agent.drivers.simulated import SimulatedDriver
from edgefleet.model import AppAssignment, ProcessWorkload


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Timer:
    """Calls nothing by itself: the test runs what is due."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.due: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        self.due.append((self.clock.now + delay, fn))

    def run_due(self) -> None:
        now = self.clock.now
        for at, fn in [d for d in self.due if d[0] <= now]:
            self.due.remove((at, fn))
            fn()


def assignment(replicas: int, generation: int = 1) -> AppAssignment:
    return AppAssignment(
        tenant="demo",
        app="hello",
        generation=generation,
        replicas=replicas,
        workload=ProcessWorkload(command="x"),
    )


def states(driver: SimulatedDriver) -> list[tuple[int, str, bool, int]]:
    return [
        (r.index, r.state, r.ready, r.generation) for r in driver.observe().get("demo/hello", [])
    ]


def test_replicas_start_become_ready_and_stop() -> None:
    clock = Clock()
    timer = Timer(clock)
    changes: list[float] = []
    driver = SimulatedDriver("paris", ready_delay=2.0, timer=timer, clock=clock)
    driver.start(lambda: changes.append(clock.now))
    driver.converge([assignment(2)])
    assert states(driver) == [(0, "starting", False, 1), (1, "starting", False, 1)]
    assert changes == [100.0]
    clock.now = 102.0
    timer.run_due()
    assert states(driver) == [(0, "running", True, 1), (1, "running", True, 1)]
    assert changes == [100.0, 102.0]  # told when they became ready
    assert driver.counts() == {"demo/hello": (2, 2)}
    driver.converge([assignment(1)])  # the highest index goes first
    assert states(driver) == [(0, "running", True, 1)]
    driver.converge([assignment(1, generation=2)])  # a new generation replaces it
    assert states(driver) == [(0, "starting", False, 2)]
    driver.converge([])
    assert driver.observe() == {}


def test_failing_replicas_crash_until_told_to_recover() -> None:
    clock = Clock()
    timer = Timer(clock)
    driver = SimulatedDriver("paris", ready_delay=1.0, timer=timer, clock=clock)
    driver.start(lambda: None)
    driver.converge([assignment(1)])
    clock.now += 1
    driver.fail("demo/hello")
    assert states(driver) == [(0, "backoff", False, 1)]
    driver.converge([assignment(2)])  # new ones start failed too
    assert [s for _, s, _, _ in states(driver)] == ["backoff", "backoff"]
    driver.fail("demo/hello", failing=False)
    clock.now += 1
    assert [r for _, _, r, _ in states(driver)] == [True, True]
    assert driver.problem() is None
    driver.set_problem("the simulated cluster is away")
    assert driver.problem() == "the simulated cluster is away"
