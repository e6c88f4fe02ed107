"""Fleet policy at a site: the ingress refuses clients an app does not let in (403, saying who
and why), and offload never leaves an app's regions nor escapes its tenant's quota."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from edgefleet.agent.ingress import Ingress, LocalReplicas, client_address
from edgefleet.agent.offload import offload_terms, outside_regions, should_ask
from edgefleet.model import AppAssignment, LocalScaling, ProcessWorkload, ReplicaState
from edgefleet.routing.table import SitePoint

BOSTON = SitePoint(
    name="boston",
    region="us-east",
    zone="us-east-1",
    lat=42.36,
    lon=-71.06,
    ip="127.0.82.1",
    ingress_port=8080,
    dns_port=5353,
)


def refuse_outside_eu(key: str, client: str | None, origin: str | None) -> str | None:
    """As the edge zone decides: paris is in eu-west, everything else is not (nor a client no
    site holds: origin None)."""
    if origin == "paris" or (client or "").startswith("10."):
        return None
    return f"client {client} (origin {origin}) may not reach {key}"


def call(*, client: tuple[str, int], headers: dict[str, str], seen: list[str]) -> httpx.Response:
    replica = ReplicaState(id="acme-shop-0", index=0, port=20000, state="running", ready=True)

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-forwarded-for", ""))
        return httpx.Response(200, stream=httpx.ByteStream(b"served"))

    async def go() -> httpx.Response:
        ingress = Ingress(
            FastAPI(),
            site="boston",
            address="127.0.82.1",
            replicas=LocalReplicas(lambda: {"acme/shop": [replica]}),
            transport=httpx.MockTransport(upstream),
            locate=lambda address: "paris" if address.startswith("198.51.100.") else None,
            admit=refuse_outside_eu,
        )
        transport = httpx.ASGITransport(app=ingress, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.82.1") as http:
            reply = await http.get("/", headers={"Host": "shop.acme.edge.internal", **headers})
        await ingress.aclose()
        return reply

    return asyncio.run(go())


def test_the_ingress_refuses_a_client_the_app_does_not_let_in() -> None:
    seen: list[str] = []
    refused = call(client=("192.0.2.7", 5000), headers={}, seen=seen)
    assert refused.status_code == 403
    # Nor does it count as Boston's own: the ingress cannot place it, so it has no region.
    assert refused.text == "client 192.0.2.7 (origin None) may not reach acme/shop\n"
    assert seen == []  # the replica never saw it
    allowed = call(client=("198.51.100.7", 5000), headers={}, seen=seen)
    assert allowed.status_code == 200 and seen == ["198.51.100.7"]


def test_a_spilled_request_is_judged_by_what_the_neighbour_saw() -> None:
    seen: list[str] = []
    # Passed on by a neighbour: the client it saw and the origin it named decide.
    spilled = {"x-edgefleet-hops": "1", "x-edgefleet-origin": "paris"}
    reply = call(
        client=("127.0.81.1", 5000),
        headers={**spilled, "X-Forwarded-For": "192.0.2.7"},
        seen=seen,
    )
    assert reply.status_code == 200
    elsewhere = {"x-edgefleet-hops": "1", "x-edgefleet-origin": "boston"}
    reply = call(
        client=("127.0.81.1", 5000),
        headers={**elsewhere, "X-Forwarded-For": "203.0.113.1, 192.0.2.7"},
        seen=seen,
    )
    assert reply.status_code == 403 and "client 192.0.2.7 (origin boston)" in reply.text


def test_client_address() -> None:
    scope = {"client": ("192.0.2.7", 1), "headers": [(b"x-forwarded-for", b"10.0.0.1, 10.0.0.2")]}
    assert client_address(scope, 0) == "192.0.2.7"  # a client's own header is not believed
    assert client_address(scope, 1) == "10.0.0.2"
    assert client_address({"client": ("192.0.2.7", 1), "headers": []}, 1) == "192.0.2.7"
    assert client_address({"headers": []}, 0) is None


def assignment(*, regions: list[str] | None = None, may_offload: bool = True) -> AppAssignment:
    return AppAssignment(
        tenant="acme",
        app="shop",
        generation=1,
        replicas=2,
        workload=ProcessWorkload(command="edgefleet-hello"),
        scaling=LocalScaling(
            min_replicas=1,
            max_replicas=2,
            target_concurrency=2,
            stable_window=60,
            panic_window=6,
            panic_threshold=2,
            idle_timeout=300,
        ),
        regions=regions,
        may_offload=may_offload,
    )


def test_offload_stays_in_the_apps_regions() -> None:
    assert outside_regions(None, BOSTON) is None
    assert outside_regions(["us-east"], BOSTON) is None
    assert outside_regions(["eu-west", "eu-north"], BOSTON) == (
        "region us-east is outside the app's regions (eu-north, eu-west)"
    )
    terms = offload_terms(
        assignment(regions=["eu-west"]), me=BOSTON, placed_here=False, taken=0, cap=8
    )
    assert terms == "region us-east is outside the app's regions (eu-west)"
    unknown = offload_terms(
        assignment(regions=["eu-west"]), me=None, placed_here=False, taken=0, cap=8
    )
    assert isinstance(unknown, str) and "own region" in unknown
    taken = offload_terms(
        assignment(regions=["us-east"]), me=BOSTON, placed_here=False, taken=0, cap=8
    )
    assert isinstance(taken, AppAssignment) and taken.regions == ["us-east"]


def test_an_app_under_a_quota_is_never_offloaded() -> None:
    held = assignment(may_offload=False)
    assert not should_ask(held, 2, last_asked=None, now=100.0, interval=15.0)
    assert should_ask(assignment(), 2, last_asked=None, now=100.0, interval=15.0)
    refusal = offload_terms(held, me=BOSTON, placed_here=False, taken=0, cap=8)
    assert refusal == "acme/shop counts against its tenant's quota: only the hub places it"
