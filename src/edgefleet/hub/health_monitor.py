"""The site health monitor: turns heartbeats into site phases (``edgefleet.hub.health``).

It keeps every site's last heartbeat in memory and looks only at the sites that may have changed
phase: those heard from since the last look (Pending or Unreachable to Ready, a problem said or
cleared) and those whose deadline passed (last heartbeat plus the grace, or creation plus the
Pending allowance for a site never heard from), kept in a heap. So a heartbeat costs the monitor
a dict write and a heap push, and a look costs the sites it finds, not the fleet.

Heartbeats reach whichever hub the agent talks to. The leader takes those of its own process as
they come (``HeartbeatBuffer.listen``); before it calls a site silent, it reads that site's last
beat from the store (``ObservedStore.beats_of``), where the hub that took it wrote it within a
second: so a site beating at another hub stays Ready, and the leader reads beats of the few
sites that fell silent here or are not Ready, not every beat of the fleet.

A hub too busy to read its sockets (an app starting at ten thousand sites at once) takes their
heartbeats late: silence it caused is not the sites'. The monitor measures how late its own
passes run (the event loop's lag, which is how long a heartbeat waits to be read) and gives each
silent site the stalls that fell after its last heartbeat, up to one more grace (``Stalls``). A
site that dies after the hub's stalls is told within the grace however busy the hub was before
(21 s at 10,000 sites); one silent through them, within two graces at most.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from edgefleet.hub.fleet import FleetChanges, FleetState
from edgefleet.hub.health import PENDING_FACTOR, site_phase
from edgefleet.hub.heartbeats import HeartbeatBuffer
from edgefleet.hub.lanes import Lane
from edgefleet.hub.store import Store, utcnow
from edgefleet.model import Event, SitePhase

log = logging.getLogger(__name__)


STALL_FLOOR = 0.25
"""A pass later than this is a stall; less is the jitter of a busy machine, and counting it
would add up to seconds of credit over a grace."""


class Stalls:
    """When and how long the hub's loop ran late (see the module). Times are seconds since the
    epoch, as heartbeats' are."""

    def __init__(self) -> None:
        self._stalls: deque[tuple[float, float]] = deque()
        """(when the stall ended, how long it lasted), oldest first."""

    def add(self, ended: float, lag: float) -> None:
        """A pass that ran ``lag`` seconds late, seen at ``ended``."""
        if lag > STALL_FLOOR:
            self._stalls.append((ended, lag))

    def forget(self, before: float) -> None:
        """Drop the stalls that ended before ``before``."""
        while self._stalls and self._stalls[0][0] < before:
            self._stalls.popleft()

    def credit(self, since: float, now: float, grace: float) -> float:
        """Seconds the hub stalled between ``since`` (a site's last heartbeat) and ``now``: the
        time its silence is not the site's, at most ``grace``."""
        total = 0.0
        for ended, lag in reversed(self._stalls):
            if ended <= since:
                break
            total += min(ended, now) - max(ended - lag, since)
        return min(grace, max(0.0, total))


