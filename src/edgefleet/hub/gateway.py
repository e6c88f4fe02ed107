"""The agents' calls, answered without FastAPI's per-request machinery.

Ten thousand agents make a thousand calls a second at the hub (heartbeats, long-polls, status
and demand reports). FastAPI spends about 150 microseconds of CPU on each before a route runs
(routing, dependency injection, validation, middleware): as much as the work itself. This ASGI
layer, outside the FastAPI app, takes the four agent calls (``/api/v1/agent/sites/{site}/``
``watch``, ``heartbeat``, ``status``, ``demand``) and calls the very route functions FastAPI
declares (``edgefleet.hub.routes.agent``), after the same authentication and authorization
(``edgefleet.hub.auth.check``) and the same validation (pydantic, the same 422 shape); every
other request goes on to FastAPI. The routes stay in the API's OpenAPI document, and behave the
same whichever way they are reached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from edgefleet.hub.auth import EmptyList, check, list_body
from edgefleet.hub.routes import agent as routes
from edgefleet.hub.store import NotFound
from edgefleet.model import DemandReport, Heartbeat, StatusReport

if TYPE_CHECKING:
    from edgefleet.hub.runtime import Hub

log = logging.getLogger(__name__)

PREFIX = "/api/v1/agent/sites/"
TEMPLATE = "/api/v1/agent/sites/{site}/"
MAX_BODY = 4 * 1024 * 1024
"""Largest body an agent may send (a status report of thousands of replicas fits)."""

_INT = TypeAdapter(int)
_STR = TypeAdapter(str)
_TIMEOUT: TypeAdapter[float] = TypeAdapter(Annotated[float, Field(ge=0)])

Call = Callable[["Hub", str, dict[str, list[str]], bytes], Awaitable[Any]]


def _query(name: str, raw: dict[str, list[str]], adapter: TypeAdapter[Any], default: Any) -> Any:
    values = raw.get(name)
    if not values:
        return default
    try:
        return adapter.validate_python(values[-1])
    except ValidationError as exc:
        raise _Invalid(exc, ("query", name)) from None


def _body(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _Invalid(exc, ("body",)) from None


class _Invalid(Exception):
    def __init__(self, error: ValidationError, where: tuple[str, ...]) -> None:
        super().__init__(str(error))
        self.detail = [
            {"type": e.get("type"), "loc": [*where, *e.get("loc", ())], "msg": str(e.get("msg"))}
            for e in error.errors()
        ]


async def _watch(hub: Hub, site: str, query: dict[str, list[str]], _: bytes) -> Any:
    timeout = _query("timeout", query, _TIMEOUT, 30.0)
    return await routes.watch(
        site,
        hub,
        state=_query("state", query, _INT, -1),
        routes=_query("routes", query, _STR, ""),
        timeout=timeout,
    )


async def _heartbeat(hub: Hub, site: str, _: dict[str, list[str]], body: bytes) -> Any:
    return await routes.heartbeat(site, _body(Heartbeat, body), hub)


async def _status(hub: Hub, site: str, _: dict[str, list[str]], body: bytes) -> Any:
    return await routes.report_status(site, _body(StatusReport, body), hub)


async def _demand(hub: Hub, site: str, _: dict[str, list[str]], body: bytes) -> Any:
    return await routes.report_demand(site, _body(DemandReport, body), hub)


CALLS: dict[tuple[str, str], Call] = {
    ("GET", "watch"): _watch,
    ("POST", "heartbeat"): _heartbeat,
    ("POST", "status"): _status,
    ("POST", "demand"): _demand,
}
"""The calls the gateway answers, by method and last path segment."""


class AgentGateway:
    """ASGI middleware: the agents' calls here, everything else to ``app``."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        site, slash, what = path[len(PREFIX) :].partition("/")
        call = CALLS.get((scope["method"], what))
        if call is None or not slash or not site or "%" in path:
            await self.app(scope, receive, send)
            return
        await self._answer(scope, receive, send, site, what, call)

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, site: str, what: str, call: Call
    ) -> None:
        hub = self.hub
        authorization = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None
        )
        client = scope.get("client")
        try:
            await check(
                hub,
                method=scope["method"],
                template=TEMPLATE + what,
                authorization=authorization,
                source=client[0] if client else "unknown",
                params={"site": site},
            )
            body = await _read(receive) if scope["method"] == "POST" else b""
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            result = await call(hub, site, query, body)
        except HTTPException as exc:
            await _send(send, exc.status_code, _json({"detail": exc.detail}), exc.headers)
            return
        except NotFound as exc:
            await _send(send, 404, _json({"detail": str(exc)}))
            return
        except EmptyList as exc:
            await _send(send, 200, _json(list_body(exc.kind)))
            return
        except _Invalid as exc:
            await _send(send, 422, _json({"detail": exc.detail}))
            return
        except _TooLarge:
            await _send(send, 413, _json({"detail": f"a body of at most {MAX_BODY} bytes"}))
            return
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await _send(send, 500, _json({"detail": "internal error"}))
            return
        if isinstance(result, Response):
            await _send(send, result.status_code, bytes(result.body), None, result.media_type)
        elif isinstance(result, BaseModel):
            await _send(send, 200, result.model_dump_json(by_alias=True).encode())
        else:
            await _send(send, 204, b"")


class _TooLarge(Exception):
    pass


async def _read(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


async def _send(
    send: Send,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    media_type: str | None = "application/json",
) -> None:
    fields = [(b"content-length", str(len(body)).encode())]
    if body and media_type:
        fields.append((b"content-type", media_type.encode()))
    for name, value in (headers or {}).items():
        fields.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body if status != 204 else b""})
