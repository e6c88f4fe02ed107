"""A site's client of the hub: the calls an agent makes, over kept-alive HTTP/1.1 connections.

Every connection is opened by the site. The transport is the ingress's own HTTP/1.1 client
(``edgefleet.agent.upstream``): an exchange costs a few tens of microseconds of CPU, where httpx
costs over a millisecond, which matters for one agent on a small site and decides whether one
process can speak for ten thousand simulated sites. ``HttpxTransport`` speaks the same through
httpx, for tests that fake the hub with ``httpx.MockTransport`` or an ASGI app.

``HubClient`` adds what every call shares: the site's bearer token (its credential once joined),
and a hook told of every answer (the agent says once, loudly, when the hub refuses its
credential).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit

from edgefleet.agent.upstream import Response, UpstreamError, UpstreamPool

if TYPE_CHECKING:
    import httpx

JSON = "application/json"

IDLE_TIMEOUT = 60.0
"""Seconds an idle connection to the hub is kept: longer than the heartbeat interval (a beat
reuses it) and shorter than the hub's keep-alive (75 s), so the hub never closes one under a
request."""


class HubUnreachable(Exception):
    """The hub could not be reached, or the exchange broke: nothing or part of it happened."""


@dataclass(frozen=True)
class HubReply:
    """The hub's answer: status, header fields (names in lower case), body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        """2xx."""
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON (ValueError if it is not)."""
        return json.loads(self.body)

    def reason(self) -> str:
        """``HTTP 404: <detail>``: what a log line says of a refusal."""
        try:
            detail = self.json().get("detail")
        except (ValueError, AttributeError):
            detail = self.text[:200]
        return f"HTTP {self.status}: {detail}"

    def raise_for_status(self) -> None:
        """``HubRefused`` unless 2xx."""
        if not self.ok:
            raise HubRefused(self)


class HubRefused(Exception):
    """The hub answered with an error status."""

    def __init__(self, reply: HubReply) -> None:
        super().__init__(reply.reason())
        self.reply = reply


Lane = Literal["call", "long", "beat"]
"""Kinds of call: a watch (holds its connection while it waits), a heartbeat (must never
wait behind reports, or a busy moment makes a live site look dead), any other call."""


class HubTransport(Protocol):
    """One exchange with the hub at a time per call; connections are the transport's business."""

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        lane: Lane = "call",
    ) -> HubReply:
        """Send a request (``target``: path and query) and read the whole answer; raise
        ``HubUnreachable`` when the exchange fails. ``lane``: what kind of call it is, so that
        a transport shared by many sites keeps each kind from waiting behind another."""
        ...

    async def stream(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        lane: Lane = "call",
    ) -> HubStream:
        """Send a request and return once the answer's head came, its body to be read as it
        comes (``HubStream``); raise ``HubUnreachable`` when the exchange fails."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...


class HubStream(Protocol):
    """An answer whose body is read as it comes: a watch stream."""

    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's parts as they come; ``HubUnreachable`` when the exchange breaks."""
        ...

    async def aclose(self) -> None:
        """Done with it: the connection is kept when the body was read to its end."""
        ...


