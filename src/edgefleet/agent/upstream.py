"""The ingress's HTTP/1.1 client: kept-alive connections to local replicas and neighbour ingresses.

Why not httpx: on a 2-core site an httpx exchange costs about 1.5 ms of CPU and its pool slows
as connections multiply, so an ingress built on it collapses into timeouts at a few hundred
requests a second while the replica behind it serves a thousand. This client speaks only what a
reverse proxy needs (RFC 9112): one request per connection at a time, no redirects, cookies,
content decoding or proxies, and it parses a response head with ``bytes.find`` and ``split``.

Layout:

- pure parts: ``parse_response_head``, ``response_framing``, ``encode_request_head``;
- ``UpstreamPool``: connections per ``(host, port)``, at most ``max_per_host`` of them (further
  requests wait up to ``acquire_timeout``), idle ones reused for ``idle_timeout`` seconds;
- ``Response``: status and headers, then the body as an async iterator of decoded chunks
  (``Content-Length``, chunked, or until the server closes). ``aclose()`` gives the connection
  back when the body was read to its end and neither side said ``Connection: close``, and closes
  it otherwise (a client that went away, a broken response);
- ``Upstream``: the interface the ingress uses, and ``HttpxUpstream``, the same interface over an
  httpx transport (tests fake the network with ``httpx.MockTransport(handler)``).

Failures are distinct exceptions, so that the ingress can answer each as it should:
``ConnectFailed`` (nothing was sent: the request may go elsewhere), ``HeadTimeout`` (sent, no
answer in time: 504), ``ResponseBroken`` (the connection broke or the answer was not HTTP: 502
before the head, a cut connection after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    import httpx

CONNECT_TIMEOUT = 2.0
"""Seconds to open a TCP connection."""
HEAD_TIMEOUT = 60.0
"""Seconds from the end of the request to the response head."""
READ_TIMEOUT = 60.0
"""Seconds any one read of the response body, or write of the request, may wait."""
ACQUIRE_TIMEOUT = 10.0
"""Seconds a request waits for a connection when ``max_per_host`` are busy; beyond, it fails as
``ConnectFailed`` (nothing was sent) instead of piling up in the ingress's memory."""
IDLE_TIMEOUT = 4.0
"""Seconds an idle connection is kept. Below uvicorn's 5 s keep-alive (neighbour ingresses), so
that a request is not sent on a connection the server is closing at that moment."""
MAX_PER_HOST = 256
"""Connections per ``(host, port)``, busy and idle."""
HEAD_MAX = 64 * 1024
"""Largest response head accepted (status line and header fields)."""
HEADERS_MAX = 256
"""Most header fields in a response head."""
CHUNK_LINE_MAX = 4096
"""Longest chunk-size line (with extensions) or trailer field accepted."""
READ_HIGH = 256 * 1024
"""Bytes buffered from a connection before reading from it pauses (flow control)."""

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
"""Methods a request may be sent again with after a connection failed under it (RFC 9110
9.2.2); a proxy must not repeat the others."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(rb"[\x00\r\n]")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


# ---------------------------------------------------------------------------------------------
# Failures


class UpstreamError(Exception):
    """An exchange with an upstream server failed."""


class ConnectFailed(UpstreamError):
    """No connection could be had (refused, unreachable, timed out, or every connection to the
    host busy for ``acquire_timeout``): nothing was sent, so the request may go elsewhere."""


class HeadTimeout(UpstreamError):
    """The server took the request but sent no response head in time (or stopped reading the
    request for ``read_timeout``)."""


class ResponseBroken(UpstreamError):
    """The connection broke, stalled or carried something that is not HTTP/1.x, after the
    request was (partly) sent: before the head, nothing reached the client yet; after it, the
    response is cut short."""


# ---------------------------------------------------------------------------------------------
# Pure parts


@dataclass(frozen=True)
class ResponseHead:
    """A parsed response status line and header section (RFC 9112 4, 5)."""

    version: bytes
    """``HTTP/1.1`` or ``HTTP/1.0``."""
    status: int
    """Status code, 100 to 999."""
    reason: bytes
    """Reason phrase, possibly empty."""
    headers: list[tuple[bytes, bytes]]
    """Header fields in order, as received (names not lowercased), values without the
    surrounding whitespace; obsolete line folding is replaced by a space (RFC 9112 5.2)."""


def parse_response_head(head: bytes) -> ResponseHead:
    """Parse a response head ending with CRLF CRLF; raise ``ResponseBroken`` if it is not one.

    Whitespace between a field name and its colon is removed, as a proxy must (RFC 9112 5.1);
    CR, LF or NUL inside a field value reject the response (RFC 9110 5.5).
    """
    if len(head) > HEAD_MAX:
        raise ResponseBroken(f"response head longer than {HEAD_MAX} bytes")
    lines = head.removesuffix(b"\r\n\r\n").split(b"\r\n")
    status_line = lines[0]
    version = status_line[:8]
    if (
        version not in (b"HTTP/1.1", b"HTTP/1.0")
        or status_line[8:9] != b" "
        or not status_line[9:12].isdigit()
        or (len(status_line) > 12 and status_line[12:13] != b" ")
    ):
        raise ResponseBroken(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(status_line[9:12])
    if status < 100:
        raise ResponseBroken(f"not an HTTP status code: {status_line[9:12]!r}")
    if len(lines) - 1 > HEADERS_MAX:
        raise ResponseBroken(f"more than {HEADERS_MAX} header fields")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise ResponseBroken("the header section starts with a continuation line")
            name, value = headers[-1]
            headers[-1] = (name, (value + b" " + line.strip(b" \t")).strip(b" "))
            continue
        name, colon, value = line.partition(b":")
        name = name.rstrip(b" \t")
        if not colon or not _TOKEN.fullmatch(name):
            raise ResponseBroken(f"not an HTTP header field: {line[:80]!r}")
        value = value.strip(b" \t")
        if _FORBIDDEN_IN_VALUE.search(value):
            raise ResponseBroken(f"CR, LF or NUL in the value of {name[:80]!r}")
        headers.append((name, value))
    return ResponseHead(version, status, status_line[13:], headers)


NO_BODY = "none"
"""Framing: the response has no body."""
LENGTH = "length"
"""Framing: the body is ``Content-Length`` bytes."""
CHUNKED = "chunked"
"""Framing: the body is in chunks (RFC 9112 7.1)."""
UNTIL_CLOSE = "close"
"""Framing: the body runs until the server closes the connection."""


@dataclass(frozen=True)
class Framing:
    """How a response body is delimited (RFC 9112 6.3), and whether the connection stays."""

    kind: str
    """``NO_BODY``, ``LENGTH``, ``CHUNKED`` or ``UNTIL_CLOSE``."""
    length: int = 0
    """Body length, for ``LENGTH``."""
    keep_alive: bool = True
    """The connection may carry another request once this response is read to its end."""


def connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    """The lowercased tokens of every ``Connection`` header field."""
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    }


def response_framing(*, method: bytes, head: ResponseHead, request_close: bool) -> Framing:
    """The framing of the response ``head`` to a ``method`` request (RFC 9112 6.3).

    ``request_close``: the request said ``Connection: close``. Raises ``ResponseBroken`` on a
    framing that could smuggle a response: both ``Transfer-Encoding`` and ``Content-Length``,
    ``Transfer-Encoding`` in HTTP/1.0, or an invalid or ambiguous ``Content-Length``.
    """
    tokens = connection_tokens(head.headers)
    if head.version == b"HTTP/1.1":
        keep_alive = b"close" not in tokens
    else:
        keep_alive = b"keep-alive" in tokens and b"close" not in tokens
    keep_alive = keep_alive and not request_close
    if method == b"HEAD" or 100 <= head.status < 200 or head.status in (204, 304):
        return Framing(NO_BODY, keep_alive=keep_alive)
    encodings: list[bytes] = []
    lengths: set[bytes] = set()
    for name, value in head.headers:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            encodings.extend(t.strip().lower() for t in value.split(b",") if t.strip())
        elif lowered == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
    if encodings:
        if lengths:
            raise ResponseBroken("both Transfer-Encoding and Content-Length in the response")
        if head.version != b"HTTP/1.1":
            raise ResponseBroken("Transfer-Encoding in an HTTP/1.0 response")
        if encodings[-1] != b"chunked":
            return Framing(UNTIL_CLOSE, keep_alive=False)
        return Framing(CHUNKED, keep_alive=keep_alive)
    if lengths:
        if len(lengths) > 1 or not all(v.isdigit() and len(v) <= 18 for v in lengths):
            raise ResponseBroken(f"bad Content-Length: {sorted(lengths)!r}")
        return Framing(LENGTH, length=int(lengths.pop()), keep_alive=keep_alive)
    return Framing(UNTIL_CLOSE, keep_alive=False)


def encode_request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    authority: bytes,
    length: int | None,
    chunked: bool,
) -> bytes:
    """The bytes of a request head (RFC 9112 3): request line, ``headers`` and framing.

    ``Host`` is added as ``authority`` when ``headers`` have none. ``Transfer-Encoding`` and
    ``Content-Length`` fields given are dropped: the framing is ``Content-Length: length`` (when
    not None) or ``Transfer-Encoding: chunked`` (when ``chunked``), or none. Raises
    ``ValueError`` for a method, target or field that would break the request's framing.
    """
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"not an HTTP method: {method[:40]!r}")
    if not _TARGET.fullmatch(target):
        raise ValueError(f"not a request target: {target[:80]!r}")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    names: list[bytes] = []
    values: list[bytes] = []
    has_host = False
    for name, value in headers:
        lowered = name.lower()
        if lowered in (b"transfer-encoding", b"content-length"):
            continue
        has_host = has_host or lowered == b"host"
        names.append(name)
        values.append(value)
        parts += (name, b": ", value, b"\r\n")
    # One check over all fields (the usual case is valid), then the culprit if not.
    if (
        (names and not _TOKEN.fullmatch(b"".join(names)))
        or _FORBIDDEN_IN_VALUE.search(b"".join(values))
        or not all(names)
    ):
        bad = next(
            n
            for n, v in zip(names, values, strict=True)
            if not _TOKEN.fullmatch(n) or _FORBIDDEN_IN_VALUE.search(v)
        )
        raise ValueError(f"not a valid header field: {bad[:40]!r}")
    if not has_host:
        parts += (b"host: ", authority, b"\r\n")
    if length is not None:
        parts += (b"content-length: ", str(length).encode(), b"\r\n")
    elif chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def _request_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The ``Content-Length`` the caller gave, or None; ``ValueError`` if it is not one number."""
    values = {
        v.strip()
        for name, value in headers
        if name.lower() == b"content-length"
        for v in value.split(b",")
    }
    if not values:
        return None
    if len(values) > 1 or not all(v.isdigit() and len(v) <= 18 for v in values):
        raise ValueError(f"bad Content-Length in the request: {sorted(values)!r}")
    return int(values.pop())


