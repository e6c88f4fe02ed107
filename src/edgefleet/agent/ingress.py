"""The site ingress: HTTP for ``<app>.<tenant>.edge.internal`` goes to a ready local replica.

The agent's HTTP server on the site address and ingress port serves two things: requests whose
``Host`` names an app go to one of the app's ready replicas at this site; everything else (the
agent's own ``/_edgefleet/...`` API) goes to the local API.

The decisions are pure functions (``parse_app_host``, ``pick_replica``, the header rewriting);
``Ingress`` is the thin ASGI shell that applies them with an ``httpx.AsyncClient``. Bodies are
streamed both ways, never held whole.

Answers of the ingress itself (plain text):

- 404: no replica of the app is placed at this site;
- 503 with ``Retry-After: 1``: the app is placed here but no replica is ready;
- 502: the chosen replica refused the connection, and so did another one tried once more;
- 504: the replica accepted the request but did not answer in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.model import ReplicaState

log = logging.getLogger(__name__)

ZONE = "edge.internal"
"""DNS zone apps are named in: ``<app>.<tenant>.edge.internal``."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection, not the message (RFC 9110 7.6.1); never forwarded."""

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PORT = re.compile(r"^[0-9]{0,5}$")
_STOPPED = "stopped"


# ---------------------------------------------------------------------------------------------
# Pure decisions


def parse_app_host(host: str, zone: str = ZONE) -> tuple[str, str] | None:
    """``(tenant, app)`` named by a ``Host`` header value, or None when it names no app.

    Accepts ``<app>.<tenant>.<zone>`` with an optional ``:port`` and an optional trailing dot,
    in any case (host names are case-insensitive, RFC 9110 4.2.3). Each name must be a valid DNS
    label, as app and tenant names are.
    """
    name = host.strip().lower()
    if name.startswith("["):
        return None  # an IPv6 literal, never an app
    name, _, port = name.partition(":")
    if not _PORT.match(port):
        return None
    name = name.removesuffix(".")
    suffix = "." + zone.lower().strip(".")
    if not name.endswith(suffix):
        return None
    labels = name.removesuffix(suffix).split(".")
    if len(labels) != 2 or not all(_LABEL.match(label) for label in labels):
        return None
    app, tenant = labels
    return tenant, app


def pick_replica(
    replicas: Sequence[ReplicaState], outstanding: Mapping[str, int]
) -> ReplicaState | None:
    """The ready replica with the fewest outstanding requests (ties: lowest index), or None.

    ``outstanding`` counts requests in flight per replica id; a missing id counts 0. Replicas
    without a port cannot be called and are skipped.
    """
    ready = [r for r in replicas if r.ready and r.port is not None]
    if not ready:
        return None
    return min(ready, key=lambda r: (outstanding.get(r.id, 0), r.index))


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in ``Connection`` (hop-by-hop as well, RFC 9110 7.6.1)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return named


def _end_to_end(
    headers: Sequence[tuple[bytes, bytes]], *, drop: Iterable[str] = ()
) -> list[tuple[bytes, bytes]]:
    """``headers`` without hop-by-hop ones and without ``drop``; names lowercased."""
    banned = {h.encode() for h in (*HOP_BY_HOP, *drop)} | _connection_named(headers)
    return [(n.lower(), v) for n, v in headers if n.lower() not in banned]


