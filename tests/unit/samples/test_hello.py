"""The sample app's server."""

from __future__ import annotations

import socket

import pytest

from edgefleet.samples.hello import _HelloServer


def test_the_server_starts_without_a_reverse_dns_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    # At a site whose resolver is away, a reverse lookup blocks for the resolver's timeout.
    def no_resolver(name: str = "") -> str:
        raise AssertionError(f"reverse DNS lookup of {name!r} while binding")

    monkeypatch.setattr(socket, "getfqdn", no_resolver)
    server = _HelloServer(("127.0.0.1", 0), crash_after=0)
    try:
        host, port = server.server_address[:2]
        assert (server.server_name, server.server_port) == (host, port) and port > 0
    finally:
        server.server_close()
