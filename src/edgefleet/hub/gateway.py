"""The agents' calls, answered without FastAPI's per-request machinery.

Ten thousand agents make a thousand calls a second at the hub (heartbeats, watches, status
and demand reports). FastAPI spends about 150 microseconds of CPU on each before a route runs
(routing, dependency injection, validation, middleware): as much as the work itself. This ASGI
layer, outside the FastAPI app, takes the four agent calls (``/api/v1/agent/sites/{site}/``
``watch``, ``heartbeat``, ``status``, ``demand``) and calls the very route functions FastAPI
declares (``edgefleet.hub.routes.agent``), after the same authentication and authorization
(``edgefleet.hub.auth.check``) and the same validation (pydantic, the same 422 shape); every
other request goes on to FastAPI. A watch stream (``watch?stream=true``) is sent a line at a
time as its news comes. The routes stay in the API's OpenAPI document, and behave the same
whichever way they are reached.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from edgefleet.asgi import BodyTooLarge, header, invalid, json_body, read_body, respond
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
_BOOL = TypeAdapter(bool)
_TIMEOUT: TypeAdapter[float] = TypeAdapter(Annotated[float, Field(ge=0)])

Call = Callable[["Hub", str, dict[str, list[str]], bytes, str | None], Awaitable[Any]]
"""An agent call: the hub, the site, the query, the body, the ``Authorization`` header."""


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


def parse_query(raw: bytes) -> dict[str, list[str]]:
    """The query string's fields, as ``parse_qs`` reads them (blank values left out); a
    query with nothing escaped (an agent's watch: ``state=12&routes=ab12-3&timeout=30``) is
    split without it, at a fraction of its cost."""
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return parse_qs(text)
    out: dict[str, list[str]] = {}
    for part in text.split("&"):
        name, _, value = part.partition("=")
        if value:
            out.setdefault(name, []).append(value)
    return out


class _Invalid(Exception):
    def __init__(self, error: ValidationError, where: tuple[str, ...]) -> None:
        super().__init__(str(error))
        self.detail = invalid(error, where)


async def _watch(
    hub: Hub, site: str, query: dict[str, list[str]], _: bytes, authorization: str | None
) -> Any:
    timeout = _query("timeout", query, _TIMEOUT, 30.0)
    return await routes.watch(
        site,
        hub,
        state=_query("state", query, _INT, -1),
        routes=_query("routes", query, _STR, ""),
        timeout=timeout,
        stream=_query("stream", query, _BOOL, False),
        authorization=authorization,
    )


async def _heartbeat(
    hub: Hub, site: str, _: dict[str, list[str]], body: bytes, __: str | None
) -> Any:
    return await routes.heartbeat(site, _body(Heartbeat, body), hub)


async def _status(hub: Hub, site: str, _: dict[str, list[str]], body: bytes, __: str | None) -> Any:
    return await routes.report_status(site, _body(StatusReport, body), hub)


async def _demand(hub: Hub, site: str, _: dict[str, list[str]], body: bytes, __: str | None) -> Any:
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
        raw = header(scope, b"authorization")
        authorization = raw.decode("latin-1") if raw is not None else None
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
            body = await read_body(receive, MAX_BODY) if scope["method"] == "POST" else b""
            query = parse_query(scope.get("query_string", b""))
            result = await call(hub, site, query, body, authorization)
        except HTTPException as exc:
            await respond(send, exc.status_code, json_body({"detail": exc.detail}), exc.headers)
            return
        except NotFound as exc:
            await respond(send, 404, json_body({"detail": str(exc)}))
            return
        except EmptyList as exc:
            await respond(send, 200, json_body(list_body(exc.kind)))
            return
        except _Invalid as exc:
            await respond(send, 422, json_body({"detail": exc.detail}))
            return
        except BodyTooLarge as exc:
            await respond(send, 413, json_body({"detail": str(exc)}))
            return
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await respond(send, 500, json_body({"detail": "internal error"}))
            return
        if isinstance(result, StreamingResponse):
            # A watch stream, sent as it comes; a client gone ends it (Starlette listens).
            with contextlib.suppress(ClientDisconnect, OSError):
                await result(scope, receive, send)
        elif isinstance(result, Response):
            media = result.media_type.encode() if result.media_type else None
            await respond(send, result.status_code, bytes(result.body), None, media)
        elif isinstance(result, BaseModel):
            await respond(send, 200, result.model_dump_json(by_alias=True).encode())
        else:
            await respond(send, 204, b"")
