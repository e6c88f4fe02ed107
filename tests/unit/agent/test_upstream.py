"""The ingress's HTTP/1.1 client: the pure head parsing and framing, then the pool against small
asyncio servers on 127.0.0.1, and the ingress over the pool."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.agent.ingress import Ingress, LocalReplicas
from edgefleet.agent.upstream import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    UNTIL_CLOSE,
    ConnectFailed,
    Framing,
    HeadTimeout,
    ResponseBroken,
    ResponseHead,
    UpstreamPool,
    encode_request_head,
    parse_response_head,
    response_framing,
)
from edgefleet.model import ReplicaState

T = TypeVar("T")

# -- parse_response_head --------------------------------------------------------------------------


def test_parse_response_head() -> None:
    head = parse_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Empty:\r\nX-A:  b c \r\n\r\n"
    )
    assert head == ResponseHead(
        b"HTTP/1.1",
        200,
        b"OK",
        [(b"Content-Type", b"text/plain"), (b"X-Empty", b""), (b"X-A", b"b c")],
    )


@pytest.mark.parametrize(
    ("status_line", "status", "reason"),
    [
        (b"HTTP/1.1 204", 204, b""),
        (b"HTTP/1.0 404 Not Found", 404, b"Not Found"),
        (b"HTTP/1.1 599 ", 599, b""),
    ],
)
def test_parse_status_lines(status_line: bytes, status: int, reason: bytes) -> None:
    head = parse_response_head(status_line + b"\r\n\r\n")
    assert (head.status, head.reason, head.headers) == (status, reason, [])


def test_obsolete_folding_becomes_a_space_and_whitespace_before_the_colon_goes() -> None:
    head = parse_response_head(b"HTTP/1.1 200 OK\r\nX-Long: a\r\n \t b\r\nX-Spaced : v\r\n\r\n")
    assert head.headers == [(b"X-Long", b"a b"), (b"X-Spaced", b"v")]


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 Odd\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: no name\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded first\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 257 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
    ],
)
def test_broken_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(ResponseBroken):
        parse_response_head(raw)


# -- response_framing ------------------------------------------------------------------------------


def framing_of(
    raw_headers: str, *, status: int = 200, version: bytes = b"HTTP/1.1", method: bytes = b"GET"
) -> Framing:
    headers = [
        (name.strip().encode(), value.strip().encode())
        for line in raw_headers.split("|")
        if line
        for name, value in [line.split(":", 1)]
    ]
    head = ResponseHead(version, status, b"", headers)
    return response_framing(method=method, head=head, request_close=False)


@pytest.mark.parametrize(
    ("headers", "options", "expected"),
    [
        ("Content-Length: 5", {}, Framing(LENGTH, 5)),
        ("Content-Length: 5, 5|Content-Length: 5", {}, Framing(LENGTH, 5)),
        ("Content-Length: 0", {}, Framing(LENGTH, 0)),
        ("Transfer-Encoding: chunked", {}, Framing(CHUNKED)),
        ("Transfer-Encoding: gzip, chunked", {}, Framing(CHUNKED)),
        ("Transfer-Encoding: gzip", {}, Framing(UNTIL_CLOSE, keep_alive=False)),
        ("", {}, Framing(UNTIL_CLOSE, keep_alive=False)),
        ("Content-Length: 5", {"method": b"HEAD"}, Framing(NO_BODY)),
        ("Transfer-Encoding: chunked", {"status": 204}, Framing(NO_BODY)),
        ("Content-Length: 5", {"status": 304}, Framing(NO_BODY)),
        ("", {"status": 100}, Framing(NO_BODY)),
        ("Content-Length: 5|Connection: close", {}, Framing(LENGTH, 5, keep_alive=False)),
        ("Content-Length: 5|Connection: Keep-Alive, Close", {}, Framing(LENGTH, 5, False)),
        ("Content-Length: 5", {"version": b"HTTP/1.0"}, Framing(LENGTH, 5, keep_alive=False)),
        (
            "Content-Length: 5|Connection: keep-alive",
            {"version": b"HTTP/1.0"},
            Framing(LENGTH, 5, keep_alive=True),
        ),
    ],
)
def test_response_framing(headers: str, options: dict[str, Any], expected: Framing) -> None:
    assert framing_of(headers, **options) == expected


@pytest.mark.parametrize(
    ("headers", "options"),
    [
        ("Content-Length: 5|Transfer-Encoding: chunked", {}),
        ("Transfer-Encoding: chunked", {"version": b"HTTP/1.0"}),
        ("Content-Length: 5|Content-Length: 6", {}),
        ("Content-Length: 5, 6", {}),
        ("Content-Length: -1", {}),
        ("Content-Length: 0x10", {}),
        ("Content-Length: ", {}),
        ("Content-Length: 99999999999999999999", {}),
    ],
)
def test_ambiguous_framing_is_refused(headers: str, options: dict[str, Any]) -> None:
    with pytest.raises(ResponseBroken):
        framing_of(headers, **options)


def test_connection_close_in_the_request_ends_the_connection() -> None:
    head = ResponseHead(b"HTTP/1.1", 200, b"", [(b"Content-Length", b"1")])
    assert not response_framing(method=b"GET", head=head, request_close=True).keep_alive


# -- encode_request_head ---------------------------------------------------------------------------


def test_request_head_keeps_fields_and_sets_framing() -> None:
    head = encode_request_head(
        b"POST",
        b"/a%20b?x=1",
        [
            (b"host", b"hello.demo.edge.internal"),
            (b"Content-Length", b"99"),
            (b"Transfer-Encoding", b"gzip"),
            (b"x-a", b"1"),
        ],
        authority=b"127.0.0.1:1",
        length=None,
        chunked=True,
    )
    assert head == (
        b"POST /a%20b?x=1 HTTP/1.1\r\nhost: hello.demo.edge.internal\r\nx-a: 1\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    plain = encode_request_head(
        b"GET", b"/", [], authority=b"127.0.0.1:80", length=None, chunked=False
    )
    assert plain == b"GET / HTTP/1.1\r\nhost: 127.0.0.1:80\r\n\r\n"
    sized = encode_request_head(b"PUT", b"/", [], authority=b"h:1", length=3, chunked=False)
    assert sized == b"PUT / HTTP/1.1\r\nhost: h:1\r\ncontent-length: 3\r\n\r\n"


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        (b"GET /x", b"/", []),
        (b"GET", b"/ HTTP/1.1\r\nX: y", []),
        (b"GET", b"/a b", []),
        (b"GET", b"", []),
        (b"GET", b"/", [(b"X", b"a\r\nInjected: yes")]),
        (b"GET", b"/", [(b"Bad Name", b"x")]),
        (b"GET", b"/", [(b"", b"x")]),
        (b"GET", b"/", [(b"X", b"nul\x00")]),
    ],
)
def test_request_head_refuses_what_would_break_framing(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ValueError):
        encode_request_head(method, target, headers, authority=b"h:1", length=None, chunked=False)


# -- small servers ---------------------------------------------------------------------------------


@dataclass
class Received:
    """A request as a test server read it."""

    method: bytes
    target: bytes
    head: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]


async def read_request(reader: asyncio.StreamReader) -> Received | None:
    """The next request on a connection, its body read; None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].split(b"\r\n")
    method, target, _ = lines[0].split(b" ")
    headers = [
        (name.strip(), value.strip()) for name, value in (line.split(b":", 1) for line in lines[1:])
    ]
    request = Received(method, target, head, headers, b"")
    if request.header(b"transfer-encoding") == [b"chunked"]:
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += await reader.readexactly(size)
            assert await reader.readexactly(2) == b"\r\n"
        assert await reader.readuntil(b"\r\n") == b"\r\n"
        request.body = bytes(body)
    elif lengths := request.header(b"content-length"):
        request.body = await reader.readexactly(int(lengths[0]))
    return request


