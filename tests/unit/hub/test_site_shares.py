"""Each site's share of the routing table, sent whole once and then as deltas: after any sequence
of changes, what an agent holds (the first share plus every delta) equals the share computed
afresh; a change reaches only the shares it touches; deltas come less often in a big fleet."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgefleet.hub.fleet import FleetChanges, FleetState
from edgefleet.hub.routing import RoutingChanges, RoutingState
from edgefleet.hub.site_routes import SiteShares
from edgefleet.hub.store import ReplicaCount, SiteShare
from edgefleet.hub.watch import Doorbells
from edgefleet.model import RoutingDelta, RoutingTable, SitePhase, routing_update
from edgefleet.routing.delta import apply_delta
from edgefleet.routing.share import ShareParams
from tests.unit.hub.test_routing_state import APPS, CHANGE, SITES, app, apply, site

PARAMS = ShareParams(neighbourhood=2, nearest=1)


class Failures(logging.Handler):
    """Errors the routing table logs of its followers (a share that failed to follow)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record)


def comparable(table: RoutingTable) -> dict[str, Any]:
    """A share as a set of facts (versions and list order aside)."""
    dumped = table.model_dump(by_alias=True)
    return {
        "sites": sorted(dumped["sites"], key=lambda s: s["name"]),
        "apps": sorted(
            (
                {**a, "endpoints": sorted(a["endpoints"], key=lambda e: e["site"])}
                for a in dumped["apps"]
            ),
            key=lambda a: (a["tenant"], a["app"]),
        ),
        "keys": dumped["signingKeys"],
        "revoked": dumped["revokedCredentials"],
        "regions": sorted(dumped["regions"], key=lambda r: r["name"]),
    }


def afresh(routing: RoutingState, name: str) -> RoutingTable:
    """The share of ``name`` as a hub that never sent it anything computes it."""
    fresh = SiteShares(routing, Doorbells(), PARAMS, every=1e-6, rate=1e12)
    fresh._published(routing.table, RoutingChanges(everything=True))
    update = routing_update(fresh.answer(name, "") or b"")
    assert isinstance(update, RoutingTable)
    return update


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHANGE, max_size=20))
# A tenant's residency lifted: an endpoint it kept out of a share serves there now.
@example(
    [
        ("site", "s2", SitePhase.READY, 8),
        ("tenant", "acme", "residency"),
        ("share", ("acme", "web"), {"s2": (0, True)}),
        ("tenant", "acme", None),
    ]
)
# A site moved out of the only region an app may run in: its endpoint serves there no more.
@example(
    [
        ("app", ("beta", "shop"), None),
        ("share", ("beta", "shop"), {"s0": (0, True)}),
        ("tenant", "beta", "residency"),
        ("site", "s0", SitePhase.READY, 8),
    ]
)
def test_first_share_and_deltas_equal_the_share_afresh(changes: list[tuple[Any, ...]]) -> None:
    async def scenario() -> None:
        failures = Failures()
        logging.getLogger("edgefleet.hub.routing").addHandler(failures)
        try:
            await steps()
        finally:
            logging.getLogger("edgefleet.hub.routing").removeHandler(failures)
        assert not failures.seen, failures.seen[0].getMessage()

    async def steps() -> None:
        fleet = FleetState()
        for name in SITES[:4]:
            fleet.sites[name] = site(name, SitePhase.READY, 5)
        fleet.apps[APPS[0]] = app(APPS[0], None)
        routing = RoutingState(fleet)
        shares = SiteShares(routing, Doorbells(), PARAMS, every=1e-6, rate=1e12)
        await routing.rebuild()
        held: dict[str, RoutingTable] = {}
        for change in changes:
            routing.follow(apply(fleet, change))
            await routing.rebuild()
            for name in fleet.sites:
                mine = held.get(name)
                body = shares.answer(name, mine.version if mine else "")
                if body is not None:
                    update = routing_update(body)
                    if isinstance(update, RoutingDelta):
                        assert mine is not None and update.since == mine.version
                        held[name] = apply_delta(mine, update).model_copy(
                            update={"version": update.version}
                        )
                    else:
                        held[name] = update
                assert comparable(held[name]) == comparable(afresh(routing, name)), change

    asyncio.run(scenario())


def _fleet(count: int) -> FleetState:
    fleet = FleetState()
    for i in range(count):
        made = site(SITES[0], SitePhase.READY, 5).model_copy(deep=True)
        made.metadata.name = f"n{i:03d}"
        made.spec.location.lat = -60.0 + (i % 12) * 10.0
        made.spec.location.lon = -170.0 + (i // 12) * 10.0
        fleet.sites[made.metadata.name] = made
    fleet.apps[APPS[0]] = app(APPS[0], None)
    return fleet


def test_a_report_reaches_only_the_shares_near_it() -> None:
    async def scenario() -> None:
        fleet = _fleet(100)
        routing = RoutingState(fleet)
        bells = Doorbells()
        shares = SiteShares(routing, bells, PARAMS, every=1e-6, rate=1e12)
        await routing.rebuild()
        held = {name: routing_update(shares.answer(name, "") or b"") for name in fleet.sites}
        # One site starts serving the app: its neighbours and the sites that now find it
        # nearest learn of it; the far side of the world is not asked to recompute anything.
        fleet.shares[APPS[0]] = {"n000": SiteShare(1)}
        fleet._report("n000", {APPS[0]: ReplicaCount(running=1, ready=1)})
        routing.follow(
            FleetChanges(replicas={"n000"}, replica_apps={APPS[0]}, placements={APPS[0]})
        )
        before = shares.sections
        await routing.rebuild()
        news = {name: shares.answer(name, table.version) for name, table in held.items()}
        told = {name for name, body in news.items() if body is not None}
        assert "n000" in told
        # Every site had no endpoint of the app: each finds n000 its nearest, so each is told,
        # with a delta naming the app and n000's record only.
        for name in told:
            delta = routing_update(news[name] or b"")
            assert isinstance(delta, RoutingDelta)
            assert [(a.tenant, a.app) for a in delta.apps] == [APPS[0]]
            assert {s.name for s in delta.sites} <= {"n000"}
        # A second report at n000 that changes nothing of its endpoint tells no one anything.
        fleet._report("n000", {APPS[0]: ReplicaCount(running=1, ready=1)})
        routing.follow(FleetChanges(replicas={"n000"}, replica_apps={APPS[0]}))
        await routing.rebuild()
        assert before <= shares.sections
        versions = {name: routing_update(news[name] or b"").version for name in told}
        assert all(shares.answer(name, v) is None for name, v in versions.items())

    asyncio.run(scenario())


def test_deltas_come_less_often_as_the_fleet_grows() -> None:
    async def scenario() -> None:
        fleet = _fleet(60)
        routing = RoutingState(fleet)
        shares = SiteShares(routing, Doorbells(), PARAMS, every=1.0, rate=20.0)
        await routing.rebuild()
        assert shares.every == 1.0
        for name in list(fleet.sites)[:10]:
            shares.answer(name, "")
        assert shares.every == 1.0
        for name in fleet.sites:
            shares.answer(name, "")
        assert shares.every == 60 / 20.0

    asyncio.run(scenario())


def test_rate_and_interval_must_be_positive() -> None:
    routing = RoutingState(FleetState())
    for every, rate in ((0.0, 1.0), (1.0, 0.0), (-1.0, 5.0)):
        try:
            SiteShares(routing, Doorbells(), every=every, rate=rate)
        except ValueError as exc:
            assert "must be > 0" in str(exc)
        else:
            raise AssertionError(f"every={every} rate={rate} accepted")
