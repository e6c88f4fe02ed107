"""The bundled sample app: a tiny HTTP server that says which site and replica answered.

Standard library only, so that it starts fast and runs anywhere the agent runs. Installed as the
console script ``edgefleet-hello``; ``python -m edgefleet.samples.hello`` works too.

Environment (the process driver sets all but the last):

``HOST``, ``PORT``
    Address to listen on (default ``127.0.0.1:8000``).
``EDGEFLEET_SITE``, ``EDGEFLEET_REPLICA``, ``EDGEFLEET_APP``
    Reported in the answer to ``GET /``.
``HELLO_CRASH_AFTER``
    For tests of crash recovery: after answering this many ``GET /`` requests, the process
    exits with status 1. Unset or 0: never.

Endpoints: ``GET /healthz`` answers 200 ``ok``; ``GET /`` answers 200 with JSON
``{"app", "site", "replica", "message"}``; anything else is 404. One line per request goes to
stderr, except successful health checks, which the agent makes every second and would drown
the rest. SIGTERM (and Ctrl-C) shut the server down cleanly with status 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

HEALTH_PATH = "/healthz"


class _Handler(BaseHTTPRequestHandler):
    """Answers the three endpoints; the server carries the identity and the crash counter."""

    server: _HelloServer
    server_version = "edgefleet-hello"

    def do_GET(self) -> None:
        """``/healthz``, ``/`` or 404."""
        path = self.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            body = json.dumps(self.server.greeting()).encode() + b"\n"
            self._send(HTTPStatus.OK, body, "application/json")
            self.server.count_request()
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
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

    def __init__(self, address: tuple[str, int], *, crash_after: int) -> None:
        self.site = os.environ.get("EDGEFLEET_SITE", "local")
        self.replica = os.environ.get("EDGEFLEET_REPLICA", "hello-0")
        self.app = os.environ.get("EDGEFLEET_APP", "hello")
        self._crash_after = crash_after
        self._served = 0
        self._count_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def greeting(self) -> dict[str, str]:
        """The JSON body of ``GET /``."""
        return {
            "app": self.app,
            "site": self.site,
            "replica": self.replica,
            "message": f"hello from {self.site}",
        }

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
    shown = f"[{host}]" if ":" in host else host
    try:
        server = _HelloServer((host, port), crash_after=crash_after)
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
