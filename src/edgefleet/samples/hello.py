"""The bundled sample app: a tiny HTTP server that says which site and replica answered.

Standard library only, so that it starts fast and runs anywhere the agent runs. Installed as the
console script ``edgefleet-hello``; ``python -m edgefleet.samples.hello`` works too.

Environment (the process driver sets all but the last two):

``HOST``, ``PORT``
    Address to listen on (default ``127.0.0.1:8000``).
``EDGEFLEET_SITE``, ``EDGEFLEET_REPLICA``, ``EDGEFLEET_APP``
    Reported in the answer to ``GET /``.
``HELLO_CRASH_AFTER``
    For tests of crash recovery: after answering this many ``GET /`` requests, the process
    exits with status 1. Unset or 0: never.
``HELLO_WORK_MS``
    Default service time of ``GET /`` in milliseconds (unset or 0: none; see ``?work=``).
``HELLO_CONCURRENCY``
    Most ``GET /`` requests served at once (unset or 0: no limit); one more answers 503 with
    ``Retry-After: 1`` at once, as a server with that many workers and no queue would.

Endpoints: ``GET /healthz`` answers 200 ``ok``; ``GET /`` answers 200 with JSON
``{"app", "site", "replica", "message"}``; ``POST /echo`` answers 200 with the request body
(``Content-Length`` or chunked, at most 64 MiB, else 413), sent back in chunks of 64 KiB with
chunked transfer encoding and the header ``X-Replica``; anything else is 404. The echo reads the
whole body before it answers: HTTP/1.1 clients (httpx among them) send the whole request before
they read the response, so answering while reading could stall both sides once the socket buffers
are full. Connections are kept alive (HTTP/1.1).

Service time: ``GET /?work=MS`` waits MS milliseconds (at most 10,000; default ``HELLO_WORK_MS``)
before it answers, and says so in the header ``X-Work-Ms``. A load test at a given rate then
keeps requests in flight as a real app would. The wait holds only that request's connection
thread, not the CPU, so requests wait side by side. A ``work`` that is not a whole number of
milliseconds >= 0 answers 400.

One line per request goes to stderr, except successful health checks, which the agent makes every
second and would drown the rest. SIGTERM (and Ctrl-C) shut the server down cleanly with status 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import parse_qs

HEALTH_PATH = "/healthz"
ECHO_PATH = "/echo"
ECHO_MAX = 64 * 1024 * 1024
"""Largest body ``POST /echo`` takes."""
WORK_MAX_MS = 10_000
"""Longest service time ``GET /?work=MS`` waits; larger values are capped to it."""
_CHUNK = 64 * 1024


def work_ms(query: str, default: int) -> int:
    """The service time of one ``GET /`` in milliseconds, from its query string.

    ``work=MS`` in ``query`` (the part after ``?``) wins over ``default`` (``HELLO_WORK_MS``);
    the result is capped at ``WORK_MAX_MS`` so that a typo cannot hold a connection for hours.
    Raises ValueError, with a message for the client, when ``work`` is not a whole number >= 0.
    """
    values = parse_qs(query, keep_blank_values=True).get("work")
    if not values:
        return min(default, WORK_MAX_MS)
    text = values[-1].strip()
    if not text.isdigit():
        raise ValueError(f"work={values[-1]!r}: expected whole milliseconds >= 0, e.g. work=50")
    return min(int(text), WORK_MAX_MS)


class _Handler(BaseHTTPRequestHandler):
    """Answers the endpoints; the server carries the identity and the crash counter."""

    server: _HelloServer
    server_version = "edgefleet-hello"
    # Keep-alive: a proxy in front (the site ingress) reuses its connections.
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: with Nagle's algorithm, a kept-alive connection
    # waits for the client's delayed ACK (40 ms) before the body.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        """``/healthz``, ``/`` or 404."""
        path, _, query = self.path.partition("?")
        if path == HEALTH_PATH:
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            try:
                work = work_ms(query, self.server.work_ms)
            except ValueError as exc:
                self._send(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode(), "text/plain; charset=utf-8")
                return
            if not self.server.admit():
                self._send(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    b"busy: HELLO_CONCURRENCY requests in flight\n",
                    "text/plain; charset=utf-8",
                    {"Retry-After": "1"},
                )
                return
            try:
                if work:
                    # Sleeps this connection's thread only: other requests are served meanwhile.
                    time.sleep(work / 1000)
                body = json.dumps(self.server.greeting()).encode() + b"\n"
            finally:
                # Before the answer goes out: a client that sends its next request as soon as
                # it has this answer must find the slot free.
                self.server.release()
            extra = {"X-Work-Ms": str(work)} if work else {}
            self._send(HTTPStatus.OK, body, "application/json", extra)
            self.server.count_request()
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:
        """``/echo`` or 404."""
        if self.path.split("?", 1)[0] != ECHO_PATH:
            self._discard_body()
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        body = self._read_body(ECHO_MAX)
        if body is None:
            self.close_connection = True
            self._send(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is larger than {ECHO_MAX} bytes\n".encode(),
                "text/plain; charset=utf-8",
            )
            return
        self.send_response(HTTPStatus.OK)
        self.send_header(
            "Content-Type", self.headers.get("Content-Type", "application/octet-stream")
        )
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Replica", self.server.replica)
        self.end_headers()
        view = memoryview(body)
        for start in range(0, len(view), _CHUNK):
            piece = view[start : start + _CHUNK]
            self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _read_body(self, limit: int) -> bytes | None:
        """The request body (``Content-Length`` or chunked), or None when beyond ``limit``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailer fields
                    return bytes(parts)
                if len(parts) + size > limit:
                    return None
                parts += self.rfile.read(size)
                self.rfile.readline()  # CRLF after the chunk
        length = int(self.headers.get("Content-Length", "0") or 0)
        if length > limit:
            return None
        return self.rfile.read(length)

    def _discard_body(self) -> None:
        """Read and drop a request body, so that the connection can serve the next request."""
        if self._read_body(ECHO_MAX) is None:
            self.close_connection = True

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One concise line per request; successful health checks are not logged."""
        if self.path == HEALTH_PATH and str(code) == "200":
            return
        sys.stderr.write(f"{self.address_string()} {self.command} {self.path} {code}\n")

    def log_message(self, format: str, *args: object) -> None:
        """Errors (bad requests) in the same concise shape."""
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class _HelloServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog (5) drops connections when a proxy opens a pool at once.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        *,
        crash_after: int,
        work_ms: int = 0,
        concurrency: int = 0,
    ) -> None:
        self.work_ms = work_ms
        """Default service time of ``GET /`` (``HELLO_WORK_MS``)."""
        self.concurrency = concurrency
        """Most ``GET /`` in flight (``HELLO_CONCURRENCY``); 0: no limit."""
        self._in_flight = 0
        self.site = os.environ.get("EDGEFLEET_SITE", "local")
        self.replica = os.environ.get("EDGEFLEET_REPLICA", "hello-0")
        self.app = os.environ.get("EDGEFLEET_APP", "hello")
        self._crash_after = crash_after
        self._served = 0
        self._count_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # http.server names itself with socket.getfqdn(), a reverse DNS lookup: at a site whose
        # resolver is away, that blocks the start for the resolver's whole timeout (10 s).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def greeting(self) -> dict[str, str]:
        """The JSON body of ``GET /``."""
        return {
            "app": self.app,
            "site": self.site,
            "replica": self.replica,
            "message": f"hello from {self.site}",
        }

    def admit(self) -> bool:
        """Take a slot for a ``GET /``; False when ``HELLO_CONCURRENCY`` are in flight."""
        with self._count_lock:
            if self.concurrency and self._in_flight >= self.concurrency:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """Give the slot back."""
        with self._count_lock:
            self._in_flight -= 1

    def count_request(self) -> None:
        """Exit with status 1 after ``HELLO_CRASH_AFTER`` answers (tests of crash recovery)."""
        with self._count_lock:
            self._served += 1
            crash = 0 < self._crash_after <= self._served
        if crash:
            sys.stderr.write(f"crashing after {self._served} requests (HELLO_CRASH_AFTER)\n")
            sys.stderr.flush()
            # os._exit: sys.exit in a handler thread would only end that thread.
            os._exit(1)


def main() -> None:
    """Serve until SIGTERM or Ctrl-C."""
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    crash_after = int(os.environ.get("HELLO_CRASH_AFTER", "0") or 0)
    try:
        default_work = work_ms(f"work={os.environ.get('HELLO_WORK_MS', '').strip() or 0}", 0)
    except ValueError as error:
        sys.stderr.write(f"hello: HELLO_WORK_MS: {error}\n")
        raise SystemExit(1) from None
    try:
        concurrency = int(os.environ.get("HELLO_CONCURRENCY", "").strip() or 0)
        if concurrency < 0:
            raise ValueError
    except ValueError:
        sys.stderr.write("hello: HELLO_CONCURRENCY must be a whole number >= 0\n")
        raise SystemExit(1) from None
    shown = f"[{host}]" if ":" in host else host
    try:
        server = _HelloServer(
            (host, port), crash_after=crash_after, work_ms=default_work, concurrency=concurrency
        )
    except OSError as error:
        sys.stderr.write(f"hello: cannot listen on {shown}:{port}: {error}\n")
        raise SystemExit(1) from None

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    sys.stderr.write(
        f"hello: {server.replica} of {server.app} at site {server.site} "
        f"listening on http://{shown}:{port}\n"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.stderr.write("hello: stopped\n")


if __name__ == "__main__":
    main()
