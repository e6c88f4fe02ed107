"""The activator and spill-over: the ``route`` decision, and the ingress shell on a fake network."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.ingress import (
    HOLD,
    LOCAL,
    REFUSE,
    SPILL,
    Ingress,
    LocalReplicas,
    Peer,
    route,
    saturation_limit,
)
from edgefleet.model import AppAssignment, LocalScaling, ProcessWorkload, ReplicaState
from tests.unit.agent.test_ingress import echo, replica

KEY = "demo/hello"
HOST = "hello.demo.edge.internal"
LYON = Peer(site="lyon", address="127.0.81.1", port=8080)


def assignment(
    *, target: float = 2.0, threshold: float = 2.0, scaled: bool = True
) -> AppAssignment:
    return AppAssignment(
        tenant="demo",
        app="hello",
        generation=1,
        replicas=0,
        workload=ProcessWorkload(command="edgefleet-hello"),
        scaling=LocalScaling(
            min_replicas=0,
            max_replicas=4,
            target_concurrency=target,
            stable_window=60,
            panic_window=6,
            panic_threshold=threshold,
            idle_timeout=300,
        )
        if scaled
        else None,
    )


# -- the decision ------------------------------------------------------------------------------


def decide(**overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "placed": True,
        "ready": [replica(0)],
        "outstanding": {},
        "saturation": 4,
        "held": 0,
        "hold_limit": 10,
        "can_spill": True,
    }
    arguments.update(overrides)
    return route(**arguments)


def test_route_examples() -> None:
    assert decide() == LOCAL
    assert decide(placed=False, ready=[]) == SPILL
    assert decide(outstanding={"demo-hello-0": 4}) == SPILL
    assert decide(outstanding={"demo-hello-0": 4}, can_spill=False) == LOCAL
    assert decide(outstanding={"demo-hello-0": 4}, saturation=None) == LOCAL
    two = [replica(0), replica(1)]
    assert decide(ready=two, outstanding={"demo-hello-0": 4}) == LOCAL  # one still has room
    assert decide(ready=[]) == HOLD
    assert decide(ready=[], held=10) == SPILL
    assert decide(ready=[], held=10, can_spill=False) == REFUSE


@given(
    placed=st.booleans(),
    ready=st.integers(0, 3),
    load=st.lists(st.integers(0, 10), min_size=3, max_size=3),
    saturation=st.none() | st.integers(1, 8),
    held=st.integers(0, 12),
    can_spill=st.booleans(),
)
def test_route_properties(
    placed: bool,
    ready: int,
    load: list[int],
    saturation: int | None,
    held: int,
    can_spill: bool,
) -> None:
    replicas = [replica(i) for i in range(ready)]
    outstanding = {r.id: load[r.index] for r in replicas}
    decision = route(
        placed=placed,
        ready=replicas,
        outstanding=outstanding,
        saturation=saturation,
        held=held,
        hold_limit=10,
        can_spill=can_spill,
    )
    if not can_spill:
        assert decision != SPILL or not placed  # only "not here" may still look for a peer
    if decision == HOLD:
        assert placed and not replicas and held < 10
    if decision == REFUSE:
        assert placed and not replicas and held >= 10 and not can_spill
    if placed and replicas and (saturation is None or min(outstanding.values()) < saturation):
        assert decision == LOCAL  # room here: never sent away


def test_saturation_limit_only_for_scaled_apps() -> None:
    assert saturation_limit(None) is None
    assert saturation_limit(assignment(scaled=False)) is None
    assert saturation_limit(assignment(target=10, threshold=2)) == 20
    assert saturation_limit(assignment(target=0.3, threshold=1.5)) == 1


# -- the shell ------------------------------------------------------------------------------------


class World:
    """The ingress's surroundings: replicas that change, a scaler that wakes, peers that serve."""

    def __init__(self, replicas: Sequence[ReplicaState] = (), *, placed: bool = True) -> None:
        self.replicas: dict[str, list[ReplicaState]] = {KEY: list(replicas)}
        self.assignments: dict[str, AppAssignment] = {KEY: assignment()} if placed else {}
        self.woken: list[str] = []
        self.peers: list[Peer] = []
        self.saturated: list[str] = []
        self.demand: list[tuple[str, str, float]] = []
        self.loads: list[int] = []
        self.seen: list[httpx.Request] = []
        self.ingress: Ingress | None = None
        self.on_wake = lambda: None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return echo(request)

    def build(self, **options: Any) -> tuple[Ingress, httpx.AsyncClient]:
        api = FastAPI()

        def wake(key: str) -> None:
            self.woken.append(key)
            self.on_wake()

        ingress = Ingress(
            api,
            site="paris",
            address="127.0.80.1",
            replicas=LocalReplicas(lambda: self.replicas),
            assignments=lambda: self.assignments,
            wake=wake,
            peers=lambda key: self.peers,
            locate=lambda address: "lille" if address == "127.0.0.1" else None,
            on_request=lambda key, origin, seconds: self.demand.append((key, origin, seconds)),
            on_load=lambda key, n: self.loads.append(n),
            on_saturated=self.saturated.append,
            transport=httpx.MockTransport(self.handler),
            **options,
        )
        self.ingress = ingress
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingress), base_url="http://127.0.80.1:8080"
        )
        return ingress, client


