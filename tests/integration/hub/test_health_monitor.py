"""Site phases from heartbeats, on SQLite and PostgreSQL: the monitor keeps beats in memory, looks
only at the sites that may have changed, and follows beats other hubs wrote."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from edgefleet.hub.fleet import FeedFollower, FleetState
from edgefleet.hub.health_monitor import HealthMonitor, Stalls
from edgefleet.hub.heartbeats import HeartbeatBuffer
from edgefleet.hub.store import Store, utcnow
from edgefleet.model import SitePhase
from tests.factories import make_site


def phases(store: Store) -> dict[str, SitePhase]:
    return {s.metadata.name: s.status.phase for s in store.objects.list_sites()}


def test_a_site_whose_agent_cannot_run_replicas_is_unreachable_until_it_can(store: Store) -> None:
    async def scenario() -> None:
        store.objects.put(make_site("paris"))
        store.objects.put(make_site("lyon"))
        fleet = FleetState()
        follower = FeedFollower(store, fleet)
        await follower.load()
        buffer = HeartbeatBuffer(store)
        monitor = HealthMonitor(store, fleet, buffer, grace=lambda: 30.0)
        follower.listen(monitor.follow)

        buffer.beat("paris", 1, None)
        buffer.beat("lyon", 1, "the kubernetes API at https://127.0.0.1:6443 does not answer")
        assert await monitor.step()
        sites = {s.metadata.name: s.status for s in store.objects.list_sites()}
        assert sites["paris"].phase == SitePhase.READY
        assert sites["lyon"].phase == SitePhase.UNREACHABLE
        assert "does not answer" in (sites["lyon"].message or "")
        await follower.poll()

        # Written to the store: another hub (or this one after a restart) sees the same.
        await buffer.flush()
        assert not await monitor.step()
        assert store.observed.heartbeat_problems() == {
            "lyon": "the kubernetes API at https://127.0.0.1:6443 does not answer"
        }

        # A status report keeps the problem; a heartbeat without one clears it.
        buffer.beat("lyon", 2, buffer.problem("lyon"))
        assert not await monitor.step()
        buffer.beat("lyon", 2, None)
        assert await monitor.step()
        assert store.objects.get_site("lyon").status.phase == SitePhase.READY

    asyncio.run(scenario())


def test_the_monitor_looks_only_at_sites_that_beat_or_fell_due(store: Store) -> None:
    async def scenario() -> None:
        for k in range(50):
            store.objects.put(make_site(f"site-{k}"))
        fleet = FleetState()
        follower = FeedFollower(store, fleet)
        await follower.load()
        buffer = HeartbeatBuffer(store)
        monitor = HealthMonitor(store, fleet, buffer, grace=lambda: 30.0)
        follower.listen(monitor.follow)
        for k in range(50):
            buffer.beat(f"site-{k}", 1, None)
        assert await monitor.step()  # the first look takes in every site
        assert set(phases(store).values()) == {SitePhase.READY}
        await follower.poll()
        buffer.beat("site-7", 2, None)
        assert not await monitor.step()
        assert monitor.looked == 1
        assert not await monitor.step()
        assert monitor.looked == 0
        # Silence past the grace: only the silent site is looked at, and found Unreachable.
        for k in range(50):
            if k != 3:
                buffer.beat(f"site-{k}", 3, None)
        monitor.check(utcnow())  # takes in the fresh beats
        later = utcnow() + timedelta(seconds=31)
        for k in range(50):
            if k != 3:
                monitor.note(f"site-{k}", later, None)
        changed = monitor.check(later + timedelta(seconds=0.5))
        assert set(changed) == {"site-3"}
        assert changed["site-3"][0] == SitePhase.UNREACHABLE

    asyncio.run(scenario())


def test_beats_another_hub_wrote_keep_a_site_ready(store: Store, db_url: str) -> None:
    async def scenario() -> None:
        store.objects.put(make_site("paris"))
        fleet = FleetState()
        follower = FeedFollower(store, fleet)
        await follower.load()
        mine = HeartbeatBuffer(store)
        monitor = HealthMonitor(store, fleet, mine, grace=lambda: 30.0)
        assert not await monitor.step()  # nothing heard yet: Pending stays
        other_hub = Store(db_url)
        try:
            theirs = HeartbeatBuffer(other_hub)
            theirs.beat("paris", 1, None)
            await theirs.flush()
        finally:
            other_hub.close()
        assert await monitor.step()
        assert phases(store) == {"paris": SitePhase.READY}

    asyncio.run(scenario())


def test_a_site_is_given_the_stalls_after_its_last_beat_only() -> None:
    stalls = Stalls()
    stalls.add(100.0, 0.1)  # jitter, not a stall
    stalls.add(101.0, 2.5)  # the loop stood still from 98.5 to 101
    stalls.add(105.0, 1.0)  # and from 104 to 105
    # A site last heard from before both is given both.
    assert stalls.credit(90.0, 106.0, grace=10.0) == 3.5
    # One heard from during the first, the part of it after its beat, and the second.
    assert stalls.credit(100.0, 106.0, grace=10.0) == 2.0
    # One heard from after them: nothing (a site that dies after a busy spell is told in a
    # grace, however busy the hub was before).
    assert stalls.credit(105.0, 120.0, grace=10.0) == 0.0
    # Never more than a grace.
    stalls.add(160.0, 50.0)
    assert stalls.credit(90.0, 160.0, grace=21.0) == 21.0
    # Forgotten stalls count no more.
    stalls.forget(170.0)
    assert stalls.credit(90.0, 120.0, grace=10.0) == 0.0


async def paris_watched(
    store: Store, *, grace: float
) -> tuple[FeedFollower, HeartbeatBuffer, HealthMonitor]:
    """Site paris in the store, and a monitor of it that passes every 50 ms."""
    store.objects.put(make_site("paris"))
    fleet = FleetState()
    follower = FeedFollower(store, fleet)
    await follower.load()
    buffer = HeartbeatBuffer(store)
    monitor = HealthMonitor(store, fleet, buffer, grace=lambda: grace, period=0.05)
    follower.listen(monitor.follow)
    return follower, buffer, monitor


def test_a_hub_too_busy_to_read_beats_gives_its_sites_that_time(store: Store) -> None:
    async def scenario() -> None:
        follower, buffer, monitor = await paris_watched(store, grace=3.0)
        buffer.beat("paris", 1, None)
        await buffer.flush()
        assert await monitor.step()
        assert phases(store)["paris"] == SitePhase.READY
        await follower.poll()
        beat = utcnow().timestamp()
        # The hub's loop stood still for 1.5 s after paris's beat: silent for 4 s, paris is
        # not yet called Unreachable (4 - 1.5 is within the grace of 3 s)...
        await asyncio.sleep(2.0)
        monitor.stalls.add(time.time(), 1.5)
        await asyncio.sleep(2.0)
        assert not await monitor.step()
        assert phases(store)["paris"] == SitePhase.READY
        # ... but the credit is the stall's, not forever: a second more and it is.
        await asyncio.sleep(1.0)
        assert monitor.stalls.credit(beat, time.time(), 3.0) == pytest.approx(1.5, abs=0.1)
        assert await monitor.step()
        assert phases(store)["paris"] == SitePhase.UNREACHABLE

    asyncio.run(scenario())


def test_stalls_before_a_sites_last_beat_give_it_no_time(store: Store) -> None:
    async def scenario() -> None:
        follower, buffer, monitor = await paris_watched(store, grace=2.0)
        # The hub stood still for 10 s (a rollout at every site), then heard from paris.
        monitor.stalls.add(time.time(), 10.0)
        await asyncio.sleep(0.05)
        buffer.beat("paris", 1, None)
        await buffer.flush()
        assert await monitor.step()
        await follower.poll()
        assert phases(store)["paris"] == SitePhase.READY
        # paris dies: it is told after the grace, not the grace and the earlier stall.
        await asyncio.sleep(2.5)
        assert await monitor.step()
        assert phases(store)["paris"] == SitePhase.UNREACHABLE

    asyncio.run(scenario())
