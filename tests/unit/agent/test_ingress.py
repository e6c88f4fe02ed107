"""The ingress decisions (host names, replica choice, headers) and its shell over a fake network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.ingress import (
    Ingress,
    LocalReplicas,
    forward_request_headers,
    forward_response_headers,
    parse_app_host,
    pick_replica,
)
from edgefleet.model import ReplicaState

# -- parse_app_host -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("hello.demo.edge.internal", ("demo", "hello")),
        ("hello.demo.edge.internal:8080", ("demo", "hello")),
        ("hello.demo.edge.internal:", ("demo", "hello")),
        ("HeLLo.DEMO.Edge.Internal", ("demo", "hello")),
        ("hello.demo.edge.internal.", ("demo", "hello")),
        ("hello.demo.edge.internal.:80", ("demo", "hello")),
        (" hello.demo.edge.internal ", ("demo", "hello")),
        ("a-1.t-2.edge.internal", ("t-2", "a-1")),
        ("demo.edge.internal", None),  # too few labels
        ("edge.internal", None),
        ("x.hello.demo.edge.internal", None),  # too many labels
        ("hello.demo.edge.example", None),  # another zone
        ("hello.demo.notedge.internal", None),
        ("hello.demoedge.internal", None),
        ("hello.demo.edge.internal:http", None),  # not a port
        ("hello.demo.edge.internal:123456", None),
        ("-hello.demo.edge.internal", None),  # not a DNS label
        ("hello_1.demo.edge.internal", None),
        ("hello..edge.internal", None),
        (f"{'a' * 64}.demo.edge.internal", None),
        ("127.0.80.1:8080", None),
        ("[::1]:8080", None),
        ("", None),
    ],
)
def test_parse_app_host(host: str, expected: tuple[str, str] | None) -> None:
    assert parse_app_host(host) == expected


_label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")


@given(app=_label, tenant=_label, port=st.none() | st.integers(0, 65535), upper=st.booleans())
def test_parse_app_host_round_trips(app: str, tenant: str, port: int | None, upper: bool) -> None:
    host = f"{app}.{tenant}.edge.internal" + ("" if port is None else f":{port}")
    assert parse_app_host(host.upper() if upper else host) == (tenant, app)


# -- pick_replica -------------------------------------------------------------------------------


def replica(index: int, *, ready: bool = True, port: int | None = None) -> ReplicaState:
    return ReplicaState(
        id=f"demo-hello-{index}",
        index=index,
        port=20000 + index if port is None else port,
        state="running" if ready else "starting",
        ready=ready,
    )


_replicas = st.lists(
    st.builds(replica, index=st.integers(0, 20), ready=st.booleans()),
    max_size=8,
    unique_by=lambda r: r.index,
)


@given(replicas=_replicas, data=st.data())
def test_pick_replica_is_a_ready_one_with_least_outstanding(
    replicas: list[ReplicaState], data: st.DataObject
) -> None:
    outstanding = data.draw(
        st.dictionaries(st.sampled_from([r.id for r in replicas] or ["x"]), st.integers(0, 5))
    )
    chosen = pick_replica(replicas, outstanding)
    ready = [r for r in replicas if r.ready]
    if not ready:
        assert chosen is None
        return
    assert chosen is not None and chosen.ready
    load = outstanding.get(chosen.id, 0)
    assert all(outstanding.get(r.id, 0) >= load for r in ready)
    # Ties go to the lowest index.
    assert all(r.index >= chosen.index for r in ready if outstanding.get(r.id, 0) == load)


def test_pick_replica_examples() -> None:
    a, b, c = replica(0), replica(1), replica(2, ready=False)
    assert pick_replica([a, b, c], {}) == a
    assert pick_replica([b, a], {}) == a
    assert pick_replica([a, b, c], {a.id: 1}) == b
    assert pick_replica([a, b, c], {a.id: 2, b.id: 2}) == a
    assert pick_replica([c], {}) is None
    assert pick_replica([], {}) is None
    no_port = ReplicaState(id="demo-hello-3", index=3, state="running", ready=True)
    assert pick_replica([no_port], {}) is None


# -- headers ------------------------------------------------------------------------------------


def test_request_headers_drop_hop_by_hop_and_add_forwarding() -> None:
    headers = [
        (b"Host", b"hello.demo.edge.internal:8080"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"X-Secret", b"per-connection"),
        (b"Proxy-Authorization", b"Basic eA=="),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Sum"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Expect", b"100-continue"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"Via", b"1.0 corp"),
        (b"Accept", b"text/plain"),
    ]
    out = forward_request_headers(
        headers, client="127.0.0.9", scheme="http", via="1.1 edgefleet-paris"
    )
    assert out == [
        (b"host", b"hello.demo.edge.internal:8080"),
        (b"via", b"1.0 corp"),
        (b"accept", b"text/plain"),
        (b"x-forwarded-for", b"10.0.0.1, 127.0.0.9"),
        (b"x-forwarded-host", b"hello.demo.edge.internal:8080"),
        (b"x-forwarded-proto", b"http"),
        (b"via", b"1.1 edgefleet-paris"),
    ]


def test_request_headers_without_client_or_host() -> None:
    out = forward_request_headers([], client=None, scheme="http", via="1.1 edgefleet-x")
    assert out == [(b"x-forwarded-proto", b"http"), (b"via", b"1.1 edgefleet-x")]


def test_response_headers() -> None:
    out = forward_response_headers(
        [(b"Content-Length", b"3"), (b"Connection", b"close"), (b"Set-Cookie", b"a=1")],
        via="1.1 edgefleet-paris",
    )
    assert out == [
        (b"content-length", b"3"),
        (b"set-cookie", b"a=1"),
        (b"via", b"1.1 edgefleet-paris"),
    ]


# -- LocalReplicas ------------------------------------------------------------------------------


def test_local_replicas_observe_after_change_or_when_old() -> None:
    calls: list[float] = []
    now = [100.0]

    def observe() -> dict[str, list[ReplicaState]]:
        calls.append(now[0])
        return {"demo/hello": [replica(len(calls))]}

    view = LocalReplicas(observe, max_age=0.5, clock=lambda: now[0])
    assert view.get()["demo/hello"][0].index == 1
    now[0] += 0.4
    assert view.get()["demo/hello"][0].index == 1  # cached
    view.changed()
    assert view.get()["demo/hello"][0].index == 2  # a change is seen at once
    now[0] += 0.5
    assert view.get()["demo/hello"][0].index == 3  # and the view never gets older than 0.5 s
    assert len(calls) == 3


# -- the shell, over a fake network ---------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


def make_ingress(
    replicas: Mapping[str, Sequence[ReplicaState]], handler: Handler, **options: Any
) -> tuple[Ingress, httpx.AsyncClient]:
    api = FastAPI()

    @api.get("/_edgefleet/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    ingress = Ingress(
        api,
        site="paris",
        address="127.0.80.1",
        replicas=LocalReplicas(lambda: replicas),
        transport=httpx.MockTransport(handler),
        **options,
    )
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ingress), base_url="http://127.0.80.1:8080"
    )
    return ingress, client


def run(
    replicas: Mapping[str, Sequence[ReplicaState]],
    handler: Handler,
    *,
    host: str = "hello.demo.edge.internal",
    method: str = "GET",
    path: str = "/",
    content: bytes | None = None,
    **options: Any,
) -> httpx.Response:
    async def go() -> httpx.Response:
        ingress, client = make_ingress(replicas, handler, **options)
        async with client:
            reply = await client.request(method, path, headers={"Host": host}, content=content)
            await reply.aread()
        await ingress.aclose()
        assert ingress.outstanding == {}
        return reply

    return asyncio.run(go())


def echo(request: httpx.Request) -> httpx.Response:
    # A stream, as from the network (content= would arrive read already).
    return httpx.Response(
        200,
        stream=httpx.ByteStream(request.read()),
        headers={
            "X-Port": str(request.url.port),
            "X-Target": request.url.raw_path.decode(),
            "X-Got-Via": request.headers.get("via", ""),
            "X-Got-Forwarded-For": request.headers.get("x-forwarded-for", ""),
            "Connection": "close",
        },
    )


def test_forwards_to_a_ready_replica() -> None:
    replicas = {"demo/hello": [replica(0, ready=False), replica(1)]}
    reply = run(replicas, echo, method="POST", path="/a%20b/c?x=1&y=%2F", content=b"body")
    assert reply.status_code == 200
    assert reply.content == b"body"
    assert reply.headers["x-port"] == "20001"
    assert reply.headers["x-target"] == "/a%20b/c?x=1&y=%2F"
    assert reply.headers["x-got-via"] == "1.1 edgefleet-paris"
    assert reply.headers["x-got-forwarded-for"] == "127.0.0.1"
    assert reply.headers["via"] == "1.1 edgefleet-paris"
    assert "connection" not in reply.headers


def test_unknown_app_is_404_naming_app_and_site() -> None:
    reply = run({"demo/hello": [replica(0)]}, echo, host="nope.demo.edge.internal")
    assert reply.status_code == 404
    assert "demo/nope" in reply.text and "paris" in reply.text


def test_stopped_replicas_do_not_place_an_app() -> None:
    gone = ReplicaState(id="demo-hello-0", index=0, port=20000, state="stopped")
    assert run({"demo/hello": [gone]}, echo).status_code == 404


def test_no_replica_ready_in_time_is_503_with_retry_after() -> None:
    reply = run({"demo/hello": [replica(0, ready=False)]}, echo, hold_timeout=0.2)
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "1"


def test_connection_refused_retries_once_on_another_replica() -> None:
    tried: list[int | None] = []

    def refuse_first(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.port)
        if len(tried) == 1:
            raise httpx.ConnectError("refused", request=request)
        return echo(request)

    reply = run({"demo/hello": [replica(0), replica(1), replica(2)]}, refuse_first)
    assert reply.status_code == 200
    assert tried == [20000, 20001]


def test_connection_refused_twice_is_502() -> None:
    tried: list[int | None] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.port)
        raise httpx.ConnectError("refused", request=request)

    reply = run({"demo/hello": [replica(0), replica(1), replica(2)]}, refuse)
    assert reply.status_code == 502
    assert tried == [20000, 20001]
    single = run({"demo/hello": [replica(0)]}, refuse)
    assert single.status_code == 502


def test_replica_timeout_is_504() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    assert run({"demo/hello": [replica(0)]}, slow).status_code == 504


def test_unexpected_failure_is_502_not_a_crash() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("bug")

    assert run({"demo/hello": [replica(0)]}, broken).status_code == 502


def test_other_hosts_go_to_the_local_api() -> None:
    def never(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no replica should be called")

    reply = run({}, never, host="127.0.80.1:8080", path="/_edgefleet/healthz")
    assert reply.json() == {"status": "ok"}
    assert run({}, never, host="127.0.80.1:8080", path="/").status_code == 404
