"""The DNS server shell: UDP and TCP sockets on one port around a wire handler.

All DNS lives in the handler (``Responder``); this module only moves bytes. UDP (RFC 1035
4.2.1): one datagram in, the handler called synchronously, at most one datagram out. TCP
(RFC 1035 4.2.2, RFC 7766): 2-byte length framing, several queries per connection answered in
order, connections closed when idle for ``tcp_idle_timeout`` seconds, on a framing error, or
at ``stop()``.

UDP has two readers. asyncio's datagram transport reads one datagram per event-loop iteration,
so every query pays an ``epoll_wait`` besides its ``recvfrom`` and ``sendto``; measured on a
2-core VM that made the loop, not the responder, the limit (about 20k queries/s against 86k).
The default reader therefore registers the socket with ``loop.add_reader`` and drains up to
``UDP_BATCH`` datagrams per wake-up, calling the handler and ``sendto`` for each. It needs a
loop with ``add_reader`` (the default selector loop, uvloop); elsewhere, or with
``batch_udp=False``, the server uses a plain ``asyncio.DatagramProtocol``. When the socket's
send buffer is full the batched reader drops that answer (the client retries, as for any lost
datagram) instead of queueing without bound.

Agents and the hub embed it in their own event loop::

    server = DnsServer(Responder(zone), "0.0.0.0", 53)
    await server.start()
    ...
    await server.stop()

or ``async with DnsServer(...) as server:``, or ``await run_dns_server(...)`` to serve until
cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import threading
from types import TracebackType
from typing import Protocol, cast

__all__ = ["UDP_BATCH", "DnsServer", "WireHandler", "run_dns_server"]

_log = logging.getLogger(__name__)

UDP_BATCH = 64
"""Datagrams the batched UDP reader handles per wake-up before yielding to other tasks."""

_MIN_MESSAGE = 12
"""A DNS header (RFC 1035 4.1.1): a TCP frame shorter than this is a framing error."""

_MAX_DATAGRAM = 65535
"""Largest UDP payload read; longer queries are cut by the kernel and then fail to parse."""

_EPHEMERAL_TRIES = 20
"""Attempts at finding an ephemeral port free for both UDP and TCP."""

_ACCEPT_STEPS = 5
"""Event-loop steps stop() lets pass so that connections being accepted become known."""

_RECEIVE_BUFFER = 4 * 1024 * 1024
"""Requested UDP receive buffer (the kernel caps it at net.core.rmem_max): absorbs bursts."""


class WireHandler(Protocol):
    """What the server calls for every message; ``Responder`` is one."""

    def handle(self, wire: bytes, source: str, *, tcp: bool) -> bytes | None:
        """The answer to ``wire`` from ``source`` (an IP address), or None to send nothing.
        Must not raise; the server logs and drops the message if it does."""
        ...


class _UdpProtocol(asyncio.DatagramProtocol):
    """One datagram, one synchronous call to the handler, one ``sendto``."""

    def __init__(self, handler: WireHandler) -> None:
        self._handle = handler.handle
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = str(addr[0])
        try:
            answer = self._handle(data, source, tcp=False)
        except Exception:  # the handler must not raise; if it does, drop this query only
            _log.exception("DNS handler raised on a UDP query from %s", source)
            return
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable from a client that went away) concern one client.
        _log.debug("DNS UDP socket error: %s", exc)


class _UdpReader:
    """Drains a non-blocking UDP socket, up to ``UDP_BATCH`` datagrams per wake-up."""

    def __init__(
        self, sock: socket.socket, handler: WireHandler, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._sock = sock
        self._handle = handler.handle
        self._fast = getattr(handler, "udp_fast_answers", None)
        self._loop = loop
        self.dropped = 0
        """Answers not sent because the socket's send buffer was full."""

    def start(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _on_readable(self) -> None:
        receive = self._sock.recvfrom
        send = self._sock.sendto
        handle = self._handle
        fast = self._fast() if self._fast is not None else None
        for _ in range(UDP_BATCH):
            try:
                data, addr = receive(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error queued on the socket: one client's problem
                _log.debug("DNS UDP receive error: %s", exc)
                continue
            if fast is not None:
                body = fast.get(data[2:])
                if body is not None:
                    try:
                        send(data[:2] + body, addr)
                    except (BlockingIOError, InterruptedError):
                        self.dropped += 1
                    except OSError as exc:
                        _log.debug("DNS UDP send to %s failed: %s", addr[0], exc)
                    continue
            try:
                answer = handle(data, addr[0], tcp=False)
            except Exception:  # the handler must not raise; if it does, drop this query only
                _log.exception("DNS handler raised on a UDP query from %s", addr[0])
                continue
            if answer is None:
                continue
            try:
                send(answer, addr)
            except (BlockingIOError, InterruptedError):
                self.dropped += 1
            except OSError as exc:
                _log.debug("DNS UDP send to %s failed: %s", addr[0], exc)


class _LockedHandler:
    """One handler shared by the UDP thread and the event loop's TCP connections."""

    def __init__(self, handler: WireHandler) -> None:
        self._handler = handler
        self._lock = threading.Lock()
        fast = getattr(handler, "udp_fast_answers", None)
        if fast is not None:
            self.udp_fast_answers = fast

    def handle(self, wire: bytes, source: str, *, tcp: bool) -> bytes | None:
        with self._lock:
            return self._handler.handle(wire, source, tcp=tcp)


class _UdpThread:
    """Answers UDP in a thread of its own, on a blocking socket.

    A blocking ``recvfrom``/``sendto`` loop costs the fewest Python steps per datagram (no
    event-loop wake-ups, no EAGAIN at the end of every batch) and releases the GIL while it
    waits, so the event loop keeps running the agent's or hub's other work. Repeated questions
    to a zone whose answers do not depend on the client are answered from the responder's flat
    table without taking the handler's lock.
    """

    def __init__(self, sock: socket.socket, handler: _LockedHandler) -> None:
        self._sock = sock
        self._handler = handler
        self._stopping = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="dns-udp", daemon=True)

    def start(self) -> None:
        # Fully blocking: with a timeout, every receive would cost a poll() first.
        self._sock.setblocking(True)
        self._thread.start()

    def close(self) -> None:
        self._stopping = True
        # Wake the blocked receive with a datagram of our own; it carries no DNS header.
        family = self._sock.family
        with socket.socket(family, socket.SOCK_DGRAM) as waker:
            for _ in range(3):
                with contextlib.suppress(OSError):
                    waker.sendto(b"", self._sock.getsockname())
                self._thread.join(timeout=1.0)
                if not self._thread.is_alive():
                    break
        self._sock.close()

    def _run(self) -> None:
        receive = self._sock.recvfrom
        send = self._sock.sendto
        handle = self._handler.handle
        fast_answers = getattr(self._handler, "udp_fast_answers", None)
        while not self._stopping:
            try:
                data, addr = receive(_MAX_DATAGRAM)
            except OSError as exc:  # an ICMP error queued on the socket: one client's problem
                _log.debug("DNS UDP receive error: %s", exc)
                continue
            if self._stopping:
                break
            answer = None
            if fast_answers is not None:
                table = fast_answers()
                if table is not None:
                    body = table.get(data[2:])
                    if body is not None:
                        answer = data[:2] + body
            if answer is None:
                try:
                    answer = handle(data, addr[0], tcp=False)
                except Exception:  # the handler must not raise; if it does, drop this query
                    _log.exception("DNS handler raised on a UDP query from %s", addr[0])
                    continue
                if answer is None:
                    continue
            try:
                send(answer, addr)
            except OSError as exc:
                self.dropped += 1
                _log.debug("DNS UDP send to %s failed: %s", addr[0], exc)


class DnsServer:
    """A DNS server on ``host``:``port``, UDP and TCP, answering with ``handler``.

    ``port`` 0 picks an ephemeral port free for both transports; ``port`` tells it after
    ``start()``. ``batch_udp`` chooses the UDP reader (see the module's docstring).
    """

    def __init__(
        self,
        handler: WireHandler,
        host: str,
        port: int,
        *,
        tcp_idle_timeout: float = 10.0,
        max_tcp_connections: int = 512,
        batch_udp: bool = True,
        udp_thread: bool = True,
    ) -> None:
        self._handler: WireHandler = _LockedHandler(handler) if udp_thread else handler
        self._udp_thread_wanted = udp_thread
        self._udp_thread: _UdpThread | None = None
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._tcp_idle_timeout = tcp_idle_timeout
        self._max_tcp_connections = max_tcp_connections
        self._batch_udp = batch_udp
        self._udp_reader: _UdpReader | None = None
        self._udp_transport: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def host(self) -> str:
        """The address the server binds."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when asked for port 0)."""
        if self._port is None:
            raise RuntimeError("the DNS server is not started: await start() first")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) as bound."""
        return self._host, self.port

    @property
    def udp_dropped(self) -> int:
        """UDP answers dropped because the send buffer was full (batched reader only)."""
        if self._udp_thread is not None:
            return self._udp_thread.dropped
        return self._udp_reader.dropped if self._udp_reader is not None else 0

    async def start(self) -> None:
        """Bind both sockets and start answering; raises OSError naming host:port on failure."""
        if self._port is not None:
            raise RuntimeError("the DNS server is already started")
        tries = _EPHEMERAL_TRIES if self._requested_port == 0 else 1
        for attempt in range(tries):
            udp = await self._bind_udp(self._requested_port)
            port: int = udp.getsockname()[1]
            try:
                self._tcp = await self._bind_tcp(port)
            except OSError as exc:
                udp.close()
                # An ephemeral port free for UDP may be taken for TCP: try another one.
                if exc.errno == errno.EADDRINUSE and attempt + 1 < tries:
                    continue
                raise
            await self._serve_udp(udp)
            self._port = port
            _log.info("DNS server answering on %s port %d (UDP and TCP)", self._host, port)
            return

    async def _bind_udp(self, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self._host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise self._bind_error(exc, "UDP", port) from exc
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise self._bind_error(exc, "UDP", port) from exc
        return sock

    async def _serve_udp(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(self._handler, _LockedHandler):
            self._udp_thread = _UdpThread(sock, self._handler)
            self._udp_thread.start()
            return
        if self._batch_udp:
            reader = _UdpReader(sock, self._handler, loop)
            try:
                reader.start()
            except NotImplementedError:  # a loop without add_reader (Windows' proactor)
                pass
            else:
                self._udp_reader = reader
                return
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self._handler), sock=sock
        )
        self._udp_transport = transport

    async def _bind_tcp(self, port: int) -> asyncio.Server:
        try:
            return await asyncio.start_server(
                self._on_connection,
                host=self._host,
                port=port,
                reuse_address=True,
                limit=2 + 65535,
            )
        except OSError as exc:
            raise self._bind_error(exc, "TCP", port) from exc

    def _bind_error(self, exc: OSError, transport: str, port: int) -> OSError:
        reason = exc.strerror or str(exc)
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = ": another process listens there; choose another port, or 0 for any"
        elif exc.errno == errno.EACCES:
            hint = ": ports below 1024 need root or CAP_NET_BIND_SERVICE"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = ": no interface of this machine has that address"
        return OSError(
            exc.errno,
            f"cannot bind the DNS server ({transport}) to {self._host}:{port}: {reason}{hint}",
        )

    async def stop(self) -> None:
        """Stop answering: close both sockets and every open TCP connection."""
        if self._udp_thread is not None:
            await asyncio.to_thread(self._udp_thread.close)
            self._udp_thread = None
        if self._udp_reader is not None:
            self._udp_reader.close()
            self._udp_reader = None
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        if self._tcp is not None:
            # Stop accepting first, then let connections already accepted reach
            # _on_connection (a few loop steps), then close: asyncio's Server.close() would
            # otherwise leak a socket accepted but not yet handed over (Python 3.11).
            loop = asyncio.get_running_loop()
            for listener in self._tcp.sockets:
                with contextlib.suppress(NotImplementedError, ValueError):
                    loop.remove_reader(listener.fileno())
            for _ in range(_ACCEPT_STEPS):
                await asyncio.sleep(0)
            self._tcp.close()
            for task, writer in list(self._connections.items()):
                writer.close()
                task.cancel()
            if self._connections:
                await asyncio.gather(*self._connections, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None
        self._port = None

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: the connection is known to stop() from the moment
        # asyncio hands it over, even before its task first runs.
        if len(self._connections) >= self._max_tcp_connections:
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._connections[task] = writer
        task.add_done_callback(self._connections.pop)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await self._answer_connection(reader, writer)
        except asyncio.CancelledError:
            pass  # stop(): close below
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away, stalled or cut a message short: close below
        except Exception:
            _log.exception("DNS TCP connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        timeout = self._tcp_idle_timeout
        while True:
            async with asyncio.timeout(timeout):
                try:
                    prefix = await reader.readexactly(2)
                except asyncio.IncompleteReadError:
                    return  # closed between messages: the normal end
                (length,) = struct.unpack("!H", prefix)
                if length < _MIN_MESSAGE:
                    return  # no DNS message is that short: the framing is broken
                message = await reader.readexactly(length)
            try:
                answer = self._handler.handle(message, source, tcp=True)
            except Exception:  # the handler must not raise; drop this query, keep the line
                _log.exception("DNS handler raised on a TCP query from %s", source)
                continue
            if answer is None:
                continue
            writer.write(len(answer).to_bytes(2, "big") + answer)
            async with asyncio.timeout(timeout):
                await writer.drain()


async def run_dns_server(
    handler: WireHandler,
    host: str,
    port: int,
    *,
    started: asyncio.Future[int] | None = None,
) -> None:
    """Serve until cancelled; ``started`` (if given) gets the bound port once answering."""
    async with DnsServer(handler, host, port) as server:
        if started is not None and not started.done():
            started.set_result(server.port)
        await asyncio.Event().wait()
