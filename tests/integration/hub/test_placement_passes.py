"""Placement passes one right after another: a pass brings its writes into the hub's picture of
the fleet before the next reads it, so the second writes and announces nothing again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgefleet.hub.runtime import Hub, HubConfig
from tests.factories import make_app, make_site


def test_a_pass_right_after_another_does_not_place_again(tmp_path: Path) -> None:
    hub = Hub.build(HubConfig(db=f"sqlite:///{tmp_path / 'hub.db'}", dns_port=-1))

    async def passes() -> None:
        hub.store.objects.put(make_site("paris"))
        hub.store.objects.put(make_app("shop", placement={"replicas": 1}))
        await hub.follower.load()
        assert await hub.placement.reconcile_async() == {"paris"}
        # The pass took its own writes into the picture, without waiting for the feed's poll.
        assert ("demo", "shop") in hub.fleet.shares
        assert hub.fleet.apps[("demo", "shop")].status.observed_generation == 1
        assert await hub.placement.reconcile_async() == set()
        assert await hub.placement.reconcile_async() == set()

    asyncio.run(passes())
    placed = [e for e in hub.store.events.list(kind="App", name="shop") if e.reason == "Placed"]
    assert len(placed) == 1, [e.message for e in placed]
    assert hub.store.objects.get_app("demo", "shop").status.observed_generation == 1
