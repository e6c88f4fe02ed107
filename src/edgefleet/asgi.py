"""Plain ASGI pieces shared by the apps that answer without a framework: the hub's gateway for
agents' calls (``edgefleet.hub.gateway``), the agent's local API
(``edgefleet.agent.local_api``) and the site's ingress (``edgefleet.agent.ingress``).

Their answers keep FastAPI's shapes, so a client cannot tell which way it was answered:
``{"detail": ...}`` and, for what does not validate, 422 with a list of ``{type, loc, msg}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

JSON = b"application/json"


class BodyTooLarge(Exception):
    """A request body over the limit its reader was given (answer 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a body of at most {limit} bytes")
        self.limit = limit


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the header ``name`` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request's body, read as it comes; ``BodyTooLarge`` as soon as it passes ``limit``
    bytes (what came is not kept). A client that went away leaves what it sent."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def invalid(error: ValidationError, where: tuple[str, ...]) -> list[dict[str, Any]]:
    """The 422 detail of a query parameter or body that does not validate, located as FastAPI
    locates it (``["body", "site"]``, ``["query", "timeout"]``)."""
    return [
        {"type": e.get("type"), "loc": [*where, *e.get("loc", ())], "msg": str(e.get("msg"))}
        for e in error.errors()
    ]


def json_body(value: Any) -> bytes:
    """``value`` as a JSON body."""
    return json.dumps(value).encode()


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    content_type: bytes | None = JSON,
) -> None:
    """Send one whole answer (no body on a 204)."""
    fields = [(b"content-length", str(len(body) if status != 204 else 0).encode())]
    if body and content_type and status != 204:
        fields.append((b"content-type", content_type))
    for name, value in (headers or {}).items():
        fields.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body if status != 204 else b""})


async def lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: say so to the server."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