# ---------------------------------------------------------------------------------------------
# The response


class ResponseBody(Protocol):
    """Where a response's body comes from."""

    async def read_chunk(self) -> bytes:
        """The next part of the body; ``b""`` once it is complete. Raises ``ResponseBroken``."""
        ...

    async def close(self) -> None:
        """Let go of the body, read or not (returns or closes the connection)."""
        ...


class Response:
    """A response: status and headers, then the body as an async iterator of its chunks.

    The body can be iterated once. Always ``aclose()`` (or use ``async with``): that gives the
    connection back to the pool, or closes it when the body was not read to its end.
    """

    def __init__(
        self, *, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: ResponseBody
    ) -> None:
        """A response whose body comes from ``body``."""
        self.status = status
        """Status code."""
        self.reason = reason
        """Reason phrase (HTTP/2 and ASGI have none; kept for logs)."""
        self.headers = headers
        """Header fields as received, hop-by-hop ones included."""
        self._body = body
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._body.read_chunk()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self])

    async def aclose(self) -> None:
        """Done with the response (more than once is fine)."""
        if not self._closed:
            self._closed = True
            await self._body.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


RequestBody = bytes | AsyncIterable[bytes] | None
"""A request body: none, all of it, or its chunks as they arrive."""


class Upstream(Protocol):
    """What the ingress needs from an HTTP client."""

    async def request(
        self,
        method: str,
        *,
        host: str,
        port: int,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: RequestBody = None,
        head_timeout: float | None = None,
    ) -> Response:
        """Send a request to ``host:port``; the response once its head arrived.

        Raises ``ConnectFailed``, ``HeadTimeout`` or ``ResponseBroken``; an exception raised by
        the ``body`` iterator passes through as it is.
        """
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


