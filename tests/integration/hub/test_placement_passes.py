"""Placement passes one right after another, before the hub's picture of the fleet has taken
the first one's writes back from the store: the second writes and announces nothing again."""

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
        # The picture still holds the app unplaced: the feed has not been read since.
        assert ("demo", "shop") not in hub.fleet.shares
        assert await hub.placement.reconcile_async() == set()
        # Once the picture shows the write, it is what the next pass starts from.
        await hub.follower.poll()
        assert ("demo", "shop") in hub.fleet.shares
        assert await hub.placement.reconcile_async() == set()

    asyncio.run(passes())
    placed = [e for e in hub.store.events.list(kind="App", name="shop") if e.reason == "Placed"]
    assert len(placed) == 1, [e.message for e in placed]
    assert hub.store.objects.get_app("demo", "shop").status.observed_generation == 1