def call(
    world: World, *, headers: Mapping[str, str] | None = None, method: str = "GET", **options: Any
) -> httpx.Response:
    async def go() -> httpx.Response:
        ingress, client = world.build(**options)
        async with client:
            reply = await client.request(method, "/", headers={"Host": HOST, **(headers or {})})
        await ingress.aclose()
        assert ingress.outstanding == {} and ingress.in_flight == {} and ingress.held == {}
        return reply

    return asyncio.run(go())


def test_held_request_goes_through_once_a_replica_is_ready() -> None:
    world = World([])

    def start_replica() -> None:
        async def later() -> None:
            await asyncio.sleep(0.3)
            world.replicas[KEY] = [replica(0)]
            assert world.ingress is not None
            world.ingress.replicas_changed()

        asyncio.get_running_loop().create_task(later())

    world.on_wake = start_replica
    reply = call(world, hold_timeout=10)
    assert reply.status_code == 200
    assert world.woken == [KEY]
    assert world.seen[0].url.port == 20000
    assert world.demand[0][:2] == (KEY, "lille")  # the client is located by its address
    assert world.demand[0][2] >= 0.3  # the wait is part of the request's time here
    assert max(world.loads) == 1 and world.loads[-1] == 0


def test_many_held_requests_all_go_through() -> None:
    world = World([])

    async def go() -> list[int]:
        ingress, client = world.build(hold_timeout=10)

        def start() -> None:
            async def later() -> None:
                await asyncio.sleep(0.2)
                world.replicas[KEY] = [replica(0), replica(1)]
                ingress.replicas_changed()

            if len(world.woken) == 1:
                asyncio.get_running_loop().create_task(later())

        world.on_wake = start
        async with client:
            replies = await asyncio.gather(
                *(client.get("/", headers={"Host": HOST}) for _ in range(50))
            )
        await ingress.aclose()
        assert ingress.held == {}
        return [r.status_code for r in replies]

    assert asyncio.run(go()) == [200] * 50
    assert {r.url.port for r in world.seen} == {20000, 20001}  # spread once both are ready


def test_hold_queue_is_bounded() -> None:
    world = World([])

    async def go() -> list[httpx.Response]:
        ingress, client = world.build(hold_timeout=0.5, hold_limit=3)
        async with client:
            replies = await asyncio.gather(
                *(client.get("/", headers={"Host": HOST}) for _ in range(5))
            )
        await ingress.aclose()
        return list(replies)

    replies = asyncio.run(go())
    codes = sorted(r.status_code for r in replies)
    assert codes == [503] * 5
    refused = [r for r in replies if "already wait" in r.text]
    assert len(refused) == 2  # beyond the 3 held: refused at once
    assert all(r.headers["retry-after"] == "1" for r in replies)


def test_held_request_spills_when_no_replica_starts_in_time() -> None:
    world = World([])
    world.peers = [LYON]
    reply = call(world, hold_timeout=0.2)
    assert reply.status_code == 200
    assert world.seen[0].url.host == "127.0.81.1"


