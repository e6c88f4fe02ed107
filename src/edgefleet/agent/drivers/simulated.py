"""The simulated driver: replicas that exist only as records, for fleets of thousands of sites.

A replica "starts" when the desired state asks for it, becomes ready ``ready_delay`` seconds
later, and stops when it is no longer wanted. Nothing runs: the point is to drive the hub with
sites that behave like real ones on the wire (``edgefleet sim``, or an agent started with
``--driver simulated``). A replica can be told to fail (``fail``): it crashes and stays in
backoff until told to recover, so placement and health can be exercised too.

Readiness is timed by a ``Timer``: one thread timer per replica start for a single agent
(``ThreadTimer``), or the simulator's event loop for thousands of sites (``LoopTimer``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from edgefleet.model import AppAssignment, ReplicaState


class Timer(Protocol):
    """Calls a function later, from any thread."""

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` in about ``delay`` seconds."""


class ThreadTimer:
    """A daemon thread timer per call: right for one agent's few replicas."""

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """See ``Timer``."""
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        timer.start()


class LoopTimer:
    """Calls on an event loop: thousands of simulated sites share one loop and no thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """See ``Timer`` (thread-safe). On the loop's own thread (the simulator's sites take
        their desired states there) the call is scheduled directly, without waking the loop
        through its self-pipe."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.loop.call_later(delay, fn)
        else:
            self.loop.call_soon_threadsafe(self.loop.call_later, delay, fn)


@dataclass
class _Replica:
    index: int
    generation: int
    started: float
    """Monotonic time of the start."""
    ready_at: float
    failed: bool = False


class SimulatedDriver:
    """Replicas as records (see the module). Thread-safe."""

    def __init__(
        self,
        site: str,
        *,
        ready_delay: float = 1.0,
        timer: Timer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.site = site
        self.ready_delay = ready_delay
        """Seconds from a replica's start to its readiness."""
        self._timer = timer if timer is not None else ThreadTimer()
        self._clock = clock
        self._lock = threading.Lock()
        self._replicas: dict[str, dict[int, _Replica]] = {}
        self._failing: set[str] = set()
        self._on_change: Callable[[], None] = lambda: None
        self._problem: str | None = None
        self.converges = 0
        """Converge calls so far."""

    # -- the Driver protocol ---------------------------------------------------------------------

    def start(self, on_change: Callable[[], None]) -> None:
        """Nothing runs before a simulated agent starts: nothing to adopt."""
        self._on_change = on_change

    def converge(self, assignments: Sequence[AppAssignment]) -> None:
        """Start what is missing, stop what is surplus or of an older generation (highest index
        first), as the process driver does."""
        now = self._clock()
        changed = False
        with self._lock:
            self.converges += 1
            wanted = {a.key: a for a in assignments}
            for key in list(self._replicas):
                if key not in wanted:
                    del self._replicas[key]
                    changed = True
            for key, assignment in wanted.items():
                have = self._replicas.setdefault(key, {})
                for index in [i for i, r in have.items() if r.generation != assignment.generation]:
                    del have[index]  # replaced: the new one starts below
                    changed = True
                for index in sorted(have, reverse=True)[: max(0, len(have) - assignment.replicas)]:
                    del have[index]
                    changed = True
                for index in range(assignment.replicas):
                    if index not in have:
                        have[index] = _Replica(
                            index=index,
                            generation=assignment.generation,
                            started=now,
                            ready_at=now + self.ready_delay,
                            failed=key in self._failing,
                        )
                        changed = True
                if not have:
                    del self._replicas[key]
        if changed:
            self._on_change()
            # Readiness comes later: say so then, once for the whole batch.
            self._timer.call_later(self.ready_delay, self._on_change)

    def observe(self) -> dict[str, list[ReplicaState]]:
        """The replicas as they are now: starting until ``ready_delay`` passed, then running and
        ready; a failed one in backoff."""
        now = self._clock()
        wall = time.time()
        out: dict[str, list[ReplicaState]] = {}
        with self._lock:
            for key, replicas in self._replicas.items():
                tenant, _, app = key.partition("/")
                states = []
                for index, r in sorted(replicas.items()):
                    ready = not r.failed and now >= r.ready_at
                    states.append(
                        ReplicaState(
                            id=f"{tenant}-{app}-{index}",
                            index=index,
                            state="backoff" if r.failed else ("running" if ready else "starting"),
                            ready=ready,
                            restarts=1 if r.failed else 0,
                            started_at=datetime.fromtimestamp(wall - (now - r.started), UTC),
                            generation=r.generation,
                        )
                    )
                out[key] = states
        return out

    def problem(self) -> str | None:
        """What ``set_problem`` said, if anything."""
        return self._problem

    def logs(self, tenant: str, app: str, *, replica: str | None = None, tail: int = 100) -> str:
        """A simulated replica writes no log; say so."""
        return f"# simulated site {self.site}: replicas of {tenant}/{app} write no logs\n"

    def close(self) -> None:
        """Nothing to leave running."""

    def stop_all(self) -> None:
        """Forget every replica."""
        with self._lock:
            self._replicas.clear()
        self._on_change()

    # -- what a test or the simulator can make happen ----------------------------------------------

    def fail(self, key: str, failing: bool = True) -> None:
        """Make ``key``'s replicas crash (and new ones start crashed), or recover."""
        now = self._clock()
        with self._lock:
            if failing:
                self._failing.add(key)
            else:
                self._failing.discard(key)
            for r in self._replicas.get(key, {}).values():
                if r.failed != failing:
                    r.failed = failing
                    r.started, r.ready_at = now, now + (0.0 if failing else self.ready_delay)
        self._on_change()
        if not failing:
            self._timer.call_later(self.ready_delay, self._on_change)

    def set_problem(self, problem: str | None) -> None:
        """Say (in heartbeats) that replicas cannot be run now, or no longer."""
        self._problem = problem

    def counts(self) -> dict[str, tuple[int, int]]:
        """(replicas, ready) per app key, without building states."""
        now = self._clock()
        with self._lock:
            return {
                key: (
                    len(replicas),
                    sum(1 for r in replicas.values() if not r.failed and now >= r.ready_at),
                )
                for key, replicas in self._replicas.items()
            }
