"""The DNS server on real loopback sockets, asked by real clients: dig and dnspython."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from edgefleet.dns import DnsServer, Responder, StaticZone, Target
from tests.conftest import free_port

HOST = "127.0.0.1"
PARIS = Target("paris", "10.0.0.1", "fd00::1", 8080)
LYON = Target("lyon", "10.0.0.2", None, 8081)
MANY = [Target(f"s{i}", f"10.1.0.{i + 1}", f"fd01::{i + 1:x}", 80) for i in range(60)]
DEADLINE = 10.0

needs_dig = pytest.mark.skipif(
    shutil.which("dig") is None,
    reason="dig is missing: run tools/test-deps.sh (it installs Debian's dnsutils)",
)


def make_zone() -> StaticZone:
    return StaticZone(
        nameserver=Target("ns1", HOST, None, 53),
        apps={
            ("demo", "hello"): [PARIS, LYON],
            ("demo", "idle"): [],
            ("demo", "many"): MANY,
        },
        sites=[PARIS, LYON],
        networks={IPv4Network("10.9.0.0/16"): "lyon"},
        max_targets=100,
    )


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
        assert self._ready.wait(DEADLINE), "the DNS server did not start in time"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), "the DNS server did not stop in time"


@pytest.fixture(scope="module")
def zone() -> StaticZone:
    return make_zone()


@pytest.fixture(scope="module", params=["batched", "protocol"])
def server(request: pytest.FixtureRequest, zone: StaticZone) -> Iterator[ServerThread]:
    """One server per UDP reader, shared by the module's tests."""
    responder = Responder(zone, max_answers=100)
    batch = request.param == "batched"
    with ServerThread(DnsServer(responder, HOST, 0, batch_udp=batch)) as running:
        yield running


