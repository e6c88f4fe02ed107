"""The DNS server shell: UDP and TCP sockets on one port around a wire handler.

All DNS lives in the handler (``Responder``); this module only moves bytes. UDP (RFC 1035
4.2.1): one datagram in, the handler called synchronously, at most one datagram out. TCP
(RFC 1035 4.2.2, RFC 7766): 2-byte length framing, several queries per connection answered in
order, connections closed when idle for ``tcp_idle_timeout`` seconds, on a framing error, or
at ``stop()``.

UDP has four readers. By default (``udp_thread=True``) UDP is answered in a thread of its own,
on a blocking socket, so that the event loop is not in the path at all; repeated questions to
a zone whose answers do not depend on the client come from the responder's flat table
(``udp_fast_answers``) without taking the handler's lock. On Linux that thread moves datagrams
with ``recvmmsg(2)``/``sendmmsg(2)`` (through ctypes, as Knot DNS does): one system call
receives every datagram queued, up to ``UDP_BATCH``, and one sends all their answers, where a
``recvfrom``/``sendto`` loop pays two system calls per query, which were most of its cost
(bench/dns_qps.py on a 2-core VM, median of 4 runs: 169k queries/s against 139k for the plain
loop and 158k for Knot DNS). With ``udp_mmsg=False``, or where libc lacks them, the thread uses
that plain loop.

With ``udp_thread=False`` UDP is read in the event loop. asyncio's datagram transport reads one
datagram per event-loop iteration, so every query pays an ``epoll_wait`` besides its
``recvfrom`` and ``sendto``; measured on a 2-core VM that made the loop, not the responder, the
limit (about 20k queries/s against 86k). That reader therefore registers the socket with
``loop.add_reader`` and drains up to ``UDP_BATCH`` datagrams per wake-up, calling the handler
and ``sendto`` for each. It needs a loop with ``add_reader`` (the default selector loop,
uvloop); elsewhere, or with ``batch_udp=False``, the server uses a plain
``asyncio.DatagramProtocol``. When the socket's send buffer is full the batched reader drops
that answer (the client retries, as for any lost datagram) instead of queueing without bound.

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
import ctypes
import errno
import logging
import mmap
import os
import socket
import struct
import sys
import threading
from types import TracebackType
from typing import Protocol, cast

__all__ = ["UDP_BATCH", "UDP_MMSG_AVAILABLE", "DnsServer", "WireHandler", "run_dns_server"]

_log = logging.getLogger(__name__)

UDP_BATCH = 64
"""Datagrams the batched UDP reader handles per wake-up before yielding to other tasks, and
the most one recvmmsg takes."""

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


# -- recvmmsg/sendmmsg through ctypes (Linux) ---------------------------------------------------


class _Iovec(ctypes.Structure):
    """``struct iovec`` (<sys/uio.h>)."""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    """``struct msghdr`` (<sys/socket.h>), glibc's layout; ctypes adds the same padding as C.

    musl declares ``msg_iovlen`` and ``msg_controllen`` as int plus padding: on little-endian
    64-bit machines the size_t written here lands in the int with zero padding, the same bytes
    (on big-endian ones it would not: ``_load_mmsg`` then wants glibc).
    """

    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    """``struct mmsghdr``: one message of recvmmsg/sendmmsg and its length in bytes."""

    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_MSG_WAITFORONE = 0x10000
"""recvmmsg flag (<linux/socket.h>; Python's socket module lacks it): block for the first
datagram only, then take whatever else is queued without waiting."""

_SOCKADDR_STORAGE = 128
"""sizeof(struct sockaddr_storage): room for any source address."""

_SLOT = 65536
"""Bytes per datagram buffer: any UDP payload (``_MAX_DATAGRAM``) fits, query or answer."""

_IPV4_NAME = 16
_IPV6_NAME = 28
"""sizeof(struct sockaddr_in) and sizeof(struct sockaddr_in6): what the kernel writes as the
source of every datagram on a socket of that family (an IPv6 socket reports IPv4 clients as
mapped IPv6 addresses, still 28 bytes)."""

_SOURCE_CACHE = 4096
"""Decoded source addresses kept by the recvmmsg reader before it forgets them all."""

_TRANSIENT_ERRORS = frozenset(
    {
        errno.EINTR,
        errno.EAGAIN,
        errno.ENOBUFS,
        errno.ENOMEM,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.ETIMEDOUT,
    }
)
"""recvmmsg errors that concern one datagram or one moment (a signal, an ICMP error queued on
the socket, memory pressure): the reader goes on. Any other error falls back to recvfrom."""


class _MmsgCalls:
    """libc's recvmmsg and sendmmsg with their C signatures."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self.recvmmsg = libc.recvmmsg
        self.recvmmsg.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        self.recvmmsg.restype = ctypes.c_int
        self.sendmmsg = libc.sendmmsg
        self.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        self.sendmmsg.restype = ctypes.c_int


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # not glibc
        return False


def _load_mmsg() -> _MmsgCalls | None:
    """recvmmsg and sendmmsg from the C library, or None where there are none."""
    if not sys.platform.startswith("linux"):
        return None
    if ctypes.sizeof(ctypes.c_void_p) != ctypes.sizeof(ctypes.c_size_t):
        return None  # the reader writes iovec fields as size_t: pointers must be that wide
    if sys.byteorder != "little" and not _glibc():
        return None  # musl's int msg_iovlen would get the size_t's high half (see _Msghdr)
    try:
        # The running program's symbols include libc's: no library name to guess.
        return _MmsgCalls(ctypes.CDLL(None, use_errno=True))
    except (OSError, AttributeError):  # no dynamic libc, or a libc without them
        return None


_MMSG = _load_mmsg()

UDP_MMSG_AVAILABLE = _MMSG is not None
"""Whether the UDP thread can use recvmmsg/sendmmsg here (Linux, libc has both)."""


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


class _UdpMmsgThread(_UdpThread):
    """The UDP thread with one ``recvmmsg`` and one ``sendmmsg`` per batch (Linux).

    ``recvmmsg(MSG_WAITFORONE)`` blocks for the first datagram, then takes every other one
    already queued, up to ``UDP_BATCH``; their answers leave in one ``sendmmsg``. Under load
    that is two system calls per batch instead of two per query; an idle server still answers
    a lone query at once. Everything the kernel reads or writes is allocated once per server:
    ``UDP_BATCH`` datagram buffers of ``_SLOT`` bytes (anonymous memory: only the pages
    touched are resident), a source address buffer per datagram, and the two header arrays.

    Answers are written into the datagram buffers: the answer to the k-th datagram of a batch
    that gets one goes into buffer k, whose query (the k-th or an earlier one) has already been
    read, so no bytes object has to stay pinned while the kernel reads it. Send header k points
    at buffer k and at source address k; both are copied there only when an earlier datagram
    of the batch got no answer.
    """

    def __init__(self, sock: socket.socket, handler: _LockedHandler, calls: _MmsgCalls) -> None:
        super().__init__(sock, handler)
        self._calls = calls
        count = UDP_BATCH
        if sock.family == socket.AF_INET:
            self._name_size = _IPV4_NAME
            self._address_at, self._address_end = 4, 8  # sin_addr
        else:
            self._name_size = _IPV6_NAME
            self._address_at, self._address_end = 8, 28  # sin6_addr and sin6_scope_id
        # Anonymous memory: a page becomes resident when first written, so the 4 MiB cost
        # what the datagrams use (bytearray would zero, and so touch, all of it).
        self._buffers = mmap.mmap(-1, count * _SLOT)
        self._names = bytearray(count * _SOCKADDR_STORAGE)
        # Holding these exports keeps both buffers from ever being resized (moved).
        self._pins = (
            (ctypes.c_char * len(self._buffers)).from_buffer(self._buffers),
            (ctypes.c_char * len(self._names)).from_buffer(self._names),
        )
        base, names = (ctypes.addressof(pin) for pin in self._pins)
        self._receive_iov = (_Iovec * count)()
        self._send_iov = (_Iovec * count)()
        self._receive_msgs = (_Mmsghdr * count)()
        self._send_msgs = (_Mmsghdr * count)()
        for k in range(count):
            for iov, msgs in (
                (self._receive_iov, self._receive_msgs),
                (self._send_iov, self._send_msgs),
            ):
                iov[k].iov_base = base + k * _SLOT
                iov[k].iov_len = _SLOT
                header = msgs[k].msg_hdr
                header.msg_name = names + k * _SOCKADDR_STORAGE
                header.msg_iov = ctypes.pointer(iov[k])
                header.msg_iovlen = 1
            self._receive_msgs[k].msg_hdr.msg_namelen = _SOCKADDR_STORAGE
            self._send_msgs[k].msg_hdr.msg_namelen = self._name_size
        # The loop reads msg_len and writes iov_len through these views: a ctypes field access
        # builds a Python object per structure, several times the cost of a memoryview item.
        uint = ctypes.sizeof(ctypes.c_uint)
        size_t = ctypes.sizeof(ctypes.c_size_t)
        self._lengths = memoryview(self._receive_msgs).cast("B").cast("I")
        self._length_stride = ctypes.sizeof(_Mmsghdr) // uint
        self._length_at = _Mmsghdr.msg_len.offset // uint
        # "P" (void *) items are size_t wide here: _load_mmsg() checks it.
        self._send_lengths = memoryview(self._send_iov).cast("B").cast("P")
        self._send_length_stride = ctypes.sizeof(_Iovec) // size_t
        self._send_length_at = _Iovec.iov_len.offset // size_t
        self._receive_address = ctypes.addressof(self._receive_msgs)
        self._send_address = ctypes.addressof(self._send_msgs)
        self._sources: dict[bytes, str] = {}

    def _run(self) -> None:
        try:
            fell_back = self._run_batches()
        except Exception:  # a bug here must not end UDP service: fall back to recvfrom
            _log.exception("DNS UDP recvmmsg reader failed; answering with recvfrom instead")
            fell_back = True
        if fell_back and not self._stopping:
            super()._run()

    def _run_batches(self) -> bool:
        """Serve until stopped (False) or until recvmmsg fails for good (True)."""
        receive = self._calls.recvmmsg
        fd = self._sock.fileno()
        receive_address = self._receive_address
        handle = self._handler.handle
        fast_answers = getattr(self._handler, "udp_fast_answers", None)
        buffers = memoryview(self._buffers)
        names = memoryview(self._names)
        lengths = self._lengths
        length_stride = self._length_stride
        length_at = self._length_at
        send_lengths = self._send_lengths
        send_stride = self._send_length_stride
        send_at = self._send_length_at
        name_size = self._name_size
        while not self._stopping:
            received = receive(fd, receive_address, UDP_BATCH, _MSG_WAITFORONE, None)
            if received < 0:
                code = ctypes.get_errno()
                if self._stopping:
                    break
                if code in _TRANSIENT_ERRORS:
                    _log.debug("DNS UDP receive error: %s", errno.errorcode.get(code, code))
                    continue
                _log.warning(
                    "DNS UDP recvmmsg failed (%s); answering with recvfrom instead",
                    errno.errorcode.get(code, code),
                )
                return True
            if self._stopping:  # the datagram that woke us, maybe among queries: answer none
                break
            # Asked once per batch: a new zone version is seen at the next recvmmsg.
            table = fast_answers() if fast_answers is not None else None
            answers = 0
            for index in range(received):
                at = index * _SLOT
                size = lengths[index * length_stride + length_at]
                if table is not None:
                    body = table.get(buffers[at + 2 : at + size].tobytes())
                    if body is not None:
                        out = answers * _SLOT
                        if answers != index:
                            buffers[out : out + 2] = buffers[at : at + 2]
                            self._move_name(names, index, answers, name_size)
                        end = out + 2 + len(body)
                        buffers[out + 2 : end] = body
                        send_lengths[answers * send_stride + send_at] = end - out
                        answers += 1
                        continue
                data = buffers[at : at + size].tobytes()
                source = self._source(names, index)
                try:
                    answer = handle(data, source, tcp=False)
                except Exception:  # the handler must not raise; if it does, drop this query
                    _log.exception("DNS handler raised on a UDP query from %s", source)
                    continue
                if table is not None:  # the handler may have seen a new zone version
                    table = fast_answers() if fast_answers is not None else None
                if answer is None:
                    continue
                if len(answer) > _MAX_DATAGRAM:  # no UDP datagram is that long
                    self.dropped += 1
                    continue
                out = answers * _SLOT
                buffers[out : out + len(answer)] = answer
                if answers != index:
                    self._move_name(names, index, answers, name_size)
                send_lengths[answers * send_stride + send_at] = len(answer)
                answers += 1
            if answers:
                self._send(fd, answers)
        return False

    @staticmethod
    def _move_name(names: memoryview, source: int, target: int, size: int) -> None:
        """Source address ``source`` to slot ``target``, where send header ``target`` looks."""
        at = source * _SOCKADDR_STORAGE
        to = target * _SOCKADDR_STORAGE
        names[to : to + size] = names[at : at + size]

    def _source(self, names: memoryview, index: int) -> str:
        """The client address of datagram ``index`` as recvfrom would give it, e.g. "::1"."""
        at = index * _SOCKADDR_STORAGE
        key = names[at + self._address_at : at + self._address_end].tobytes()
        source = self._sources.get(key)
        if source is not None:
            return source
        if self._sock.family == socket.AF_INET:
            source = socket.inet_ntop(socket.AF_INET, key)
        else:
            source = socket.inet_ntop(socket.AF_INET6, key[:16])
            scope = int.from_bytes(key[16:], sys.byteorder)
            if scope:  # a link-local client: name its interface, as getnameinfo does
                try:
                    source = f"{source}%{socket.if_indextoname(scope)}"
                except OSError:
                    source = f"{source}%{scope}"
        if len(self._sources) >= _SOURCE_CACHE:
            self._sources = {}
        self._sources[key] = source
        return source

    def _send(self, fd: int, count: int) -> None:
        """Send the first ``count`` answers; a message the kernel refuses is dropped alone."""
        send = self._calls.sendmmsg
        size = ctypes.sizeof(_Mmsghdr)
        start = 0
        while start < count:
            sent = send(fd, self._send_address + start * size, count - start, 0)
            if sent > 0:
                start += sent
                continue
            code = ctypes.get_errno() if sent < 0 else 0
            if code == errno.EINTR:
                continue  # interrupted before the first message left: send it again
            # sendmmsg reports an error only for the first message of the call: skip that one.
            self.dropped += 1
            _log.debug("DNS UDP send failed: %s", errno.errorcode.get(code, code))
            start += 1


class DnsServer:
    """A DNS server on ``host``:``port``, UDP and TCP, answering with ``handler``.

    ``port`` 0 picks an ephemeral port free for both transports; ``port`` tells it after
    ``start()``. ``udp_thread``, ``udp_mmsg`` and ``batch_udp`` choose the UDP reader (see the
    module's docstring): ``udp_mmsg`` counts only with ``udp_thread``, ``batch_udp`` only
    without it.
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
        udp_mmsg: bool = True,
    ) -> None:
        self._handler: WireHandler = _LockedHandler(handler) if udp_thread else handler
        self._udp_thread_wanted = udp_thread
        self._udp_mmsg = udp_mmsg
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
    def udp_reader(self) -> str | None:
        """The UDP reader serving now: "mmsg", "thread", "batched" or "protocol" (None when
        stopped). "mmsg" may still fall back to recvfrom inside its thread if recvmmsg fails."""
        if self._udp_thread is not None:
            return "mmsg" if isinstance(self._udp_thread, _UdpMmsgThread) else "thread"
        if self._udp_reader is not None:
            return "batched"
        return "protocol" if self._udp_transport is not None else None

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
            if self._udp_mmsg and _MMSG is not None:
                self._udp_thread = _UdpMmsgThread(sock, self._handler, _MMSG)
            else:
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
