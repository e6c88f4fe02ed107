"""The DNS server on real loopback sockets, asked by real clients: dig and dnspython."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import selectors
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from types import SimpleNamespace
from typing import cast

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from edgefleet.dns import DnsServer, Responder, StaticZone, Target, WireHandler
from edgefleet.dns import server as server_module
from edgefleet.dns.server import UDP_BATCH, UDP_MMSG_AVAILABLE
from edgefleet.localfleet import free_port
from tests.support.dns_server import ServerThread, frame, read_frame

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


@pytest.fixture(scope="module")
def zone() -> StaticZone:
    return make_zone()


needs_mmsg = pytest.mark.skipif(
    not UDP_MMSG_AVAILABLE, reason="the recvmmsg reader needs Linux and a libc with recvmmsg"
)

READERS: dict[str, dict[str, bool]] = {
    # reader: DnsServer keywords choosing it
    "mmsg": {"udp_thread": True, "udp_mmsg": True},
    "thread": {"udp_thread": True, "udp_mmsg": False},
    "batched": {"udp_thread": False, "batch_udp": True},
    "protocol": {"udp_thread": False, "batch_udp": False},
}


def udp_server(handler: WireHandler, host: str, reader: str) -> DnsServer:
    """A DnsServer on an ephemeral port with the given UDP ``reader``."""
    if reader == "mmsg" and not UDP_MMSG_AVAILABLE:
        pytest.skip("the recvmmsg reader needs Linux and a libc with recvmmsg")
    return DnsServer(handler, host, 0, **READERS[reader])


@pytest.fixture(scope="module", params=list(READERS))
def server(request: pytest.FixtureRequest, zone: StaticZone) -> Iterator[ServerThread]:
    """One server per UDP reader, shared by the module's tests."""
    responder = Responder(zone, max_answers=100)
    with ServerThread(udp_server(responder, HOST, request.param)) as running:
        assert running.server.udp_reader == request.param
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


def test_tcp_answers_several_queries_on_one_connection(server: ServerThread) -> None:
    names = ["hello.demo.edge.internal", "paris.sites.edge.internal", "nope.demo.edge.internal"]
    queries = [dns.message.make_query(name, "A") for name in names]
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as sock:
        # Pipelined: all queries first, then the answers, in order (RFC 7766 6.2.1.1).
        sock.sendall(b"".join(frame(q.to_wire()) for q in queries))
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


# -- UDP under load: the recvmmsg reader and the per-datagram thread -----------------------------


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no ::1")
APPS = 40


def open_zone(*, networks: bool = False) -> StaticZone:
    """Apps app0.. with one address each. Without ``networks`` every client gets the same
    answers, so repeated UDP questions are answered from the responder's flat table, without
    calling it; with them every UDP query goes through ``handle`` with its source."""
    return StaticZone(
        nameserver=Target("ns1", HOST, None, 53),
        apps={
            ("demo", "hello"): [PARIS, LYON],
            ("demo", "many"): MANY,
            **{("demo", f"app{i}"): [MANY[i]] for i in range(APPS)},
        },
        sites=[PARIS, LYON],
        networks={IPv4Network("10.9.0.0/16"): "lyon"} if networks else None,
        max_targets=100,
    )


def app_query(index: int, query_id: int) -> dns.message.Message:
    return dns.message.make_query(f"app{index % APPS}.demo.edge.internal", "A", id=query_id)


def expect_app(query: dns.message.Message, answer: dns.message.Message) -> None:
    """``answer`` answers ``query``, an app_query() or a name that does not exist."""
    assert answer.id == query.id
    assert answer.question == query.question
    name = query.question[0].name.labels[0].decode()
    if name.startswith("app"):
        assert answer.rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rd in answer.answer[0]] == [MANY[int(name[3:])].ipv4]
    else:
        assert answer.rcode() == dns.rcode.NXDOMAIN