def test_saturated_replicas_spill_to_the_nearest_neighbour() -> None:
    world = World([replica(0)])
    world.peers = [LYON, Peer(site="geneva", address="127.0.82.1", port=8080)]

    async def go() -> httpx.Response:
        ingress, client = world.build()
        ingress.outstanding["demo-hello-0"] = 4
        async with client:
            reply = await client.get("/", headers={"Host": HOST})
        await ingress.aclose()
        assert ingress.spilled == 1
        return reply

    reply = asyncio.run(go())
    assert reply.status_code == 200
    sent = world.seen[0]
    assert (sent.url.host, sent.url.port) == ("127.0.81.1", 8080)
    assert sent.headers["x-edgefleet-hops"] == "1"
    assert sent.headers["x-edgefleet-origin"] == "lille"
    assert sent.headers["host"] == HOST
    assert world.demand == []  # the neighbour counts it, not this site


def test_saturated_with_no_neighbour_waits_for_a_free_slot_here() -> None:
    world = World([replica(0)])
    freed: list[bool] = []
    released: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        world.seen.append(request)
        freed.append(bool(released))
        return echo(request)

    world.handler = handler  # type: ignore[method-assign]

    async def go() -> httpx.Response:
        ingress, client = world.build(hold_timeout=30)
        ingress.outstanding["demo-hello-0"] = 4  # full: target 2 x threshold 2

        async def finish_one() -> None:
            await asyncio.sleep(0.3)
            released.append(True)
            ingress.outstanding["demo-hello-0"] = 3

        async with client:
            finishing = asyncio.ensure_future(finish_one())
            reply = await client.get("/", headers={"Host": HOST})
            await finishing
        assert ingress.held == {}
        del ingress.outstanding["demo-hello-0"]
        await ingress.aclose()
        return reply

    assert asyncio.run(go()).status_code == 200
    assert world.seen[0].url.port == 20000
    assert freed == [True], "forwarded only once a slot was free"
    assert world.saturated == [KEY]


def test_saturated_queue_gives_up_after_the_hold_timeout_and_tries_anyway() -> None:
    world = World([replica(0)])

    async def go() -> httpx.Response:
        ingress, client = world.build(hold_timeout=0.2)
        ingress.outstanding["demo-hello-0"] = 4
        async with client:
            reply = await client.get("/", headers={"Host": HOST})
        await ingress.aclose()
        return reply

    assert asyncio.run(go()).status_code == 200
    assert world.seen[0].url.port == 20000


def test_saturated_queue_moves_to_a_neighbour_that_starts_serving() -> None:
    world = World([replica(0)])

    async def go() -> httpx.Response:
        ingress, client = world.build(hold_timeout=30)
        ingress.outstanding["demo-hello-0"] = 4

        async def neighbour_wakes() -> None:
            await asyncio.sleep(0.3)
            world.peers = [LYON]

        async with client:
            waking = asyncio.ensure_future(neighbour_wakes())
            reply = await client.get("/", headers={"Host": HOST})
            await waking
        await ingress.aclose()
        return reply

    assert asyncio.run(go()).status_code == 200
    assert world.seen[0].url.host == "127.0.81.1"


def test_a_spilled_request_is_never_spilled_again() -> None:
    world = World([replica(0)])
    world.peers = [LYON]

    async def go() -> httpx.Response:
        ingress, client = world.build(hold_timeout=0.2)
        ingress.outstanding["demo-hello-0"] = 4
        async with client:
            reply = await client.get(
                "/",
                headers={"Host": HOST, "X-Edgefleet-Hops": "1", "X-Edgefleet-Origin": "nice"},
            )
        await ingress.aclose()
        return reply

    assert asyncio.run(go()).status_code == 200
    assert world.seen[0].url.port == 20000  # served here, queued
    assert "x-edgefleet-hops" not in world.seen[0].headers  # internal headers stay inside
    assert world.demand[0][1] == "nice"  # counted for the site the client came from


