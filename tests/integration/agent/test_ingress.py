"""The site ingress in a real fleet: hub, agent and hello replicas as processes on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import Site
from tests.factories import make_app, make_site

pytestmark = pytest.mark.slow

HOST = "hello.demo.edge.internal"

# Each test gets its own loopback addresses, so a process left over by one can't answer another.
_subnets = itertools.count(80)


@pytest.fixture
def site(sqlite_fleet: LocalFleet) -> Iterator[Site]:
    """One site, registered, its agent up."""
    paris = make_site("paris", ip=f"127.0.{next(_subnets)}.1")
    with sqlite_fleet.client() as client:
        client.apply(paris)
    sqlite_fleet.start_agent(paris)
    yield paris


def base(site: Site) -> str:
    return f"http://{site.spec.addresses.ip}:{site.spec.addresses.ingress_port}"


def replicas(fleet: LocalFleet, site: Site) -> list[dict[str, Any]]:
    """The agent's view of hello's replicas (its API answers a site's credential)."""
    reply = httpx.get(
        f"{base(site)}/_edgefleet/replicas",
        timeout=3,
        headers=fleet.site_headers(site.metadata.name),
    )
    found: list[dict[str, Any]] = reply.json().get("demo/hello", [])
    return found


def run_hello(fleet: LocalFleet, site: Site, count: int) -> list[dict[str, Any]]:
    """Apply hello with ``count`` replicas and wait until the agent reports them all ready."""
    with fleet.client() as client:
        client.apply(make_app(placement={"replicas": count}))
    return wait_for(
        lambda: (
            (found := replicas(fleet, site)) and sum(r["ready"] for r in found) == count and found
        ),
        timeout=30,
        what=f"{count} ready replicas of hello",
    )


def test_ingress_routes_balances_and_streams(sqlite_fleet: LocalFleet, site: Site) -> None:
    run_hello(sqlite_fleet, site, 2)

    with httpx.Client(base_url=base(site), timeout=10) as http:
        reply = http.get("/", headers={"Host": HOST})
        assert reply.status_code == 200
        assert reply.headers["via"] == "1.1 edgefleet-paris"
        greeting = reply.json()
        assert greeting["site"] == "paris"
        assert greeting["replica"] in {"demo-hello-0", "demo-hello-1"}

        # Case and port in Host do not matter.
        assert http.get("/", headers={"Host": "HELLO.demo.edge.internal:8080"}).is_success

        missing = http.get("/", headers={"Host": "nope.demo.edge.internal"})
        assert missing.status_code == 404
        assert "demo/nope" in missing.text and "paris" in missing.text

        health = http.get("/_edgefleet/healthz")
        assert health.json()["ready"] == {"demo/hello": 2}

    # Concurrent requests spread over both replicas (least outstanding first).
    async def many(n: int) -> set[str]:
        async with httpx.AsyncClient(base_url=base(site), timeout=10) as http:
            replies = await asyncio.gather(
                *(http.get("/", headers={"Host": HOST}) for _ in range(n))
            )
        assert all(r.status_code == 200 for r in replies)
        return {r.json()["replica"] for r in replies}

    assert asyncio.run(many(40)) == {"demo-hello-0", "demo-hello-1"}

    # Several MB each way, streamed: chunked (no length) and with Content-Length.
    data = os.urandom(6 * 1024 * 1024 + 123)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    async def round_trip(content: bytes | AsyncIterator[bytes]) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        async with (
            httpx.AsyncClient(base_url=base(site), timeout=30) as http,
            http.stream("POST", "/echo", headers={"Host": HOST}, content=content) as reply,
        ):
            assert reply.status_code == 200
            async for chunk in reply.aiter_raw():
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size

    expected = (hashlib.sha256(data).hexdigest(), len(data))
    assert asyncio.run(round_trip(pieces())) == expected
    assert asyncio.run(round_trip(data)) == expected


def test_ingress_holds_requests_while_no_replica_is_ready(
    sqlite_fleet: LocalFleet, site: Site
) -> None:
    """The activator: with the only replica paused, a request waits, then is served."""
    (only,) = run_hello(sqlite_fleet, site, 1)
    pid = only["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: not any(r["ready"] for r in replicas(sqlite_fleet, site)),
            timeout=15,
            what="the agent to report the paused replica not ready",
        )

        async def held() -> httpx.Response:
            async with httpx.AsyncClient(timeout=40) as client:
                return await client.get(base(site), headers={"Host": HOST})

        async def scenario() -> httpx.Response:
            request = asyncio.ensure_future(held())
            await asyncio.sleep(1.0)
            assert not request.done(), "the request was answered while no replica was ready"
            os.kill(pid, signal.SIGCONT)
            return await request

        reply = asyncio.run(scenario())
        assert reply.status_code == 200, reply.text
        assert "edgefleet-" in reply.headers["via"]
    finally:
        os.kill(pid, signal.SIGCONT)
    # Ready again (the same process, or its replacement after failed liveness checks).
    wait_for(
        lambda: httpx.get(base(site), headers={"Host": HOST}, timeout=5).status_code == 200,
        timeout=30,
        what="hello to answer through the ingress again",
    )


def test_a_spilled_request_needs_a_site_credential(sqlite_fleet: LocalFleet, site: Site) -> None:
    """Only a site may pass a request on: one that says it was spilled (hops, origin) without a
    valid site credential is refused; a revoked credential is refused once the routing table
    carries the revocation."""
    run_hello(sqlite_fleet, site, 1)
    # Lyon, the neighbour that spills to Paris here, joins for its credential (no agent runs:
    # revoking Paris's own credential would cut Paris off the routing table that says so).
    with sqlite_fleet.client() as admin:
        admin.apply(make_site("lyon", lat=45.76, lon=4.84))
    credential = sqlite_fleet.site_credential("lyon")
    spilled = {"Host": HOST, "x-edgefleet-hops": "1", "x-edgefleet-origin": "lyon"}
    with httpx.Client(base_url=base(site), timeout=10) as http:
        refused = http.get("/", headers=spilled)
        assert refused.status_code == 403 and "no site credential" in refused.text
        forged = http.get("/", headers={**spilled, "x-edgefleet-site-credential": "eyJ.x.y"})
        assert forged.status_code == 403
        taken = http.get("/", headers={**spilled, "x-edgefleet-site-credential": credential})
        assert taken.status_code == 200 and taken.json()["site"] == "paris"
        # A revoked credential is refused once the routing table says so.
        with sqlite_fleet.client() as admin:
            (record,) = admin.list_tokens(kind="site", site="lyon")
            admin.revoke_token(record.id)
        wait_for(
            lambda: (
                http.get(
                    "/", headers={**spilled, "x-edgefleet-site-credential": credential}
                ).status_code
                == 403
            ),
            timeout=15,
            what="the site to refuse the revoked credential",
        )