def dig(port: int, *args: str) -> str:
    done = subprocess.run(
        ["dig", f"@{HOST}", "-p", str(port), "+time=2", "+tries=2", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# -- dig -----------------------------------------------------------------------------------------


@needs_dig
def test_dig_a_short(server: ServerThread) -> None:
    assert dig(server.port, "hello.demo.edge.internal", "A", "+short").split() == [
        "10.0.0.1",
        "10.0.0.2",
    ]


@needs_dig
def test_dig_over_tcp(server: ServerThread) -> None:
    out = dig(server.port, "hello.demo.edge.internal", "AAAA", "+tcp")
    assert "status: NOERROR" in out
    assert "flags: qr aa rd;" in out
    assert "fd00::1" in out


@needs_dig
def test_dig_srv(server: ServerThread) -> None:
    out = dig(server.port, "_http._tcp.hello.demo.edge.internal", "SRV", "+short")
    assert out.splitlines() == [
        "0 0 8080 paris.sites.edge.internal.",
        "1 0 8081 lyon.sites.edge.internal.",
    ]


@needs_dig
def test_dig_subnet_shows_client_subnet_with_scope(server: ServerThread) -> None:
    out = dig(server.port, "hello.demo.edge.internal", "A", "+subnet=10.9.2.0/24")
    assert "CLIENT-SUBNET: 10.9.2.0/24/16" in out
    answers = [line.split()[-1] for line in out.splitlines() if "\tA\t" in line]
    assert answers[:2] == ["10.0.0.2", "10.0.0.1"]


@needs_dig
def test_dig_retries_a_truncated_answer_over_tcp(server: ServerThread) -> None:
    out = dig(server.port, "many.demo.edge.internal", "AAAA")
    assert "Truncated, retrying in TCP mode" in out
    assert "ANSWER: 60," in out
    assert "flags: qr aa rd;" in out  # the final answer, over TCP, is whole


@needs_dig
@pytest.mark.parametrize(
    ("name", "rdtype", "status", "counts"),
    [
        ("nope.demo.edge.internal", "A", "NXDOMAIN", "ANSWER: 0, AUTHORITY: 1"),
        ("idle.demo.edge.internal", "A", "NOERROR", "ANSWER: 0, AUTHORITY: 1"),
        ("demo.edge.internal", "A", "NOERROR", "ANSWER: 0, AUTHORITY: 1"),
        ("example.com", "A", "REFUSED", "ANSWER: 0, AUTHORITY: 0"),
        ("edge.internal", "SOA", "NOERROR", "ANSWER: 1, AUTHORITY: 0"),
    ],
)
def test_dig_statuses(
    server: ServerThread, name: str, rdtype: str, status: str, counts: str
) -> None:
    out = dig(server.port, name, rdtype)
    assert f"status: {status}" in out
    assert counts in out


@needs_dig
def test_dig_sees_zone_changes(server: ServerThread, zone: StaticZone) -> None:
    zone.set_app("demo", "moving", [PARIS])
    assert dig(server.port, "moving.demo.edge.internal", "+short").split() == ["10.0.0.1"]
    zone.set_app("demo", "moving", [LYON])
    assert dig(server.port, "moving.demo.edge.internal", "+short").split() == ["10.0.0.2"]
    zone.remove_app("demo", "moving")
    assert "status: NXDOMAIN" in dig(server.port, "moving.demo.edge.internal")


# -- dnspython -----------------------------------------------------------------------------------


def test_dnspython_udp_and_tcp(server: ServerThread) -> None:
    q = dns.message.make_query("hello.demo.edge.internal", "A", use_edns=0)
    for send in (dns.query.udp, dns.query.tcp):
        r = send(q, HOST, port=server.port, timeout=2)
        assert r.rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rd in r.answer[0]] == ["10.0.0.1", "10.0.0.2"]


def test_dnspython_udp_gets_tc_then_tcp_gets_all(server: ServerThread) -> None:
    q = dns.message.make_query("many.demo.edge.internal", "ANY")
    udp = dns.query.udp(q, HOST, port=server.port, timeout=2, ignore_trailing=True)
    assert udp.flags & dns.flags.TC
    tcp = dns.query.tcp(q, HOST, port=server.port, timeout=2)
    assert not tcp.flags & dns.flags.TC
    assert [len(rrset) for rrset in tcp.answer] == [60, 60, 60]


def test_dnspython_resolver(server: ServerThread) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [HOST]
    resolver.port = server.port
    resolver.lifetime = 5
    answer = resolver.resolve("hello.demo.edge.internal.", "A")
    assert [rd.to_text() for rd in answer] == ["10.0.0.1", "10.0.0.2"]
    assert answer.rrset is not None and answer.rrset.ttl <= 5
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nope.demo.edge.internal.", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("idle.demo.edge.internal.", "A")


def tcp_frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def read_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    (length,) = struct.unpack("!H", exactly(2))
    return exactly(length)


def test_tcp_answers_several_queries_on_one_connection(server: ServerThread) -> None:
    names = ["hello.demo.edge.internal", "paris.sites.edge.internal", "nope.demo.edge.internal"]
    queries = [dns.message.make_query(name, "A") for name in names]
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as sock:
        # Pipelined: all queries first, then the answers, in order (RFC 7766 6.2.1.1).
        sock.sendall(b"".join(tcp_frame(q.to_wire()) for q in queries))
        answers = [dns.message.from_wire(read_frame(sock)) for _ in queries]
    assert [a.id for a in answers] == [q.id for q in queries]
    assert [a.rcode() for a in answers] == [
        dns.rcode.NOERROR,
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
    ]


# -- lifecycle -----------------------------------------------------------------------------------


def test_explicit_port_and_idle_tcp_connections_close() -> None:
    port = free_port(HOST)
    server = DnsServer(Responder(make_zone()), HOST, port, tcp_idle_timeout=0.3)
    with ServerThread(server) as running, socket.create_connection((HOST, port)) as sock:
        assert running.port == port
        sock.settimeout(DEADLINE)
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, not by our deadline
        assert time.monotonic() - started < DEADLINE


def test_stop_closes_open_connections() -> None:
    server = DnsServer(Responder(make_zone()), HOST, 0)
    with ServerThread(server) as running:
        sock = socket.create_connection((HOST, running.port), timeout=DEADLINE)
    with sock:
        assert sock.recv(1) == b""


def test_binding_a_busy_port_names_host_and_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((HOST, 0))
        port = busy.getsockname()[1]

        async def start() -> None:
            await DnsServer(Responder(make_zone()), HOST, port).start()

        with pytest.raises(OSError, match=f"{HOST}:{port}.*another process listens there"):
            asyncio.run(start())


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = DnsServer(Responder(make_zone()), HOST, 0).port