async def lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The lines of a body read as it comes (without their line ends), and whatever follows
    the last line end, if anything does."""
    held = b""
    async for chunk in chunks:
        held += chunk
        if b"\n" in held:
            *whole, held = held.split(b"\n")
            for line in whole:
                yield line
    if held:
        yield held


def tls_context(ca: str | None) -> ssl.SSLContext:
    """How to check an https hub: with the CA bundle ``ca`` (PEM), else the system's CAs;
    ``ValueError`` saying what is wrong with the file."""
    try:
        return ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--hub-ca {ca}: not a readable CA bundle (PEM): {exc}") from None


class PooledTransport:
    """The hub over ``UpstreamPool`` connections (see the module)."""

    def __init__(
        self,
        url: str,
        *,
        pool: UpstreamPool | None = None,
        long_pool: UpstreamPool | None = None,
        beat_pool: UpstreamPool | None = None,
        ca: str | None = None,
    ) -> None:
        """``url`` is the hub's base URL (http or https); ``ca`` checks an https hub. ``pool``
        carries the calls, ``long_pool`` the watch streams and ``beat_pool`` the heartbeats
        (default: all in one pool); each may be shared by many clients of one hub (the
        simulator's sites: a few connections for the calls of thousands of sites, one each for
        their watch streams)."""
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"hub URL {url!r}: expected http(s)://HOST[:PORT]")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path
        # A CA given is read even for a plain http hub: a wrong path is an error at start, not
        # when the hub moves to https.
        tls = tls_context(ca) if parts.scheme == "https" or ca else None
        if parts.scheme != "https":
            tls = None
        self._own_pool = pool is None
        self.pool = (
            pool
            if pool is not None
            else UpstreamPool(max_per_host=8, idle_timeout=IDLE_TIMEOUT, tls=tls)
        )
        self.long_pool = long_pool if long_pool is not None else self.pool
        self.beat_pool = beat_pool if beat_pool is not None else self.pool
        for given in (pool, long_pool, beat_pool):
            if given is not None and tls is not None and given.tls is None:
                raise ValueError("a shared pool for an https hub must be made with its TLS context")

    async def _send(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        lane: Lane,
    ) -> Response:
        """Send a request on the pool of its lane; the answer once its head came."""
        fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        pool = self.long_pool if lane == "long" else self.beat_pool if lane == "beat" else self.pool
        try:
            return await pool.request(
                method,
                host=self.host,
                port=self.port,
                target=(self.prefix + target).encode("ascii"),
                headers=fields,
                body=body,
                head_timeout=timeout,
            )
        except (UpstreamError, OSError) as exc:
            raise HubUnreachable(f"{self.host}:{self.port}: {exc}") from exc

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        lane: Lane = "call",
    ) -> HubReply:
        """See ``HubTransport.request``."""
        reply = await self._send(method, target, headers, body, timeout, lane)
        try:
            async with reply:
                data = await reply.read()
        except (UpstreamError, OSError) as exc:
            raise HubUnreachable(f"{self.host}:{self.port}: {exc}") from exc
        return HubReply(status=reply.status, headers=_lowered(reply.headers), body=data)

    async def stream(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        lane: Lane = "call",
    ) -> HubStream:
        """See ``HubTransport.stream``."""
        reply = await self._send(method, target, headers, None, timeout, lane)
        return _PooledStream(reply, f"{self.host}:{self.port}")

    async def aclose(self) -> None:
        """See ``HubTransport.aclose`` (a shared pool is its owner's to close)."""
        if self._own_pool:
            for pool in {id(p): p for p in (self.pool, self.long_pool, self.beat_pool)}.values():
                await pool.aclose()


def _lowered(fields: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header fields as text, names in lower case."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in fields}


class _PooledStream:
    """A ``HubStream`` over an ``UpstreamPool`` response."""

    def __init__(self, reply: Response, where: str) -> None:
        self.status = reply.status
        self.headers: Mapping[str, str] = _lowered(reply.headers)
        self._reply = reply
        self._where = where

    async def chunks(self) -> AsyncIterator[bytes]:
        """See ``HubStream.chunks``."""
        try:
            async for chunk in self._reply:
                yield chunk
        except (UpstreamError, OSError) as exc:
            raise HubUnreachable(f"{self._where}: {exc}") from exc

    async def aclose(self) -> None:
        """See ``HubStream.aclose``."""
        await self._reply.aclose()


class HttpxTransport:
    """The hub through an ``httpx.AsyncClient`` (tests: ``MockTransport``, ASGI apps).

    httpx is imported here only, when a call is made: an agent never loads it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        lane: Lane = "call",
    ) -> HubReply:
        """See ``HubTransport.request``."""
        import httpx

        try:
            reply = await self.client.request(
                method, target, headers=dict(headers), content=body, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise HubUnreachable(str(exc) or type(exc).__name__) from exc
        return HubReply(
            status=reply.status_code,
            headers={k.lower(): v for k, v in reply.headers.items()},
            body=reply.content,
        )

    async def stream(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        lane: Lane = "call",
    ) -> HubStream:
        """See ``HubTransport.stream``."""
        import httpx

        request = self.client.build_request(method, target, headers=dict(headers), timeout=timeout)
        try:
            reply = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise HubUnreachable(str(exc) or type(exc).__name__) from exc
        return _HttpxStream(reply)

    async def aclose(self) -> None:
        """See ``HubTransport.aclose``."""
        await self.client.aclose()


class _HttpxStream:
    """A ``HubStream`` over an httpx response."""

    def __init__(self, reply: httpx.Response) -> None:
        self.status = reply.status_code
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in reply.headers.items()}
        self._reply = reply

    async def chunks(self) -> AsyncIterator[bytes]:
        """See ``HubStream.chunks``."""
        import httpx

        try:
            async for chunk in self._reply.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise HubUnreachable(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        """See ``HubStream.aclose``."""
        await self._reply.aclose()


def _target(path: str, params: Mapping[str, Any] | None) -> str:
    """The request target: the path and its query."""
    return path + ("?" + urlencode(params) if params else "")


AnswerHook = Callable[[str | None, HubReply, float], Awaitable[None]]
"""Told of each answer: the token the call was made with, the answer, when it was sent
(monotonic)."""


class HubClient:
    """The agent's calls to the hub, with the site's token (see the module)."""

    def __init__(
        self,
        transport: HubTransport,
        *,
        token: str | None = None,
        on_answer: AnswerHook | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.transport = transport
        self.token = token
        """Sent as ``Authorization: Bearer``: a configured token, then the site's credential."""
        self.on_answer = on_answer
        self.timeout = timeout
        """Seconds a call other than a watch waits for an answer."""

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        token: str | None = None,
        timeout: float | None = None,
        lane: Lane = "call",
    ) -> HubReply:
        """One call (``token`` instead of the client's, for a join; ``lane``: what kind of call,
        see ``Lane``); ``HubUnreachable``."""
        used = token if token is not None else self.token
        sent = time.monotonic()
        reply = await self.transport.request(
            method,
            _target(path, params),
            headers=self._headers(used, json_body=body is not None),
            body=body,
            timeout=self.timeout if timeout is None else timeout,
            lane=lane,
        )
        await self._told(used, reply, sent)
        return reply

    async def stream(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        lane: Lane = "call",
    ) -> HubStream:
        """GET ``path`` and return once the answer's head came, its body to be read as it comes
        (``aclose`` it when done); ``HubRefused`` (its body read) unless 2xx."""
        used = self.token
        sent = time.monotonic()
        stream = await self.transport.stream(
            "GET",
            _target(path, params),
            headers=self._headers(used, json_body=False),
            timeout=self.timeout if timeout is None else timeout,
            lane=lane,
        )
        if 200 <= stream.status < 300:
            await self._told(used, HubReply(status=stream.status, headers=stream.headers), sent)
            return stream
        try:
            body = b"".join([chunk async for chunk in stream.chunks()])
        finally:
            await stream.aclose()
        reply = HubReply(status=stream.status, headers=stream.headers, body=body)
        await self._told(used, reply, sent)
        raise HubRefused(reply)

    @staticmethod
    def _headers(token: str | None, *, json_body: bool) -> dict[str, str]:
        """What every call sends: JSON accepted, the token, the type of a JSON body."""
        headers = {"Accept": JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if json_body:
            headers["Content-Type"] = JSON
        return headers

    async def _told(self, used: str | None, reply: HubReply, sent: float) -> None:
        """Tell ``on_answer`` of an answer (its failures are not the call's)."""
        if self.on_answer is not None:
            with contextlib.suppress(Exception):
                await self.on_answer(used, reply, sent)

    async def get(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        lane: Lane = "call",
    ) -> HubReply:
        """GET ``path``."""
        return await self.call("GET", path, params=params, timeout=timeout, lane=lane)

    async def post(
        self, path: str, body: bytes, *, token: str | None = None, lane: Lane = "call"
    ) -> HubReply:
        """POST a JSON ``body`` to ``path``."""
        return await self.call("POST", path, body=body, token=token, lane=lane)

    async def aclose(self) -> None:
        """Close the transport."""
        await self.transport.aclose()