def ok(body: bytes = b"hello", *extra: bytes) -> bytes:
    """A 200 response with a Content-Length."""
    fields = b"".join(e + b"\r\n" for e in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), fields, body)


Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """An asyncio server on 127.0.0.1 that runs ``handler`` for each connection."""

    handler: Handler
    port: int = 0
    connections: int = 0
    """Connections accepted."""
    ended: int = 0
    """Connections whose handler returned (the client closed, or the handler did)."""
    requests: list[Received] = field(default_factory=list)
    in_flight: dict[int, int] = field(default_factory=dict)
    most_in_flight_per_connection: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        # Cut the connections still open; their handlers then end on their own.
        for writer in self._writers:
            writer.transport.abort()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=5)
            assert not stuck, "a test server's handler did not end"
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.ended += 1
            self._tasks.discard(task)  # type: ignore[arg-type]
            self._writers.discard(writer)


def answering(
    respond: Callable[[Received], bytes | Awaitable[bytes]],
) -> Handler:
    """A handler that answers each request on a connection in turn."""

    async def handler(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while (request := await read_request(reader)) is not None:
            server.requests.append(request)
            answer = respond(request)
            if not isinstance(answer, bytes):
                answer = await answer
            writer.write(answer)
            await writer.drain()

    return handler


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def get(pool: UpstreamPool, server: Server, target: bytes = b"/", **options: Any) -> bytes:
    response = await pool.request(
        options.pop("method", "GET"),
        host="127.0.0.1",
        port=server.port,
        target=target,
        **options,
    )
    async with response:
        return await response.read()


# -- the pool: exchanges -------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection() -> None:
    async def go() -> None:
        async with Server(answering(lambda r: ok(r.target))) as server:
            pool = UpstreamPool()
            try:
                for n in range(3):
                    assert await get(pool, server, b"/n/%d?x=%%2F" % n) == b"/n/%d?x=%%2F" % n
                assert server.connections == 1 and pool.connections_opened == 1
                assert pool.idle_connections("127.0.0.1", server.port) == 1
            finally:
                await pool.aclose()
            await until(lambda: server.ended == 1, "the pool to close its connection")

    run(go())


def test_request_head_as_the_server_sees_it() -> None:
    async def go() -> tuple[list[Received], int]:
        async with Server(answering(lambda r: ok())) as server:
            pool = UpstreamPool()
            try:
                await get(
                    pool,
                    server,
                    b"/p",
                    headers=[(b"Host", b"hello.demo.edge.internal"), (b"x-a", b"1")],
                )
                await get(pool, server, b"/q")
            finally:
                await pool.aclose()
            return server.requests, server.port

    (named, plain), port = run(go())
    assert named.head == b"GET /p HTTP/1.1\r\nHost: hello.demo.edge.internal\r\nx-a: 1\r\n\r\n"
    assert plain.head == b"GET /q HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n\r\n" % port


def test_chunked_response_is_decoded_and_the_connection_reused() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def go() -> None:
        async with Server(answering(lambda r: chunked)) as server:
            pool = UpstreamPool()
            try:
                response = await pool.request(
                    "GET", host="127.0.0.1", port=server.port, target=b"/"
                )
                assert response.status == 200
                assert [c async for c in response] == [b"hello", b" ", b"world!"]
                await response.aclose()
                assert await get(pool, server) == b"hello world!"
                assert pool.connections_opened == 1
            finally:
                await pool.aclose()

    run(go())


def test_body_until_close_is_read_and_the_connection_not_reused() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        await writer.drain()

    async def go() -> None:
        async with Server(handler) as server:
            pool = UpstreamPool()
            try:
                assert await get(pool, server) == b"all of it"
                assert await get(pool, server) == b"all of it"
                assert pool.connections_opened == 2
            finally:
                await pool.aclose()

    run(go())


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n"),
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ],
)
def test_responses_without_body_free_the_connection_at_once(method: str, answer: bytes) -> None:
    async def go() -> None:
        async with Server(answering(lambda r: answer)) as server:
            pool = UpstreamPool()
            try:
                for _ in range(2):
                    response = await pool.request(
                        method, host="127.0.0.1", port=server.port, target=b"/"
                    )
                    assert await response.read() == b""
                    # Back in the pool before the caller closes it: nothing left to read.
                    assert pool.idle_connections("127.0.0.1", server.port) == 1
                    await response.aclose()
                assert pool.connections_opened == 1
            finally:
                await pool.aclose()

    run(go())