# ---------------------------------------------------------------------------------------------
# One connection


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
    """One TCP connection: a receive buffer with timed reads, flow control both ways."""

    def __init__(self, pool: UpstreamPool | None, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        """The server sent FIN, or the connection is gone."""
        self.lost = False
        """The connection is gone."""
        self.reset = False
        """The connection ended in an error (a reset), not with the server's FIN."""
        self.idle = False
        """In the pool's idle list."""
        self.idle_since = 0.0
        self.exchanges = 0
        """Exchanges completed on this connection."""
        self.sent = False
        """Bytes of the current exchange were handed to the transport."""
        self.received = False
        """Bytes arrived during the current exchange."""
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.received = True
        if len(self.buffer) > READ_HIGH and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too: the connection cannot carry another exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self.reset = self.reset or exc is not None
        self._wake()
        drain, self._drain_waiter = self._drain_waiter, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self.idle and self.pool is not None:
            self.pool._lost_idle(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain, self._drain_waiter = self._drain_waiter, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- state -------------------------------------------------------------------------------------

    def reusable(self) -> bool:
        """Idle and sound: no FIN, no stray bytes from the server, not closing."""
        return (
            not self.eof
            and not self.buffer
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def abort(self) -> None:
        """Close at once, dropping what is not sent: the exchange did not end cleanly."""
        self.reset = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close after what is written (FIN)."""
        if self.transport is not None:
            self.transport.close()

    # -- reading -----------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _more(self, timeout: float) -> None:
        """Wait until data or EOF arrive; ``TimeoutError`` after ``timeout`` seconds."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(max(0.0, timeout), _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:
                self._waiter = None

    def _take(self, count: int) -> bytes:
        if count >= len(self.buffer):
            data = bytes(self.buffer)
            self.buffer.clear()
        else:
            data = bytes(self.buffer[:count])
            del self.buffer[:count]
        if self._reading_paused and len(self.buffer) < READ_HIGH // 4 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def read_head(self, deadline: float) -> bytes:
        """Bytes up to and including the next CRLF CRLF; ``TimeoutError`` at ``deadline``
        (loop time), ``ResponseBroken`` when too long, ``_Closed`` when the stream ends."""
        loop = asyncio.get_running_loop()
        searched = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", max(0, searched - 3))
            if end >= 0:
                return self._take(end + 4)
            if len(self.buffer) > HEAD_MAX:
                raise ResponseBroken(f"response head longer than {HEAD_MAX} bytes")
            if self.eof:
                raise _Closed
            searched = len(self.buffer)
            await self._more(deadline - loop.time())

    async def read_line(self, timeout: float) -> bytes:
        """The next line with its CRLF (chunk sizes, trailers)."""
        searched = 0
        while True:
            end = self.buffer.find(b"\r\n", max(0, searched - 1))
            if end >= 0:
                return self._take(end + 2)
            if len(self.buffer) > CHUNK_LINE_MAX:
                raise ResponseBroken(f"a chunk line is longer than {CHUNK_LINE_MAX} bytes")
            if self.eof:
                raise ResponseBroken("the server closed the connection mid-body")
            searched = len(self.buffer)
            await self._read_wait(timeout)

    async def read_some(self, most: int, timeout: float) -> bytes:
        """Up to ``most`` bytes, at least one; ``b""`` at the end of the stream."""
        while not self.buffer:
            if self.eof:
                if self.reset:
                    # Not the end of a body that runs until the server closes: a cut one.
                    raise ResponseBroken("the connection was reset mid-body")
                return b""
            await self._read_wait(timeout)
        return self._take(most)

    async def _read_wait(self, timeout: float) -> None:
        try:
            await self._more(timeout)
        except TimeoutError:
            raise ResponseBroken(f"the response stalled for {timeout:g} s") from None

    # -- writing -----------------------------------------------------------------------------------

    async def write(self, data: bytes, timeout: float) -> None:
        """Send ``data``; wait while the server does not read (``HeadTimeout`` after
        ``timeout`` seconds), ``_Closed`` if the connection is gone."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise _Closed
        self.sent = True
        self.transport.write(data)
        if self._writing_paused:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._drain_waiter = waiter
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            except TimeoutError:
                raise HeadTimeout(
                    f"the server did not read the request for {timeout:g} s"
                ) from None
            finally:
                timer.cancel()
            if self.lost:
                raise _Closed


class _Closed(Exception):
    """The server closed the connection (see ``_Connection.received`` for whether it answered
    anything first)."""


# ---------------------------------------------------------------------------------------------
# The body of a pooled response


class _PooledBody:
    """Reads a body framed as ``framing`` off a connection, then returns it to the pool."""

    def __init__(
        self,
        pool: UpstreamPool,
        connection: _Connection,
        framing: Framing,
        *,
        request_complete: bool,
    ) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._framing = framing
        self._left = framing.length  # bytes left of the body or of the current chunk
        self._done = framing.kind == NO_BODY or (framing.kind == LENGTH and not framing.length)
        self._in_chunk = False
        self._reusable = framing.keep_alive and request_complete
        self._broken = False

    async def read_chunk(self) -> bytes:
        connection = self._connection
        if self._broken:
            raise ResponseBroken("the response broke off already")
        if self._done or connection is None:
            return b""
        timeout = self._pool.read_timeout
        kind = self._framing.kind
        try:
            if kind == LENGTH:
                data = await connection.read_some(self._left, timeout)
                if not data:
                    raise ResponseBroken(
                        f"the server closed the connection {self._left} bytes short of the "
                        "Content-Length"
                    )
                self._left -= len(data)
                if not self._left:
                    self._finish()
                return data
            if kind == CHUNKED:
                return await self._chunked(connection, timeout)
            data = await connection.read_some(READ_HIGH, timeout)
            if not data:
                self._finish()
            return data
        except BaseException:
            self._broken = True
            self._release(reusable=False)
            raise

    async def _chunked(self, connection: _Connection, timeout: float) -> bytes:
        if not self._in_chunk:
            line = await connection.read_line(timeout)
            size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size_text):
                raise ResponseBroken(f"bad chunk size: {size_text[:20]!r}")
            self._left = int(size_text, 16)
            if not self._left:
                while await connection.read_line(timeout) != b"\r\n":
                    pass  # trailer fields: not forwarded (the ingress re-frames the body)
                self._finish()
                return b""
            self._in_chunk = True
        data = await connection.read_some(self._left, timeout)
        if not data:
            raise ResponseBroken("the server closed the connection mid-chunk")
        self._left -= len(data)
        if not self._left:
            self._in_chunk = False
            if await connection.read_line(timeout) != b"\r\n":
                raise ResponseBroken("a chunk does not end with CRLF")
        return data

    def _finish(self) -> None:
        """The body was read to its end: the connection is free for the next exchange now,
        while the caller still hands the last chunk on."""
        self._done = True
        self._release(reusable=self._reusable)

    async def close(self) -> None:
        self._release(reusable=self._done and self._reusable)

    def _release(self, *, reusable: bool) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            if reusable:
                connection.exchanges += 1
            self._pool._release(connection, reusable=reusable)


class _NoBody:
    async def read_chunk(self) -> bytes:
        return b""

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# The pool


@dataclass
class _Host:
    """Connections to one ``(host, port)``."""

    open: int = 0
    """Connections open or being opened, busy and idle."""
    idle: list[_Connection] | None = None
    """Idle connections, the most recently used last."""
    waiters: deque[asyncio.Future[_Connection | None]] | None = None
    """Requests waiting for a connection (a handed-over one) or a slot to open one (None)."""


class UpstreamPool:
    """Kept-alive HTTP/1.1 connections per ``(host, port)``; see the module docstring.

    A connection carries one exchange at a time. A request that fails on a reused connection
    before any byte of the response came, with a body not streamed yet and an idempotent method,
    is sent once more on a new connection: the server had closed the idle connection as it was
    taken. Cancelling a request or its response (the client went away) closes its connection.
    """

    def __init__(
        self,
        *,
        max_per_host: int = MAX_PER_HOST,
        connect_timeout: float = CONNECT_TIMEOUT,
        head_timeout: float = HEAD_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        acquire_timeout: float = ACQUIRE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """An empty pool; connections open on demand (over TLS with ``tls``, checking each
        server's certificate for its host name)."""
        if max_per_host < 1:
            raise ValueError(f"max_per_host must be >= 1, not {max_per_host}")
        self.max_per_host = max_per_host
        """Connections per ``(host, port)``, busy and idle."""
        self.connect_timeout = connect_timeout
        """Seconds to open a connection."""
        self.head_timeout = head_timeout
        """Seconds from the end of the request to the response head (unless a request says)."""
        self.read_timeout = read_timeout
        """Seconds one read of a response body, or one write of a request, may wait."""
        self.acquire_timeout = acquire_timeout
        """Seconds a request waits for a connection when ``max_per_host`` are busy."""
        self.idle_timeout = idle_timeout
        """Seconds an idle connection is kept for reuse."""
        self.tls = tls
        """TLS of every connection (None: plain TCP)."""
        self._clock = clock
        self._hosts: dict[tuple[str, int], _Host] = {}
        self._connections: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self.connections_opened = 0
        """Connections opened so far (a measure of reuse)."""
        self.retries = 0
        """Requests sent again on a new connection after a reused one failed."""

    # -- figures -----------------------------------------------------------------------------------

    def open_connections(self, host: str, port: int) -> int:
        """Connections to ``host:port`` open or opening, busy and idle."""
        entry = self._hosts.get((host, port))
        return entry.open if entry else 0

    def idle_connections(self, host: str, port: int) -> int:
        """Idle connections to ``host:port``."""
        entry = self._hosts.get((host, port))
        return len(entry.idle) if entry and entry.idle else 0

    # -- exchange ----------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        *,
        host: str,
        port: int,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: RequestBody = None,
        head_timeout: float | None = None,
    ) -> Response:
        """Send a request to ``host:port``; the response once its head arrived.

        ``body``: None, bytes, or an async iterable of chunks streamed as they come. A
        ``Content-Length`` in ``headers`` is kept and exactly that many bytes are sent;
        otherwise bytes get a ``Content-Length`` and a stream ``Transfer-Encoding: chunked``.
        Raises ``ConnectFailed``, ``HeadTimeout``, ``ResponseBroken``, or what the ``body``
        iterator raises (the connection is closed then); ``ValueError`` for a request that
        cannot be framed (e.g. a body that does not match its ``Content-Length``).
        """
        if self._closed:
            raise ConnectFailed("the connection pool is closed")
        verb = method.encode("ascii")
        length = _request_length(headers)
        if isinstance(body, bytes | bytearray | memoryview):
            body = bytes(body)
            if length is not None and length != len(body):
                raise ValueError(f"Content-Length {length} for a body of {len(body)} bytes")
            length = len(body)
        elif body is None and length:
            raise ValueError(f"Content-Length {length} without a body")
        streamed = body is not None and not isinstance(body, bytes)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = encode_request_head(
            verb,
            target,
            headers,
            authority=authority.encode("ascii"),
            length=length,
            chunked=streamed and length is None,
        )
        request_close = b"close" in connection_tokens(headers)
        key = (host, port)
        wait = self.head_timeout if head_timeout is None else head_timeout
        progress = _Progress()
        for attempt in (0, 1):
            connection = await self._acquire(key, fresh=attempt > 0)
            reused = connection.exchanges > 0
            try:
                return await self._exchange(
                    connection,
                    verb=verb,
                    head=head,
                    body=body,
                    length=length,
                    wait=wait,
                    request_close=request_close,
                    progress=progress,
                )
            except _Closed:
                self._release(connection, reusable=False)
                if (
                    attempt == 0
                    and reused
                    and not connection.received
                    and not progress.pulled
                    and (verb in IDEMPOTENT or not connection.sent)
                ):
                    self.retries += 1
                    continue
                raise ResponseBroken(
                    "the server closed the connection in the response head"
                    if connection.received
                    else "the server closed the connection before it answered"
                ) from None
            except BaseException:
                self._release(connection, reusable=False)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _exchange(
        self,
        connection: _Connection,
        *,
        verb: bytes,
        head: bytes,
        body: RequestBody,
        length: int | None,
        wait: float,
        request_close: bool,
        progress: _Progress,
    ) -> Response:
        timeout = self.read_timeout
        request_complete = True
        connection.sent = connection.received = False
        try:
            if isinstance(body, bytes) and len(body) <= 65536:
                await connection.write(head + body, timeout)
            else:
                await connection.write(head, timeout)
                if isinstance(body, bytes):
                    await connection.write(body, timeout)
                elif body is not None:
                    progress.pulled = True
                    await self._send_stream(connection, body, length, timeout)
        except _Closed:
            # The server may have answered early (e.g. 413) and closed: read what it sent.
            if not connection.buffer:
                raise
            request_complete = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        try:
            while True:
                raw = await connection.read_head(deadline)
                parsed = parse_response_head(raw)
                if parsed.status == 101:
                    raise ResponseBroken("101 Switching Protocols to a request without Upgrade")
                if parsed.status >= 200:
                    break
                # 100 Continue and other interim answers: the final one follows (RFC 9110 15.2).
        except TimeoutError:
            raise HeadTimeout(f"no response head within {wait:g} s") from None
        framing = response_framing(method=verb, head=parsed, request_close=request_close)
        if framing.kind == NO_BODY or (framing.kind == LENGTH and not framing.length):
            # Nothing to read: the connection is free again now.
            _PooledBody(self, connection, framing, request_complete=request_complete)._finish()
            return Response(
                status=parsed.status, reason=parsed.reason, headers=parsed.headers, body=_NoBody()
            )
        return Response(
            status=parsed.status,
            reason=parsed.reason,
            headers=parsed.headers,
            body=_PooledBody(self, connection, framing, request_complete=request_complete),
        )

    async def _send_stream(
        self,
        connection: _Connection,
        body: AsyncIterable[bytes],
        length: int | None,
        timeout: float,
    ) -> None:
        left = length
        async for chunk in body:
            if not chunk:
                continue
            if left is None:
                await connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk), timeout)
                continue
            if len(chunk) > left:
                raise ValueError(f"the request body is longer than its Content-Length {length}")
            left -= len(chunk)
            await connection.write(chunk, timeout)
        if left is None:
            await connection.write(b"0\r\n\r\n", timeout)
        elif left:
            raise ValueError(f"the request body ended {left} bytes short of its Content-Length")

    # -- connections -------------------------------------------------------------------------------

    async def _acquire(self, key: tuple[str, int], *, fresh: bool) -> _Connection:
        """A connection for one exchange: an idle one (unless ``fresh``), a new one, or one
        handed over by a finished exchange when ``max_per_host`` are open."""
        entry = self._hosts.get(key)
        if entry is None:
            entry = self._hosts[key] = _Host()
        while True:
            if self._closed:
                raise ConnectFailed("the connection pool is closed")
            if not fresh:
                connection = self._take_idle(entry)
                if connection is not None:
                    return connection
            if entry.open < self.max_per_host:
                entry.open += 1
                return await self._connect(key, entry)
            if fresh and entry.idle:
                # Every slot is taken, one by an idle connection: close it for the new one.
                oldest = entry.idle.pop(0)
                oldest.idle = False
                oldest.close()
                self._connections.discard(oldest)
                return await self._connect(key, entry)
            handed = await self._wait_turn(key, entry)
            if handed is None:
                return await self._connect(key, entry)  # the slot was handed over
            if not fresh and handed.reusable():
                return handed
            handed.abort()
            self._connections.discard(handed)
            return await self._connect(key, entry)  # keep its slot for a new connection

    async def _wait_turn(self, key: tuple[str, int], entry: _Host) -> _Connection | None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        if entry.waiters is None:
            entry.waiters = deque()
        entry.waiters.append(waiter)
        timer = loop.call_later(self.acquire_timeout, _expire, waiter)
        try:
            return await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as this request was cancelled
                if handed is None:
                    self._free_slot(entry)
                else:
                    self._release(handed, reusable=True)
            else:
                with contextlib.suppress(ValueError):
                    entry.waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise ConnectFailed(
                    f"{key[0]}:{key[1]}: all {self.max_per_host} connections busy for "
                    f"{self.acquire_timeout:g} s"
                ) from None
            raise
        finally:
            timer.cancel()

    def _take_idle(self, entry: _Host) -> _Connection | None:
        idle = entry.idle
        now = self._clock()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            connection.idle = False
            if now - connection.idle_since < self.idle_timeout and connection.reusable():
                return connection
            self._drop(connection, entry, graceful=True)
        return None

    async def _connect(self, key: tuple[str, int], entry: _Host) -> _Connection:
        """Open a connection in a slot already counted in ``entry.open``."""
        loop = asyncio.get_running_loop()
        host, port = key
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, key),
                    host,
                    port,
                    ssl=self.tls,
                    server_hostname=host if self.tls is not None else None,
                )
        except BaseException as error:
            self._free_slot(entry)
            if isinstance(error, TimeoutError):
                raise ConnectFailed(
                    f"{host}:{port}: no connection within {self.connect_timeout:g} s"
                ) from None
            if isinstance(error, OSError):
                raise ConnectFailed(f"{host}:{port}: {error.strerror or error}") from error
            raise
        self.connections_opened += 1
        self._connections.add(connection)
        if self._closed:
            connection.abort()
            raise ConnectFailed("the connection pool is closed")
        return connection

    def _release(self, connection: _Connection, *, reusable: bool) -> None:
        """An exchange is over: keep the connection for the next one, or close it."""
        entry = self._hosts.get(connection.key)
        if entry is None:  # pragma: no cover - entries live while connections do
            connection.abort()
            return
        if not (reusable and not self._closed and connection.reusable()):
            self._drop(connection, entry, graceful=False)
            return
        while entry.waiters:
            waiter = entry.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle = True
        connection.idle_since = self._clock()
        if entry.idle is None:
            entry.idle = []
        entry.idle.append(connection)
        self._schedule_sweep()

    def _drop(self, connection: _Connection, entry: _Host, *, graceful: bool) -> None:
        """Close ``connection`` and free its slot."""
        connection.idle = False
        if graceful:
            connection.close()
        else:
            connection.abort()
        self._connections.discard(connection)
        self._free_slot(entry)

    def _free_slot(self, entry: _Host) -> None:
        """One connection fewer: hand the slot to the first waiting request, if any."""
        while entry.waiters:
            waiter = entry.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        entry.open -= 1

    def _lost_idle(self, connection: _Connection) -> None:
        """An idle connection was closed by the server."""
        entry = self._hosts.get(connection.key)
        if entry is not None and entry.idle and connection in entry.idle:
            entry.idle.remove(connection)
            self._drop(connection, entry, graceful=True)

    def _schedule_sweep(self) -> None:
        if self._sweep is None:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(self.idle_timeout / 2, self._sweep_idle)

    def _sweep_idle(self) -> None:
        """Close connections idle for ``idle_timeout``; forget hosts with no connection."""
        self._sweep = None
        now = self._clock()
        left = False
        for key, entry in list(self._hosts.items()):
            if entry.idle:
                keep = [c for c in entry.idle if now - c.idle_since < self.idle_timeout]
                for connection in entry.idle:
                    if connection not in keep:
                        self._drop(connection, entry, graceful=True)
                entry.idle = keep
                left = left or bool(keep)
            if not entry.open and not entry.waiters:
                del self._hosts[key]
        if left and not self._closed:
            self._schedule_sweep()

    async def aclose(self) -> None:
        """Close every connection, idle or busy; requests still running fail."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for entry in self._hosts.values():
            while entry.waiters:
                waiter = entry.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(ConnectFailed("the connection pool is closed"))
            for connection in entry.idle or ():
                connection.idle = False
            entry.idle = []
        connections, self._connections = list(self._connections), set()
        for connection in connections:
            connection.abort()
        # Let the transports run their close callbacks before the loop may end.
        await asyncio.sleep(0)


@dataclass
class _Progress:
    """How far a request got: whether it may still be sent again."""

    pulled: bool = False
    """The caller's body iterator was started: it cannot be replayed."""


