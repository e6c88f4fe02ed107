"""The agent's API as an ASGI app: its routes, and the answers it gives when a request does not
fit one (the shapes FastAPI gives: ``{"detail": ...}``, 422 with the error list).

Who may call what is in ``test_site_credentials``; here every call carries the hub's credential.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from edgefleet.agent.ingress import LocalReplicas
from edgefleet.agent.local_api import OffloadRequest, local_api
from tests.unit.agent.test_activator import assignment
from tests.unit.agent.test_site_credentials import FakeDriver, auth, check, credential

HUB = auth(credential(None))
LYON = {**auth(credential("lyon")), "Content-Type": "application/json"}


def ask(
    method: str,
    path: str,
    *,
    headers: dict[str, str] = HUB,
    body: bytes | None = None,
    offload: Any = None,
) -> httpx.Response:
    driver = FakeDriver()
    api = local_api(
        driver, "paris", LocalReplicas(driver.observe), offload, verify_credential=check
    )

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.80.1") as client:
            return await client.request(method, path, headers=headers, content=body)

    return asyncio.run(go())


def test_replicas_are_the_drivers_in_wire_form() -> None:
    reply = ask("GET", "/_edgefleet/replicas")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    (state,) = reply.json()["demo/hello"]
    assert state["id"] == "demo-hello-0" and "startedAt" in state  # camelCase, as on the wire


def test_logs_are_text_with_a_bounded_tail() -> None:
    reply = ask("GET", "/_edgefleet/logs/demo/hello?tail=5&replica=demo-hello-0")
    assert reply.status_code == 200 and reply.text == "log of demo/hello\n"
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    for tail in ("0", "10001", "many"):
        refused = ask("GET", f"/_edgefleet/logs/demo/hello?tail={tail}")
        assert refused.status_code == 422
        (error,) = refused.json()["detail"]
        assert error["loc"] == ["query", "tail"] and error["msg"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/_edgefleet/", 404),
        ("GET", "/_edgefleet/logs/demo", 404),
        ("GET", "/_edgefleet/logs/demo/hello/more", 404),
        ("GET", "/docs", 404),
        ("POST", "/_edgefleet/healthz", 405),
        ("GET", "/_edgefleet/offload", 405),
        ("DELETE", "/_edgefleet/replicas", 405),
        ("HEAD", "/_edgefleet/healthz", 405),
    ],
)
def test_what_is_not_a_route_is_refused_as_such(method: str, path: str, status: int) -> None:
    reply = ask(method, path)
    assert reply.status_code == status
    if method != "HEAD":
        assert reply.json()["detail"] in ("Not Found", "Method Not Allowed")


def test_an_offload_that_does_not_validate_is_422_and_reaches_nobody() -> None:
    asked: list[OffloadRequest] = []

    def offload(request: OffloadRequest) -> str | None:
        asked.append(request)
        return None

    good = OffloadRequest(requester="lyon", assignment=assignment())
    not_a_name = good.model_dump_json(by_alias=True).replace('"lyon"', "7").encode()
    for body in (b"not json", b"{}", not_a_name):
        reply = ask("POST", "/_edgefleet/offload", headers=LYON, body=body, offload=offload)
        assert reply.status_code == 422
        assert all(e["loc"][0] == "body" for e in reply.json()["detail"])
    assert asked == []
    body = good.model_dump_json(by_alias=True).encode()
    accepted = ask("POST", "/_edgefleet/offload", headers=LYON, body=body, offload=offload)
    assert accepted.status_code == 202 and [r.requester for r in asked] == ["lyon"]


def test_a_refused_offload_says_why() -> None:
    body = OffloadRequest(requester="lyon", assignment=assignment()).model_dump_json(by_alias=True)
    reply = ask("POST", "/_edgefleet/offload", headers=LYON, body=body.encode())
    assert reply.status_code == 409
    assert reply.json() == {"detail": "this site takes no offload"}