class HealthMonitor:
    """Turns heartbeats into site phases; the phases it writes reach every hub by the feed."""

    def __init__(
        self,
        store: Store,
        fleet: FleetState,
        heartbeats: HeartbeatBuffer,
        *,
        grace: Callable[[], float],
        period: float = 1.0,
    ) -> None:
        self._store = store
        self._lane = Lane("health")
        self._fleet = fleet
        self._grace = grace
        self._period = period
        self._beats: dict[str, datetime] = {}
        self._problems: dict[str, str | None] = {}
        self._due: list[tuple[datetime, str]] = []
        """Heap of (when the site's phase may next change by silence, site)."""
        self._look: set[str] = set()
        """Sites to look at on the next pass."""
        self._phases: dict[str, SitePhase] = {}
        """The phase last written per site (the feed brings it to the picture a poll later)."""
        self._grace_used = -1.0
        self._loaded = False
        self.is_leader: Callable[[], bool] = lambda: True
        self.looked = 0
        """Sites looked at in the last pass (for tests and metrics)."""
        self.stalls = Stalls()
        heartbeats.listen(self.note)

    # -- what comes in ---------------------------------------------------------------------------

    def note(self, site: str, at: datetime, problem: str | None) -> None:
        """A heartbeat: remember it, look at the site on the next pass (no I/O)."""
        before = self._beats.get(site)
        if before is not None and before >= at:
            return
        self._beats[site] = at
        self._problems[site] = problem
        self._look.add(site)
        if self._grace_used > 0:
            heapq.heappush(self._due, (at + timedelta(seconds=self._grace_used), site))

    def follow(self, changes: FleetChanges) -> None:
        """New sites get looked at, deleted ones forgotten (a ``FeedFollower`` listener); the
        phases this monitor wrote come back this way too, and need nothing."""
        if changes.reloaded:
            self._loaded = False
        for name in changes.sites:
            if name in self._fleet.sites:
                if name not in self._phases:
                    self._phases[name] = self._fleet.sites[name].status.phase
                    self._look.add(name)
                    self._schedule(name)
            else:
                self._beats.pop(name, None)
                self._problems.pop(name, None)
                self._phases.pop(name, None)

    # -- passes ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Look every period while this hub leads."""
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self._period)
            woke = time.monotonic()
            self.stalls.add(time.time(), woke - asked - self._period)
            if not self.is_leader():
                self._loaded = False  # another hub wrote phases meanwhile
                continue
            try:
                await self.step()
            except Exception:
                log.exception("health check failed")

    async def step(self) -> bool:
        """One pass: read what others wrote, then look; True when some site changed phase."""
        if not self._loaded:
            beats, problems = await self._lane.run(self._read_all)
            for site, at in beats.items():
                self.note(site, at, problems.get(site))
            self._phases = {n: s.status.phase for n, s in self._fleet.sites.items()}
            self._look |= set(self._fleet.sites)
            self._loaded = True
            self._grace_used = -1.0
        now = utcnow()
        # A site silent for two graces is Unreachable whatever the stalls: older ones count no more.
        self.stalls.forget(now.timestamp() - 2 * max(self._grace_used, 0.0))
        # Sites silent here, and sites not Ready: another hub may have heard from them.
        silent = self._silent(now) + [
            name for name, phase in self._phases.items() if phase != SitePhase.READY
        ]
        if silent:
            # Before a site is called silent, the store may hold a beat another hub took.
            for site, (at, problem) in (
                await self._lane.run(self._store.observed.beats_of, silent)
            ).items():
                self.note(site, at, problem)
        changes = self.check(now)
        if not changes:
            return False
        await self._lane.run(self._write, changes)
        return True

    def _read_all(self) -> tuple[dict[str, datetime], dict[str, str]]:
        return self._store.observed.last_heartbeats(), self._store.observed.heartbeat_problems()

    def _silent(self, now: datetime) -> list[str]:
        """Sites whose last beat known here is older than the grace (they are looked at now)."""
        if self._grace_used <= 0:
            return []
        silent = []
        later: list[tuple[datetime, str]] = []
        while self._due and self._due[0][0] <= now:
            _, site = heapq.heappop(self._due)
            last = self._beats.get(site)
            if last is not None:
                grace = timedelta(seconds=self._grace_used)
                if last + grace > now:
                    continue  # heard from since: that beat has its own deadline in the heap
                deadline = last + grace + self._credit(last, now)
                if deadline > now:
                    later.append((deadline, site))  # the hub's stalls gave it more time
                    continue
            self._look.add(site)
            if site in self._fleet.sites:
                silent.append(site)
        for item in later:
            heapq.heappush(self._due, item)
        return silent

    def _credit(self, last: datetime, now: datetime) -> timedelta:
        """How long the hub stalled since a site's beat at ``last`` (at most a grace): silence
        that is the hub's, not the site's."""
        return timedelta(
            seconds=self.stalls.credit(last.timestamp(), now.timestamp(), self._grace_used)
        )

    def _schedule(self, site: str) -> None:
        grace = timedelta(seconds=self._grace_used)
        last = self._beats.get(site)
        if last is not None:
            heapq.heappush(self._due, (last + grace, site))
            return
        found = self._fleet.sites.get(site)
        if found is not None and found.metadata.creation_timestamp is not None:
            heapq.heappush(
                self._due, (found.metadata.creation_timestamp + grace * PENDING_FACTOR, site)
            )

    def check(self, now: datetime) -> dict[str, tuple[SitePhase, str | None, SitePhase]]:
        """The sites whose phase changes now: (new phase, why, phase before) each (no I/O)."""
        grace_s = self._grace()
        if grace_s != self._grace_used:
            # The grace follows the fleet's size: every deadline moves with it.
            self._grace_used = grace_s
            self._due = []
            for name in self._fleet.sites:
                self._schedule(name)
            self._look |= set(self._fleet.sites)
        grace = timedelta(seconds=grace_s)
        self._silent(now)
        look, self._look = self._look, set()
        self.looked = len(look)
        out: dict[str, tuple[SitePhase, str | None, SitePhase]] = {}
        for name in look:
            found = self._fleet.sites.get(name)
            if found is None:
                continue
            last = self._beats.get(name)
            phase, message = site_phase(
                last_heartbeat=last,
                # Silence the hub's own stalls caused is not the site's.
                now=now if last is None else now - self._credit(last, now),
                grace=grace,
                created=found.metadata.creation_timestamp,
                problem=self._problems.get(name),
            )
            was = self._phases.get(name) or found.status.phase
            if phase != was:
                out[name] = (phase, message, was)
                self._phases[name] = phase
        return out

    def _write(self, changes: Mapping[str, tuple[SitePhase, str | None, SitePhase]]) -> None:
        now = utcnow()
        self._store.objects.set_site_phases(
            {name: (phase.value, message) for name, (phase, message, _) in changes.items()}
        )
        events = []
        for name, (phase, message, was) in sorted(changes.items()):
            before = was.value
            events.append(
                Event(
                    time=now,
                    kind="Site",
                    name=name,
                    reason=phase.value,
                    message=f"{before} -> {phase.value}" + (f": {message}" if message else ""),
                    type="Warning" if phase == SitePhase.UNREACHABLE else "Normal",
                )
            )
        self._store.events.add(events)
        if len(changes) <= 20:
            for name, (phase, _, was) in sorted(changes.items()):
                log.info("site %s: %s -> %s", name, was.value, phase.value)
        else:
            counts: dict[str, int] = {}
            for phase, _, _ in changes.values():
                counts[phase.value] = counts.get(phase.value, 0) + 1
            log.info(
                "%d sites changed phase: %s",
                len(changes),
                ", ".join(f"{n} {p}" for p, n in sorted(counts.items())),
            )