class Clients:
    """A few UDP sockets asking one server, every answer read with the socket it came to."""

    def __init__(self, host: str, port: int, count: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sockets: list[socket.socket] = []
        self._selector = selectors.DefaultSelector()
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.connect((host, port))
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._selector.close()
        for sock in self.sockets:
            sock.close()

    def read(self, count: int | None, timeout: float) -> list[tuple[int, bytes]]:
        """(socket index, datagram) read until ``count`` came or ``timeout`` seconds."""
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while (count is None or len(got) < count) and time.monotonic() < deadline:
            for key, _ in self._selector.select(0.05):
                sock = cast(socket.socket, key.fileobj)
                while True:
                    try:
                        got.append((self.sockets.index(sock), sock.recv(65535)))
                    except BlockingIOError:
                        break
        return got


def ask_in_bursts(
    host: str, port: int, queries: list[dns.message.Message], *, sockets: int = 5
) -> dict[int, dns.message.Message]:
    """Every query's answer by ID: all queries sent at once, round-robin over ``sockets``;
    the unanswered ones sent again (UDP may drop under load) up to 5 rounds. Asserts that each
    answer came back to a socket that asked for it."""
    by_id = {q.id: q for q in queries}
    assert len(by_id) == len(queries), "query IDs must be unique"
    asked: dict[int, set[int]] = {q.id: set() for q in queries}
    answers: dict[int, dns.message.Message] = {}
    with Clients(host, port, sockets) as clients:
        for _ in range(5):
            pending = [q for q in queries if q.id not in answers]
            if not pending:
                break
            for k, query in enumerate(pending):
                asked[query.id].add(k % sockets)
                clients.sockets[k % sockets].send(query.to_wire())
            for index, data in clients.read(len(pending), 3.0):
                answer = dns.message.from_wire(data)
                assert answer.id in by_id, f"an answer to no query: ID {answer.id}"
                assert index in asked[answer.id], "an answer sent to a socket that did not ask"
                answers[answer.id] = answer
    return answers


@pytest.mark.parametrize("reader", ["mmsg", "thread"])
def test_udp_burst_every_answer_with_its_own_id(reader: str) -> None:
    queries = [app_query(i, i + 1) for i in range(450)]
    queries += [
        dns.message.make_query(f"nope{i}.demo.edge.internal", "A", id=1000 + i) for i in range(50)
    ]
    with ServerThread(udp_server(Responder(open_zone()), HOST, reader)) as running:
        assert running.server.udp_reader == reader
        answers = ask_in_bursts(HOST, running.port, queries)
    assert len(answers) == len(queries)
    for query in queries:
        expect_app(query, answers[query.id])


@needs_ipv6
@pytest.mark.parametrize("reader", ["mmsg", "thread"])
def test_udp_burst_over_ipv6(reader: str) -> None:
    queries = [app_query(i, i + 1) for i in range(300)]
    seen = Recording(Responder(open_zone(networks=True)))  # every query reaches handle()
    with ServerThread(udp_server(seen, "::1", reader)) as running:
        answers = ask_in_bursts("::1", running.port, queries, sockets=3)
        tcp = dns.query.tcp(queries[0], "::1", port=running.port, timeout=DEADLINE)
    assert len(answers) == len(queries)
    for query in queries:
        expect_app(query, answers[query.id])
    expect_app(queries[0], tcp)
    assert set(seen.sources) == {"::1"}


class Recording:
    """A responder that records who asks, and can hold the UDP thread inside its first UDP
    query for ``gate.demo.edge.internal`` until released: meanwhile queries pile up in the
    server's socket, so that the reader then finds whole batches waiting."""

    def __init__(self, responder: Responder) -> None:
        self._responder = responder
        self.sources: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def udp_fast_answers(self) -> dict[bytes, bytes] | None:
        return self._responder.udp_fast_answers()

    def handle(self, wire: bytes, source: str, *, tcp: bool) -> bytes | None:
        self.sources.append(source)
        if not tcp and b"\x04gate" in wire and not self.entered.is_set():
            self.entered.set()
            self.release.wait(DEADLINE)
        return self._responder.handle(wire, source, tcp=tcp)


SHORT = b"\xff\xfe\x01"  # shorter than a header: no answer
BROKEN = b"\xff\xff\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\xff"  # FORMERR


@pytest.mark.parametrize("reader", ["mmsg", "thread"])
@pytest.mark.parametrize("independent", [True, False], ids=["flat-table", "no-table"])
def test_udp_batch_mixing_cached_uncached_and_malformed(reader: str, independent: bool) -> None:
    handler = Recording(Responder(open_zone(networks=not independent)))
    cached = [app_query(i, i + 1) for i in range(APPS)]
    with ServerThread(udp_server(handler, HOST, reader)) as running:
        assert ask_in_bursts(HOST, running.port, cached).keys() == {q.id for q in cached}
        handler.release.clear()
        gate = dns.message.make_query("gate.demo.edge.internal", "A", id=9999)
        queries: list[dns.message.Message] = [gate]
        # (socket, datagram): the queries from sockets 0 and 1 in turn, the junk from 2. Junk
        # precedes queries in every batch, so answers do not go out in the slots their queries
        # came in, and each must still reach the socket that asked.
        datagrams: list[tuple[int, bytes]] = []
        for i in range(3 * UDP_BATCH // 4):
            uncached = dns.message.make_query(f"nope{i}.demo.edge.internal", "A", id=2000 + i)
            again = app_query(i, 3000 + i)  # asked before: answered from the flat table
            response = bytearray(again.to_wire())
            response[0:2] = b"\xff\xfe"
            response[2] |= 0x80  # QR: a response, never answered
            datagrams += [(2, SHORT), (i % 2, again.to_wire()), (2, b"")]
            datagrams += [(1 - i % 2, uncached.to_wire()), (2, bytes(response)), (2, BROKEN)]
            queries += [again, uncached]
        with Clients(HOST, running.port, 3) as clients:
            clients.sockets[0].send(gate.to_wire())
            assert handler.entered.wait(DEADLINE)
            for index, datagram in datagrams:
                clients.sockets[index].send(datagram)
            handler.release.set()
            # Everything that comes in a second: the answers, and nothing for the junk.
            got = clients.read(None, 1.0)
    asked = {dns.message.from_wire(data).id: index for index, data in datagrams if len(data) > 14}
    asked[gate.id] = 0
    by_id = {q.id: q for q in queries}
    answers = [(i, dns.message.from_wire(data)) for i, data in got if data[:2] != b"\xff\xff"]
    assert sorted(a.id for _, a in answers) == sorted(by_id)
    for index, answer in answers:
        assert index == asked[answer.id], "an answer sent to a socket that did not ask"
        if answer.id != gate.id:
            expect_app(by_id[answer.id], answer)
    formerr = [(i, dns.message.from_wire(data)) for i, data in got if data[:2] == b"\xff\xff"]
    assert len(formerr) == sum(data == BROKEN for _, data in datagrams)
    assert {(i, a.rcode()) for i, a in formerr} == {(2, dns.rcode.FORMERR)}
    assert set(handler.sources) == {HOST}


@needs_mmsg
def test_udp_flat_table_follows_zone_changes() -> None:
    zone = open_zone()
    query = dns.message.make_query("moving.demo.edge.internal", "A")
    with ServerThread(DnsServer(Responder(zone), HOST, 0)) as running:
        assert running.server.udp_reader == "mmsg"
        for targets, expected in (([PARIS], "10.0.0.1"), ([LYON], "10.0.0.2")):
            zone.set_app("demo", "moving", targets)
            for _ in range(3):  # the second and third from the flat table
                answer = dns.query.udp(query, HOST, port=running.port, timeout=DEADLINE)
                assert [rd.to_text() for rd in answer.answer[0]] == [expected]


@pytest.mark.parametrize("reader", ["mmsg", "thread"])
def test_udp_answers_over_512_octets_get_tc(reader: str) -> None:
    plain = dns.message.make_query("many.demo.edge.internal", "A")  # 60 A: 1000+ octets
    edns = dns.message.make_query("many.demo.edge.internal", "A", use_edns=0)
    bigger = dns.message.make_query("many.demo.edge.internal", "AAAA", use_edns=0)
    responder = Responder(open_zone(), max_answers=100)
    with ServerThread(udp_server(responder, HOST, reader)) as running:
        for _ in range(3):  # first answered by the responder, then from the flat table
            without = send_udp(plain, running.port)
            assert len(without) <= 512
            assert dns.message.from_wire(without).flags & dns.flags.TC
            within = send_udp(edns, running.port)
            assert 512 < len(within) <= 1232  # fits the EDNS payload: whole
            assert not dns.message.from_wire(within).flags & dns.flags.TC
            assert len(dns.message.from_wire(within).answer[0]) == 60
            beyond = send_udp(bigger, running.port)
            assert len(beyond) <= 1232
            assert dns.message.from_wire(beyond).flags & dns.flags.TC


def send_udp(query: dns.message.Message, port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect((HOST, port))
        sock.send(query.to_wire())
        data = sock.recv(65535)
    assert data[:2] == query.to_wire()[:2]
    return data


def udp_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "dns-udp"}


@pytest.mark.parametrize("reader", ["mmsg", "thread"])
def test_stop_during_a_udp_burst_leaves_no_thread_and_no_socket(reader: str) -> None:
    before = udp_threads()
    blasting = threading.Event()
    answered = threading.Event()
    query = app_query(0, 7).to_wire()

    def blast(port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((HOST, port))
            sock.setblocking(False)
            while blasting.is_set():
                for _ in range(32):
                    with contextlib.suppress(OSError):  # refused once the server is gone
                        sock.send(query)
                try:
                    while sock.recv(65535):
                        answered.set()
                except OSError:  # nothing to read, or refused once the server is gone
                    pass

    with ServerThread(udp_server(Responder(open_zone()), HOST, reader)) as running:
        port = running.port
        assert udp_threads() - before
        blasting.set()
        client = threading.Thread(target=blast, args=(port,))
        client.start()
        try:
            assert answered.wait(DEADLINE)
        except BaseException:
            blasting.clear()
            client.join()
            raise
    try:
        # ServerThread's exit awaited stop() while the client kept sending.
        assert udp_threads() == before
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind((HOST, port))  # the server's UDP socket is closed: the port is free
    finally:
        blasting.clear()
        client.join(DEADLINE)
    assert not client.is_alive()


def test_udp_mmsg_false_uses_the_recvfrom_thread() -> None:
    server = DnsServer(Responder(open_zone()), HOST, 0, udp_mmsg=False)
    with ServerThread(server) as running:
        assert running.server.udp_reader == "thread"
        answer = dns.query.udp(app_query(1, 1), HOST, port=running.port, timeout=DEADLINE)
        expect_app(app_query(1, 1), answer)
    assert server.udp_reader is None


@needs_mmsg
def test_recvmmsg_failing_falls_back_to_recvfrom(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = server_module._MMSG
    assert real is not None

    def failing(*args: object) -> int:
        ctypes.set_errno(errno.ENOSYS)  # as under a seccomp filter that forbids recvmmsg
        return -1

    calls = SimpleNamespace(recvmmsg=failing, sendmmsg=real.sendmmsg)
    monkeypatch.setattr(server_module, "_MMSG", calls)
    with ServerThread(DnsServer(Responder(open_zone()), HOST, 0)) as running:
        for i in range(3):
            answer = dns.query.udp(app_query(i, i + 1), HOST, port=running.port, timeout=5)
            expect_app(app_query(i, i + 1), answer)
    assert "answering with recvfrom instead" in caplog.text


@needs_mmsg
def test_sendmmsg_skips_only_the_message_it_refuses() -> None:
    size = ctypes.sizeof(server_module._Mmsghdr)
    results = iter([(2, 0), (-1, errno.EPERM), (-1, errno.EINTR), (3, 0)])
    calls: list[tuple[int, int]] = []
    base = 0

    def sendmmsg(fd: int, address: int, count: int, flags: int) -> int:
        calls.append(((address - base) // size, count))
        sent, code = next(results)
        ctypes.set_errno(code)
        return sent

    fake = SimpleNamespace(recvmmsg=None, sendmmsg=sendmmsg)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        handler = server_module._LockedHandler(Responder(open_zone()))
        reader = server_module._UdpMmsgThread(sock, handler, fake)  # type: ignore[arg-type]
        base = reader._send_address
        reader._send(sock.fileno(), 6)
    # 2 sent; the third refused and dropped; interrupted, then the last 3 sent.
    assert calls == [(0, 6), (2, 4), (3, 3), (3, 3)]
    assert reader.dropped == 1