def test_interim_responses_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(
        b"x"
    )

    async def go() -> None:
        async with Server(answering(lambda r: answer)) as server:
            pool = UpstreamPool()
            try:
                assert await get(pool, server) == b"x"
                assert await get(pool, server) == b"x"
                assert pool.connections_opened == 1
            finally:
                await pool.aclose()

    run(go())


@pytest.mark.parametrize(
    ("answer", "request_headers"),
    [
        (ok(b"x", b"Connection: close"), []),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", []),
        (ok(b"x"), [(b"connection", b"close")]),
    ],
)
def test_connection_close_from_either_side_is_honoured(
    answer: bytes, request_headers: list[tuple[bytes, bytes]]
) -> None:
    async def go() -> None:
        async with Server(answering(lambda r: answer)) as server:
            pool = UpstreamPool()
            try:
                assert await get(pool, server, headers=request_headers) == b"x"
                assert await get(pool, server, headers=request_headers) == b"x"
                assert pool.connections_opened == 2
                await until(lambda: server.ended == 2, "both connections to be closed")
            finally:
                await pool.aclose()

    run(go())


# -- the pool: request bodies --------------------------------------------------------------------


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


def test_request_bodies_are_framed() -> None:
    async def go() -> list[Received]:
        async with Server(answering(lambda r: ok(r.body))) as server:
            pool = UpstreamPool()
            try:
                assert await get(pool, server, method="POST", body=b"bytes") == b"bytes"
                streamed = await get(pool, server, method="POST", body=pieces(b"ab", b"", b"cd"))
                assert streamed == b"abcd"
                sized = await get(
                    pool,
                    server,
                    method="PUT",
                    headers=[(b"Content-Length", b"4")],
                    body=pieces(b"ab", b"cd"),
                )
                assert sized == b"abcd"
                assert pool.connections_opened == 1
            finally:
                await pool.aclose()
            return server.requests

    plain, streamed, sized = run(go())
    assert plain.header(b"content-length") == [b"5"] and not plain.header(b"transfer-encoding")
    assert streamed.header(b"transfer-encoding") == [b"chunked"]
    assert not streamed.header(b"content-length")
    assert sized.header(b"content-length") == [b"4"] and not sized.header(b"transfer-encoding")


