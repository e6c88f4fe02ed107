"""Test support: a DNS server in a thread of its own, for blocking clients such as dig."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

from edgefleet.dns.server import DnsServer

STARTUP_DEADLINE = 10.0
"""Seconds a server may take to start or stop."""


class ServerThread:
    """A DnsServer in its own thread and event loop, so that blocking clients can ask it."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with self.server:
                self.port = self.server.port
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(STARTUP_DEADLINE), "the DNS server did not start in time"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STARTUP_DEADLINE)
        assert not self._thread.is_alive(), "the DNS server did not stop in time"


def frame(wire: bytes) -> bytes:
    """A DNS message as sent over TCP: two-byte length first (RFC 1035 4.2.2)."""
    return struct.pack("!H", len(wire)) + wire


def read_frame(sock: socket.socket) -> bytes:
    """One length-prefixed DNS message from a TCP socket."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the server")
            data += chunk
        return data

    (length,) = struct.unpack("!H", exactly(2))
    return exactly(length)
