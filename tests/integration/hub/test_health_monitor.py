"""Site phases from heartbeats in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from edgefleet.hub.health_monitor import HealthMonitor
from edgefleet.hub.heartbeats import HeartbeatBuffer
from edgefleet.hub.store import Store
from edgefleet.model import SitePhase
from tests.factories import make_site


def test_a_site_whose_agent_cannot_run_replicas_is_unreachable_until_it_can(store: Store) -> None:
    store.objects.put(make_site("paris"))
    store.objects.put(make_site("lyon"))
    buffer = HeartbeatBuffer(store)
    monitor = HealthMonitor(store, buffer, grace=30.0, on_change=lambda: None)

    buffer.beat("paris", 1, None)
    buffer.beat("lyon", 1, "the kubernetes API at https://127.0.0.1:6443 does not answer")
    assert monitor.check(buffer.recent(), buffer.recent_problems())
    phases = {s.metadata.name: s.status for s in store.objects.list_sites()}
    assert phases["paris"].phase == SitePhase.READY
    assert phases["lyon"].phase == SitePhase.UNREACHABLE
    assert "does not answer" in (phases["lyon"].message or "")

    # Written to the store: another hub (or this one after a restart) sees the same.
    asyncio.run(buffer.flush())
    assert not monitor.check({}, {})
    assert store.observed.heartbeat_problems() == {
        "lyon": "the kubernetes API at https://127.0.0.1:6443 does not answer"
    }

    # A status report keeps the problem; a heartbeat without one clears it.
    buffer.beat("lyon", 2, buffer.problem("lyon"))
    assert not monitor.check(buffer.recent(), buffer.recent_problems())
    buffer.beat("lyon", 2, None)
    assert monitor.check(buffer.recent(), buffer.recent_problems())
    assert store.objects.get_site("lyon").status.phase == SitePhase.READY