def forward_request_headers(
    headers: Sequence[tuple[bytes, bytes]], *, client: str | None, scheme: str, via: str
) -> list[tuple[bytes, bytes]]:
    """The headers to send a replica for a client's request.

    Hop-by-hop headers go; ``Host`` stays (apps may serve several names); ``X-Forwarded-For``
    gets the client's address appended, ``X-Forwarded-Host`` is the original ``Host``,
    ``X-Forwarded-Proto`` the client's scheme, and ``Via`` names this hop (RFC 9110 7.6.3).
    ``Expect`` goes too: the server in front has answered ``100-continue`` already.
    """
    kept = _end_to_end(
        headers, drop=("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "expect")
    )
    chain = [v.strip() for n, v in headers if n.lower() == b"x-forwarded-for" and v.strip()]
    if client:
        chain.append(client.encode("latin-1"))
    host = next((v for n, v in headers if n.lower() == b"host"), b"")
    kept.extend(
        [
            *([(b"x-forwarded-for", b", ".join(chain))] if chain else []),
            *([(b"x-forwarded-host", host)] if host else []),
            (b"x-forwarded-proto", scheme.encode("latin-1")),
            (b"via", via.encode("latin-1")),
        ]
    )
    return kept


def forward_response_headers(
    headers: Sequence[tuple[bytes, bytes]], *, via: str
) -> list[tuple[bytes, bytes]]:
    """The headers to send the client for a replica's response: end-to-end ones plus ``Via``."""
    return [*_end_to_end(headers), (b"via", via.encode("latin-1"))]


# ---------------------------------------------------------------------------------------------
# The replicas, observed


class LocalReplicas:
    """The driver's replicas per app key, observed again after a change or when ``max_age`` old.

    ``observe()`` is thread-safe but not free (a lock and a model per replica): once per request
    would tax every request. ``changed()`` may be called from any thread (the driver's).
    """

    def __init__(
        self,
        observe: Callable[[], Mapping[str, Sequence[ReplicaState]]],
        *,
        max_age: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap ``observe``; the first ``get()`` observes."""
        self._observe = observe
        self._max_age = max_age
        self._clock = clock
        self._view: Mapping[str, Sequence[ReplicaState]] = {}
        self._taken_at: float | None = None
        self._stale = True

    def changed(self) -> None:
        """The replicas changed: the next ``get()`` observes again."""
        self._stale = True

    def get(self) -> Mapping[str, Sequence[ReplicaState]]:
        """Replicas per ``tenant/app``, at most ``max_age`` seconds old and newer than a change."""
        now = self._clock()
        if self._stale or self._taken_at is None or now - self._taken_at >= self._max_age:
            # Cleared before observing: a change during observe() marks the view stale again.
            self._stale = False
            self._view = self._observe()
            self._taken_at = now
        return self._view


# ---------------------------------------------------------------------------------------------
# The ASGI shell


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


@dataclass
class _Body:
    """The client's request body as an async iterator, and how far it was read."""

    receive: Receive
    started: bool = False
    """Some of the body was handed on: the request can no longer be sent elsewhere."""
    done: bool = False
    """The whole body was read."""

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as the client sends them."""
        self.started = True
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.done = True
                return


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _has_body(scope: Scope) -> bool:
    if _header(scope, b"transfer-encoding") is not None:
        return True
    length = _header(scope, b"content-length")
    return length is not None and length.strip() not in (b"", b"0")


class Ingress:
    """ASGI app: app hosts go to a ready local replica, everything else to ``fallback``."""

    def __init__(
        self,
        fallback: ASGIApp,
        *,
        site: str,
        address: str,
        replicas: LocalReplicas,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        """Serve ``site``'s apps, whose replicas listen on ``address``.

        ``transport`` replaces the network (tests); one connection pool serves every replica.
        """
        self.fallback = fallback
        self.site = site
        self.address = address
        self.replicas = replicas
        self.via = f"1.1 edgefleet-{site}"
        self.outstanding: dict[str, int] = {}
        """Requests in flight per replica id."""
        self._client = httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            timeout=timeout or httpx.Timeout(60.0, connect=2.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            # Responses pass through: the ingress keeps no cookies of anybody's.
            cookies=http.cookiejar.CookieJar(
                http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
            ),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route by ``Host``: an app name goes to its replicas, anything else to ``fallback``."""
        if scope["type"] in ("http", "websocket"):
            host = _header(scope, b"host")
            target = parse_app_host(host.decode("latin-1")) if host else None
            if target is not None:
                if scope["type"] == "websocket":
                    # Not proxied yet; closing before accept answers 403.
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await self._serve(scope, receive, send, *target)
                return
        await self.fallback(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, tenant: str, app: str
    ) -> None:
        key = f"{tenant}/{app}"
        placed = [r for r in self.replicas.get().get(key, ()) if r.state != _STOPPED]
        if not placed:
            await _plain(send, 404, f"app {key} has no replica at site {self.site}\n")
            return
        responded = False

        async def tracked_send(message: Message) -> None:
            nonlocal responded
            responded = True
            await send(message)

        try:
            await self._forward(scope, receive, tracked_send, placed, key)
        except _ClientGone:
            pass
        except Exception:
            # uvicorn would survive this too, but the client deserves an answer, and the log
            # the request that caused it.
            log.exception("ingress: %s %s for %s failed", scope["method"], scope["path"], key)
            if not responded:
                await _plain(send, 502, f"the ingress of site {self.site} failed on {key}\n")

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        placed: Sequence[ReplicaState],
        key: str,
    ) -> None:
        client = scope.get("client")
        headers = forward_request_headers(
            scope["headers"],
            client=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
            via=self.via,
        )
        body = _Body(receive)
        content = body.chunks() if _has_body(scope) else None
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        tried: set[str] = set()
        while True:
            replica = pick_replica([r for r in placed if r.id not in tried], self.outstanding)
            if replica is None:
                if tried:
                    await _plain(
                        send, 502, f"replicas of {key} at site {self.site} refused the connection\n"
                    )
                else:
                    await _plain(
                        send,
                        503,
                        f"no replica of {key} at site {self.site} is ready\n",
                        headers=[(b"retry-after", b"1")],
                    )
                return
            tried.add(replica.id)
            request = httpx.Request(
                scope["method"],
                httpx.URL(scheme="http", host=self.address, port=replica.port, raw_path=target),
                headers=headers,
                content=content,
            )
            self.outstanding[replica.id] = self.outstanding.get(replica.id, 0) + 1
            try:
                try:
                    upstream = await self._client.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                    # Nothing was sent: safe to try another replica, once.
                    log.warning("ingress: replica %s of %s: %s", replica.id, key, error)
                    if body.started or len(tried) >= 2:
                        await _plain(
                            send,
                            502,
                            f"replica {replica.id} at site {self.site} refused the connection\n",
                        )
                        return
                    continue
                except httpx.TimeoutException:
                    await _plain(send, 504, f"replica {replica.id} did not answer in time\n")
                    return
                except httpx.HTTPError as error:
                    log.warning("ingress: replica %s of %s: %s", replica.id, key, error)
                    await _plain(send, 502, f"replica {replica.id} failed: {error}\n")
                    return
                try:
                    await self._relay(upstream, receive, send, watch=body.done or content is None)
                finally:
                    await upstream.aclose()
                return
            finally:
                left = self.outstanding[replica.id] - 1
                if left:
                    self.outstanding[replica.id] = left
                else:
                    del self.outstanding[replica.id]

    async def _relay(
        self, upstream: httpx.Response, receive: Receive, send: Send, *, watch: bool
    ) -> None:
        """Stream the replica's response to the client; stop if the client goes away."""

        async def pump() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": forward_response_headers(upstream.headers.raw, via=self.via),
                }
            )
            try:
                async for chunk in upstream.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as error:
                # Headers are gone: all that is left is to cut the connection, so that the
                # client sees a truncated response rather than a complete-looking one.
                log.warning("ingress: response from replica broke off: %s", error)
                raise _ClientGone from error
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        if not watch:
            # The request body is still being read: receive() belongs to it.
            await pump()
            return

        async def client_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        pumping = asyncio.ensure_future(pump())
        watching = asyncio.ensure_future(client_left())
        try:
            await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pumping, watching):
                task.cancel()
            for task in (pumping, watching):
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _plain(
    send: Send, status: int, text: str, *, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