# ---------------------------------------------------------------------------------------------
# The same interface over httpx (tests)


class HttpxUpstream:
    """``Upstream`` over an httpx transport: ``httpx.MockTransport(handler)`` fakes the network.

    httpx failures map to the same exceptions as the pool's: ``ConnectError`` and
    ``ConnectTimeout`` to ``ConnectFailed``, other timeouts to ``HeadTimeout`` before the head
    and ``ResponseBroken`` after it, any other ``HTTPError`` to ``ResponseBroken``. httpx is
    imported here only, when a request is made: an agent never loads it.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        """Send every request through ``transport``."""
        self._transport = transport

    async def request(
        self,
        method: str,
        *,
        host: str,
        port: int,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: RequestBody = None,
        head_timeout: float | None = None,
    ) -> Response:
        """See ``Upstream.request``."""
        import httpx

        url = httpx.URL(scheme="http", host=host, port=port, raw_path=target)
        sent = httpx.Request(method, url, headers=list(headers), content=body)
        # A network exchange suspends at least once; so does this one, so that concurrent
        # requests overlap as they would on a network (a fake transport answers at once).
        await asyncio.sleep(0)
        try:
            response = await self._transport.handle_async_request(sent)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise ConnectFailed(f"{host}:{port}: {error}") from error
        except httpx.TimeoutException as error:
            raise HeadTimeout(f"{host}:{port}: {error}") from error
        except httpx.HTTPError as error:
            raise ResponseBroken(f"{host}:{port}: {error}") from error
        return Response(
            status=response.status_code,
            reason=response.reason_phrase.encode("latin-1"),
            headers=list(response.headers.raw),
            body=_HttpxBody(response),
        )

    async def aclose(self) -> None:
        """Close the transport."""
        await self._transport.aclose()


class _HttpxBody:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks = response.aiter_raw()

    async def read_chunk(self) -> bytes:
        import httpx

        try:
            async for chunk in self._chunks:
                if chunk:
                    return chunk
        except httpx.HTTPError as error:
            raise ResponseBroken(str(error)) from error
        return b""

    async def close(self) -> None:
        await self._response.aclose()