@pytest.mark.parametrize(
    ("length", "parts"), [(b"3", (b"ab", b"cd")), (b"5", (b"ab", b"cd")), (b"x", (b"ab",))]
)
def test_a_body_that_does_not_match_its_length_fails_and_closes(
    length: bytes, parts: tuple[bytes, ...]
) -> None:
    async def go() -> None:
        async with Server(answering(lambda r: ok())) as server:
            pool = UpstreamPool()
            try:
                with pytest.raises(ValueError):
                    await get(
                        pool,
                        server,
                        method="POST",
                        headers=[(b"content-length", length)],
                        body=pieces(*parts),
                    )
                assert pool.open_connections("127.0.0.1", server.port) == 0
            finally:
                await pool.aclose()

    run(go())


def test_an_error_of_the_body_iterator_passes_through_and_closes() -> None:
    class Gone(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"part"
        raise Gone

    async def go() -> None:
        async with Server(answering(lambda r: ok())) as server:
            pool = UpstreamPool()
            try:
                with pytest.raises(Gone):
                    await get(pool, server, method="POST", body=failing())
                assert pool.open_connections("127.0.0.1", server.port) == 0
                await until(lambda: server.ended == 1, "the server to see the connection closed")
            finally:
                await pool.aclose()

    run(go())


def test_an_early_answer_is_read_though_the_body_was_not_sent() -> None:
    """A server that refuses a large upload answers before reading it, then closes."""

    async def handler(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        await writer.drain()

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10_000):
            yield b"x" * 65536

    async def go() -> None:
        async with Server(handler) as server:
            pool = UpstreamPool()
            try:
                response = await pool.request(
                    "POST", host="127.0.0.1", port=server.port, target=b"/", body=endless()
                )
                async with response:
                    assert response.status == 413
                    assert await response.read() == b"big"
                assert pool.open_connections("127.0.0.1", server.port) == 0
            finally:
                await pool.aclose()

    run(go())


# -- the pool: failures ----------------------------------------------------------------------------


def test_refused_connection_is_connect_failed() -> None:
    async def go() -> None:
        async with Server(answering(lambda r: ok())) as server:
            port = server.port
        pool = UpstreamPool()
        try:
            with pytest.raises(ConnectFailed, match=f"127.0.0.1:{port}"):
                await pool.request("GET", host="127.0.0.1", port=port, target=b"/")
            assert pool.open_connections("127.0.0.1", port) == 0
        finally:
            await pool.aclose()

    run(go())


def test_no_head_in_time_is_head_timeout_and_closes() -> None:
    async def silent(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)
        await reader.read()  # until the client closes

    async def go() -> None:
        async with Server(silent) as server:
            pool = UpstreamPool(head_timeout=10.0)
            try:
                with pytest.raises(HeadTimeout):
                    await pool.request(
                        "GET", host="127.0.0.1", port=server.port, target=b"/", head_timeout=0.2
                    )
                assert pool.open_connections("127.0.0.1", server.port) == 0
                await until(lambda: server.ended == 1, "the server to see the connection closed")
            finally:
                await pool.aclose()

    run(go())


def test_body_that_stalls_or_breaks_off_is_response_broken() -> None:
    async def partial(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        request = await read_request(reader)
        assert request is not None
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        if request.target == b"/stall":
            await reader.read()
        # else: return, which closes the connection three bytes into ten

    async def go() -> None:
        async with Server(partial) as server:
            pool = UpstreamPool(read_timeout=0.2)
            try:
                for target, problem in ((b"/stall", "stalled"), (b"/close", "7 bytes short")):
                    response = await pool.request(
                        "GET", host="127.0.0.1", port=server.port, target=target
                    )
                    async with response:
                        assert await anext(response) == b"abc"
                        with pytest.raises(ResponseBroken, match=problem):
                            await anext(response)
                        with pytest.raises(ResponseBroken):  # not a clean end the second time
                            await anext(response)
                    assert pool.open_connections("127.0.0.1", server.port) == 0
            finally:
                await pool.aclose()

    run(go())


def test_a_body_until_close_cut_by_a_reset_is_response_broken() -> None:
    """A reset is not the server's FIN: the body did not end, it was cut."""

    async def resets(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npartial")
        await writer.drain()
        # Linger 0: closing sends RST instead of FIN.
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()

    async def go() -> None:
        async with Server(resets) as server:
            pool = UpstreamPool()
            try:
                response = await pool.request(
                    "GET", host="127.0.0.1", port=server.port, target=b"/"
                )
                async with response:
                    with pytest.raises(ResponseBroken, match="reset"):
                        async for _ in response:
                            pass
            finally:
                await pool.aclose()

    run(go())


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",  # then the server closes
        b"",
    ],
)
def test_broken_answers_are_response_broken(answer: bytes) -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def go() -> None:
        async with Server(handler) as server:
            pool = UpstreamPool()
            try:
                with pytest.raises(ResponseBroken):
                    await get(pool, server)
                assert pool.open_connections("127.0.0.1", server.port) == 0
            finally:
                await pool.aclose()

    run(go())


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nab\r\n0\r\n\r\n", b"2\r\nabXY0\r\n\r\n", b"-1\r\n", b"2\r\nab\r\n"],
)
def test_broken_chunked_framing_is_response_broken(body: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body

    async def handler(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def go() -> None:
        async with Server(handler) as server:
            pool = UpstreamPool()
            try:
                with pytest.raises(ResponseBroken):
                    await get(pool, server)
            finally:
                await pool.aclose()

    run(go())


# -- the pool: stale connections and retries -------------------------------------------------------


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)
        writer.write(ok())  # keep-alive by default, yet the server closes at once
        await writer.drain()

    async def go() -> None:
        async with Server(once) as server:
            pool = UpstreamPool()
            try:
                assert await get(pool, server) == b"hello"
                await until(
                    lambda: pool.idle_connections("127.0.0.1", server.port) == 0,
                    "the pool to notice the server closed its idle connection",
                )
                assert pool.open_connections("127.0.0.1", server.port) == 0
                assert await get(pool, server) == b"hello"
                assert pool.retries == 0 and pool.connections_opened == 2
            finally:
                await pool.aclose()

    run(go())


def test_a_connection_with_stray_bytes_after_a_response_is_not_reused() -> None:
    """Bytes after the end of a response (here a 408, as some servers send before closing an
    idle connection) would be read as the answer to the next request."""
    stray = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"

    async def go() -> None:
        async with Server(answering(lambda r: ok() + stray)) as server:
            pool = UpstreamPool()
            try:
                assert await get(pool, server) == b"hello"
                response = await pool.request(
                    "GET", host="127.0.0.1", port=server.port, target=b"/"
                )
                async with response:
                    assert response.status == 200
                    assert await response.read() == b"hello"
                assert pool.connections_opened == 2
            finally:
                await pool.aclose()

    run(go())


def closes_on_second_request() -> Handler:
    """Answers the first request on the first connection, then closes on the next one without
    answering (a server closing an idle connection just as a request goes out); every later
    connection is answered normally."""

    async def handler(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        first = server.connections == 1
        count = 0
        while (request := await read_request(reader)) is not None:
            server.requests.append(request)
            count += 1
            if first and count == 2:
                return
            writer.write(ok(request.body or b"fine"))
            await writer.drain()

    return handler


@pytest.mark.parametrize(
    ("method", "body", "retried"),
    [
        ("GET", None, True),
        ("PUT", b"data", True),
        ("POST", b"data", False),  # not idempotent: a proxy must not repeat it
        ("PUT", "stream", False),  # the body was streamed: it cannot be sent again
    ],
)
def test_a_reused_connection_that_fails_before_any_answer_is_retried_once(
    method: str, body: bytes | str | None, retried: bool
) -> None:
    async def go() -> None:
        async with Server(closes_on_second_request()) as server:
            pool = UpstreamPool()
            try:
                assert await get(pool, server) == b"fine"
                content = pieces(b"da", b"ta") if body == "stream" else body
                if retried:
                    assert await get(pool, server, method=method, body=content) in (
                        b"fine",
                        b"data",
                    )
                    assert pool.retries == 1 and pool.connections_opened == 2
                else:
                    with pytest.raises(ResponseBroken, match="before it answered"):
                        await get(pool, server, method=method, body=content)
                    assert pool.retries == 0
                    # The next request is fine, on a new connection.
                    assert await get(pool, server) == b"fine"
            finally:
                await pool.aclose()

    run(go())


def test_a_fresh_connection_that_fails_is_not_retried() -> None:
    async def closes(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)

    async def go() -> None:
        async with Server(closes) as server:
            pool = UpstreamPool()
            try:
                with pytest.raises(ResponseBroken):
                    await get(pool, server)
                assert pool.retries == 0 and server.connections == 1
            finally:
                await pool.aclose()

    run(go())


def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async def go() -> None:
        async with Server(answering(lambda r: ok())) as server:
            pool = UpstreamPool(idle_timeout=0.1)
            try:
                await get(pool, server)
                await until(lambda: server.ended == 1, "the idle connection to be closed")
                assert pool.open_connections("127.0.0.1", server.port) == 0
            finally:
                await pool.aclose()

    run(go())


# -- the pool: concurrency and limits --------------------------------------------------------------


def tracking(release: asyncio.Event | None = None, delay: float = 0.0) -> Handler:
    """Answers requests as they come, and records how many one connection ever had in flight
    (two would mean two requests shared a connection)."""

    async def handler(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        me = server.connections
        answers: asyncio.Queue[Received | None] = asyncio.Queue()

        async def answer() -> None:
            while (request := await answers.get()) is not None:
                if release is not None:
                    await release.wait()
                await asyncio.sleep(delay)
                writer.write(ok(request.target))
                await writer.drain()
                server.in_flight[me] -= 1

        answering_task = asyncio.ensure_future(answer())
        try:
            while (request := await read_request(reader)) is not None:
                server.requests.append(request)
                server.in_flight[me] = server.in_flight.get(me, 0) + 1
                server.most_in_flight_per_connection = max(
                    server.most_in_flight_per_connection, server.in_flight[me]
                )
                answers.put_nowait(request)
        finally:
            # The client closed: nobody is left to answer.
            answering_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering_task

    return handler


def test_concurrent_requests_never_share_a_connection_and_respect_the_limit() -> None:
    async def go() -> None:
        async with Server(tracking(delay=0.002)) as server:
            pool = UpstreamPool(max_per_host=4)
            try:
                targets = [b"/%d" % n for n in range(60)]
                replies = await asyncio.gather(*(get(pool, server, t) for t in targets))
                assert replies == targets  # each caller got its own answer
                assert server.connections <= 4
                assert server.most_in_flight_per_connection == 1
                assert pool.open_connections("127.0.0.1", server.port) <= 4
            finally:
                await pool.aclose()

    run(go())


def test_waiting_for_a_busy_host_times_out_as_connect_failed() -> None:
    async def go() -> None:
        release = asyncio.Event()
        async with Server(tracking(release)) as server:
            pool = UpstreamPool(max_per_host=1, acquire_timeout=0.2)
            try:
                first = asyncio.ensure_future(get(pool, server, b"/first"))
                await until(lambda: len(server.requests) == 1, "the first request")
                with pytest.raises(ConnectFailed, match="busy"):
                    await get(pool, server, b"/second")
                release.set()
                assert await first == b"/first"
                assert await get(pool, server, b"/third") == b"/third"
                assert server.connections == 1
            finally:
                await pool.aclose()

    run(go())


def test_a_waiting_request_gets_the_connection_a_finished_one_gives_back() -> None:
    async def go() -> None:
        release = asyncio.Event()
        async with Server(tracking(release)) as server:
            pool = UpstreamPool(max_per_host=1)
            try:
                calls = [asyncio.ensure_future(get(pool, server, b"/%d" % n)) for n in range(5)]
                await until(lambda: len(server.requests) == 1, "the first request")
                calls[1].cancel()  # one waiter gives up: the others still get their turn
                release.set()
                replies = await asyncio.gather(*calls, return_exceptions=True)
                assert isinstance(replies[1], asyncio.CancelledError)
                assert [r for i, r in enumerate(replies) if i != 1] == [b"/0", b"/2", b"/3", b"/4"]
                assert server.connections == 1
            finally:
                await pool.aclose()

    run(go())


def test_cancelling_a_request_closes_its_connection() -> None:
    async def go() -> None:
        release = asyncio.Event()
        async with Server(tracking(release)) as server:
            pool = UpstreamPool()
            try:
                call = asyncio.ensure_future(get(pool, server))
                await until(lambda: len(server.requests) == 1, "the request to arrive")
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                assert pool.open_connections("127.0.0.1", server.port) == 0
                await until(lambda: server.ended == 1, "the server to see the connection closed")
            finally:
                release.set()
                await pool.aclose()

    run(go())


def test_a_response_closed_before_its_end_closes_the_connection() -> None:
    big = b"x" * 2_000_000

    async def go() -> None:
        async with Server(answering(lambda r: ok(big))) as server:
            pool = UpstreamPool()
            try:
                response = await pool.request(
                    "GET", host="127.0.0.1", port=server.port, target=b"/"
                )
                await anext(response)
                await response.aclose()
                assert pool.open_connections("127.0.0.1", server.port) == 0
                await until(lambda: server.ended == 1, "the server to see the connection closed")
                assert await get(pool, server) == big  # read whole: the connection is kept
                assert pool.idle_connections("127.0.0.1", server.port) == 1
            finally:
                await pool.aclose()

    run(go())


# -- chunked bodies, any way the bytes arrive ------------------------------------------------------


@settings(max_examples=25)
@given(
    body=st.binary(min_size=0, max_size=3000),
    cuts=st.lists(st.integers(1, 700), max_size=8),
    segments=st.lists(st.integers(1, 50), min_size=1, max_size=6),
)
def test_chunked_bodies_decode_whatever_the_chunking_and_segmentation(
    body: bytes, cuts: list[int], segments: list[int]
) -> None:
    chunks, rest = [], body
    for cut in cuts:
        if rest:
            chunks.append(rest[:cut])
            rest = rest[cut:]
    if rest:
        chunks.append(rest)
    encoded = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks)
        + b"0\r\n\r\n"
    )

    async def handler(
        server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while await read_request(reader) is not None:
            data, turn = encoded, 0
            while data:  # in small writes, each its own TCP segment on loopback
                size = segments[turn % len(segments)]
                writer.write(data[:size])
                await writer.drain()
                await asyncio.sleep(0)
                data, turn = data[size:], turn + 1

    async def go() -> None:
        async with Server(handler) as server:
            pool = UpstreamPool()
            try:
                assert await get(pool, server) == body
                assert await get(pool, server) == body
                assert pool.connections_opened == 1
            finally:
                await pool.aclose()

    run(go())


# -- the ingress over the pool ---------------------------------------------------------------------


def ingress_to(port: int, **options: Any) -> Ingress:
    replica = ReplicaState(id="demo-hello-0", index=0, port=port, state="running", ready=True)
    return Ingress(
        FastAPI(),
        site="paris",
        address="127.0.0.1",
        replicas=LocalReplicas(lambda: {"demo/hello": [replica]}),
        **options,
    )


def test_the_ingress_forwards_over_the_pool() -> None:
    async def go() -> None:
        async with Server(
            answering(lambda r: ok(r.body or r.target, b"Connection: keep-alive"))
        ) as server:
            ingress = ingress_to(server.port)
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=ingress), base_url="http://127.0.0.1:8080"
            )
            try:
                async with client:
                    for n in range(3):
                        reply = await client.get(
                            f"/{n}?q=%2F", headers={"Host": "hello.demo.edge.internal"}
                        )
                        assert reply.status_code == 200
                        assert reply.content == f"/{n}?q=%2F".encode()
                        assert reply.headers["via"] == "1.1 edgefleet-paris"
                        assert "connection" not in reply.headers
                    posted = await client.post(
                        "/", content=b"body", headers={"Host": "hello.demo.edge.internal"}
                    )
                    assert posted.content == b"body"
                assert server.connections == 1  # one kept-alive connection for all four
                first = server.requests[0]
                assert first.header(b"host") == [b"hello.demo.edge.internal"]
                assert first.header(b"via") == [b"1.1 edgefleet-paris"]
                assert ingress.outstanding == {}
            finally:
                await ingress.aclose()

    run(go())