def test_app_not_placed_here_goes_to_a_neighbour_or_404() -> None:
    world = World([], placed=False)
    reply = call(world)
    assert reply.status_code == 404
    world.peers = [LYON]
    reply = call(world)
    assert reply.status_code == 200
    assert world.seen[0].url.host == "127.0.81.1"
    assert world.woken == []  # nothing to wake: the app is not placed here


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("POST", False)])
def test_failing_replica_retries_idempotent_requests_at_a_neighbour(
    method: str, retried: bool
) -> None:
    world = World([replica(0)])
    world.peers = [LYON]

    def local_refuses(request: httpx.Request) -> httpx.Response:
        world.seen.append(request)
        if request.url.host == "127.0.80.1":
            raise httpx.ConnectError("refused", request=request)
        return echo(request)

    world.handler = local_refuses  # type: ignore[method-assign]
    reply = call(world, method=method)
    if retried:
        assert reply.status_code == 200
        assert [r.url.host for r in world.seen] == ["127.0.80.1", "127.0.81.1"]
    else:
        assert reply.status_code == 502
        assert [r.url.host for r in world.seen] == ["127.0.80.1"]


def test_neighbour_refusing_a_spilled_request_is_502_naming_it() -> None:
    world = World([], placed=False)
    world.peers = [LYON]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    world.handler = refuse  # type: ignore[method-assign]
    reply = call(world)
    assert reply.status_code == 502
    assert "lyon" in reply.text


@pytest.mark.parametrize(("method", "passed_on"), [("GET", True), ("POST", False)])
def test_a_full_replica_answering_503_passes_idempotent_requests_on(
    method: str, passed_on: bool
) -> None:
    world = World([replica(0)])
    world.peers = [LYON]

    def local_busy(request: httpx.Request) -> httpx.Response:
        world.seen.append(request)
        if request.url.host == "127.0.80.1":
            return httpx.Response(
                503, stream=httpx.ByteStream(b"busy"), headers={"Retry-After": "1"}
            )
        return echo(request)

    world.handler = local_busy  # type: ignore[method-assign]
    reply = call(world, method=method)
    if passed_on:
        assert reply.status_code == 200
        assert [r.url.host for r in world.seen] == ["127.0.80.1", "127.0.81.1"]
    else:
        assert reply.status_code == 503 and reply.text == "busy"
        assert [r.url.host for r in world.seen] == ["127.0.80.1"]


def test_a_spilled_request_at_a_full_site_waits_for_a_slot_there() -> None:
    world = World([replica(0)])
    world.peers = [LYON]
    released: list[bool] = []
    order: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        world.seen.append(request)
        order.append(bool(released))
        return echo(request)

    world.handler = handler  # type: ignore[method-assign]

    async def go() -> httpx.Response:
        ingress, client = world.build(hold_timeout=30)
        ingress.outstanding["demo-hello-0"] = 4

        async def finish_one() -> None:
            await asyncio.sleep(0.3)
            released.append(True)
            ingress.outstanding["demo-hello-0"] = 3

        async with client:
            finishing = asyncio.ensure_future(finish_one())
            reply = await client.get(
                "/",
                headers={"Host": HOST, "X-Edgefleet-Hops": "1", "X-Edgefleet-Origin": "nice"},
            )
            await finishing
        del ingress.outstanding["demo-hello-0"]
        await ingress.aclose()
        return reply

    assert asyncio.run(go()).status_code == 200
    assert [r.url.host for r in world.seen] == ["127.0.80.1"]  # never passed on again
    assert order == [True], "forwarded only once a slot was free"


def test_a_client_no_site_here_holds_is_counted_by_its_network() -> None:
    """Its demand goes to the hub as its network, which the hub places; access and what the
    request says to neighbours still take this site as its origin."""
    world = World([replica(0)])

    async def go() -> httpx.Response:
        ingress, _ = world.build()
        far = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ingress, client=("198.51.100.9", 40000)),
            base_url="http://127.0.80.1:8080",
        )
        async with far:
            reply = await far.get("/", headers={"Host": HOST})
        await ingress.aclose()
        return reply

    assert asyncio.run(go()).status_code == 200
    assert world.demand[0][:2] == (KEY, "~198.51.100.0/24")