def test_the_ingress_answers_504_when_the_replica_is_silent() -> None:
    async def silent(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)
        await reader.read()

    async def go() -> None:
        async with Server(silent) as server:
            ingress = ingress_to(server.port, timeout=httpx.Timeout(0.2, connect=2.0))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=ingress), base_url="http://127.0.0.1:8080"
            )
            try:
                async with client:
                    reply = await client.get("/", headers={"Host": "hello.demo.edge.internal"})
                assert reply.status_code == 504
            finally:
                await ingress.aclose()

    run(go())


def test_the_ingress_closes_the_upstream_connection_when_the_client_goes() -> None:
    """The client disconnects mid-response: the replica's connection is closed, not reused."""

    async def trickle(server: Server, reader: asyncio.StreamReader, writer: Any) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst")
        await writer.drain()
        await reader.read()

    async def go() -> None:
        async with Server(trickle) as server:
            ingress = ingress_to(server.port)
            sent: list[dict[str, Any]] = []
            gone = asyncio.Event()

            received: list[str] = []

            async def receive() -> dict[str, Any]:
                if not received:
                    received.append("http.request")
                    return {"type": "http.request", "body": b"", "more_body": False}
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)
                if message.get("body") == b"first":
                    gone.set()

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/",
                "raw_path": b"/",
                "query_string": b"",
                "headers": [(b"host", b"hello.demo.edge.internal")],
                "client": ("127.0.0.9", 5000),
                "server": ("127.0.0.1", 8080),
            }
            try:
                await asyncio.wait_for(ingress(scope, receive, send), 5)  # type: ignore[arg-type]
                assert sent[0]["status"] == 200
                assert not any(m.get("more_body") is False for m in sent)  # never completed
                await until(lambda: server.ended == 1, "the replica's connection to be closed")
                assert ingress.outstanding == {}
            finally:
                await ingress.aclose()

    run(go())
