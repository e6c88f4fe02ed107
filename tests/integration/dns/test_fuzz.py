"""Hostile input: random and mutated packets, through ``handle`` and over real sockets.

Whatever arrives, the responder answers well-formed messages or nothing, never raises, never
fails internally (SERVFAIL), and the server keeps answering everybody else.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import dns.edns
import dns.exception
import dns.message
import dns.opcode
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.dns import DnsServer, Responder, StaticZone, Target
from tests.support.dns_server import ServerThread, frame, read_frame

HOST = "127.0.0.1"
DEADLINE = 10.0
PARIS = Target("paris", "10.0.0.1", "fd00::1", 8080)
LYON = Target("lyon", "10.0.0.2", None, 8081)
MANY = [Target(f"s{i}", f"10.1.0.{i + 1}", f"fd01::{i + 1:x}", 80) for i in range(40)]


def make_zone() -> StaticZone:
    return StaticZone(
        nameserver=Target("ns1", HOST, None, 53),
        apps={("demo", "hello"): [PARIS, LYON], ("demo", "many"): MANY},
        sites=[PARIS, LYON],
    )


def _query(name: str, rdtype: str, **kwargs: object) -> bytes:
    message = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    return message.to_wire(max_size=65535)


VALID = [
    _query("hello.demo.edge.internal", "A"),
    _query("HeLLo.demo.EDGE.internal", "AAAA", use_edns=0),
    _query("_http._tcp.hello.demo.edge.internal", "SRV", use_edns=0, payload=4096),
    _query("many.demo.edge.internal", "ANY"),
    _query("edge.internal", "SOA", use_edns=0),
    _query("nope.demo.edge.internal", "TXT"),
    _query("example.com", "A"),
    _query(
        "hello.demo.edge.internal", "A", use_edns=0, options=[dns.edns.ECSOption("10.9.0.0", 16)]
    ),
    _query(
        "hello.demo.edge.internal", "A", use_edns=0, options=[dns.edns.ECSOption("2001:db8::", 56)]
    ),
]

edns_options = st.lists(
    st.builds(
        dns.edns.GenericOption,
        st.sampled_from([8, 10, 12, 15, 65001]) | st.integers(0, 65535),
        st.binary(max_size=40),
    ),
    max_size=4,
)


@st.composite
def with_random_options(draw: st.DrawFn) -> bytes:
    """A query whose OPT record carries random options (ECS, cookies, padding, unknown...)."""
    options = draw(edns_options)
    name = draw(st.sampled_from(["hello.demo.edge.internal", "edge.internal", "x.example"]))
    version = draw(st.sampled_from([0, 0, 0, 1]))
    return _query(name, "A", use_edns=version, options=options)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid query, then bit flips, byte changes, truncations and extensions."""
    wire = bytearray(draw(st.sampled_from(VALID) | with_random_options()))
    steps = draw(
        st.lists(st.sampled_from(["flip", "byte", "cut", "extend", "oversize"]), max_size=4)
    )
    for step in steps:
        if step == "flip" and wire:
            bit = draw(st.integers(0, len(wire) * 8 - 1))
            wire[bit // 8] ^= 1 << (bit % 8)
        elif step == "byte" and wire:
            wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
        elif step == "cut":
            del wire[draw(st.integers(0, len(wire))) :]
        elif step == "extend":
            wire += draw(st.binary(min_size=1, max_size=64))
        elif step == "oversize":
            wire += draw(st.binary(min_size=1, max_size=16)) * (5000 // 16 + 1)
    return bytes(wire)


def oversized_but_valid() -> bytes:
    """A well-formed query of more than 4096 octets (a huge padding option)."""
    padding = dns.edns.GenericOption(dns.edns.OptionType.PADDING, bytes(5000))
    return _query("hello.demo.edge.internal", "A", use_edns=0, options=[padding])


packets = st.binary(max_size=600) | mutated() | st.just(oversized_but_valid())


def check(wire: bytes, answer: bytes | None, *, tcp: bool) -> None:
    """What any answer to any packet must be."""
    if len(wire) < 12 or wire[2] & 0x80:
        assert answer is None
    if answer is None:
        return
    assert isinstance(answer, bytes)
    assert len(answer) >= 12
    assert answer[:2] == wire[:2]
    assert answer[2] & 0x80, "an answer is a response"
    assert len(answer) <= (65535 if tcp else 1232)
    assert answer[3] & 0xF != dns.rcode.SERVFAIL, "an internal error answering hostile input"
    if (answer[2] >> 3) & 0xF == dns.opcode.QUERY:
        parsed = dns.message.from_wire(answer)
        assert parsed.rcode() != dns.rcode.SERVFAIL


responder = Responder(make_zone(), max_answers=100, cache_size=1000)


@settings(max_examples=400, deadline=None)
@given(wire=packets, tcp=st.booleans())
def test_handle_never_raises(wire: bytes, tcp: bool) -> None:
    check(wire, responder.handle(wire, "192.0.2.1", tcp=tcp), tcp=tcp)


def test_handle_accepts_an_oversized_valid_query() -> None:
    wire = oversized_but_valid()
    assert len(wire) > 4096
    answer = responder.handle(wire, "192.0.2.1", tcp=False)
    check(wire, answer, tcp=False)
    assert answer is not None
    assert dns.message.from_wire(answer).rcode() == dns.rcode.NOERROR


# -- over the sockets ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    responder = Responder(make_zone(), max_answers=100)
    with ServerThread(DnsServer(responder, HOST, 0, tcp_idle_timeout=2.0)) as running:
        yield running


@pytest.fixture(scope="module")
def udp(server: ServerThread) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, server.port))
        sock.settimeout(DEADLINE)
        yield sock


def probe_id() -> int:
    return random.randrange(65536)


def udp_answer(sock: socket.socket, query: dns.message.Message) -> dns.message.Message:
    """Send ``query`` and read until its answer arrives (answers to earlier junk are skipped)."""
    sock.send(query.to_wire())
    while True:
        data = sock.recv(65535)
        if data[:2] == query.to_wire()[:2] and len(data) >= 12 and data[2] & 0x80:
            try:
                answer = dns.message.from_wire(data)
            except dns.exception.DNSException:
                continue  # an answer to junk that reused the probe's ID
            if answer.question == query.question:
                return answer


def assert_answers_hello(
    port: int, udp_sock: socket.socket | None = None, *, tcp: bool = True
) -> None:
    query = dns.message.make_query("hello.demo.edge.internal", "A", id=probe_id())
    if udp_sock is not None:
        answer = udp_answer(udp_sock, query)
        assert [rd.to_text() for rd in answer.answer[0]] == ["10.0.0.1", "10.0.0.2"]
    if tcp:
        with socket.create_connection((HOST, port), timeout=DEADLINE) as sock:
            sock.sendall(frame(query.to_wire()))
            answer = dns.message.from_wire(read_frame(sock))
        assert answer.id == query.id
        assert [rd.to_text() for rd in answer.answer[0]] == ["10.0.0.1", "10.0.0.2"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(wire=packets)
def test_udp_junk_does_not_stop_the_server(
    server: ServerThread, udp: socket.socket, wire: bytes
) -> None:
    udp.send(wire)
    assert_answers_hello(server.port, udp, tcp=False)


def test_still_answers_udp_and_tcp_after_a_barrage(
    server: ServerThread, udp: socket.socket
) -> None:
    rng = random.Random(7)
    for _ in range(3000):
        base = bytearray(rng.choice(VALID))
        for _ in range(rng.randrange(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        if rng.random() < 0.2:
            del base[rng.randrange(len(base)) :]
        if rng.random() < 0.1:
            base += rng.randbytes(rng.randrange(1, 5000))
        udp.send(bytes(base))
    # Ask on a fresh socket: the barrage's own answers may have filled the first one's receive
    # buffer, and the kernel drops what does not fit there, whatever the server did.
    # The server may still be working through the barrage, and a datagram that arrives while its
    # own buffer is full is dropped by the kernel: ask up to three times, as a resolver would.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
        fresh.settimeout(DEADLINE / 3)
        fresh.connect((HOST, server.port))
        for attempt in range(3):
            try:
                assert_answers_hello(server.port, fresh)
                break
            except TimeoutError:
                if attempt == 2:
                    raise


# -- TCP framing ---------------------------------------------------------------------------------


def closed_by_server(sock: socket.socket) -> bool:
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize(
    "junk",
    [
        b"\x00\x03abc",  # a frame too short for any DNS message
        b"\x00\x00",  # an empty frame
    ],
    ids=["short frame", "empty frame"],
)
def test_broken_framing_closes_only_that_connection(server: ServerThread, junk: bytes) -> None:
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as bad:
        bad.sendall(junk)
        assert closed_by_server(bad)
    assert_answers_hello(server.port)


@pytest.mark.parametrize(
    "partial",
    [b"\x01\x00" + bytes(10), b"\x01", frame(VALID[0])[:-3]],
    ids=["length beyond what follows", "half a length", "message cut short"],
)
def test_client_closing_mid_message_does_not_hurt_others(
    server: ServerThread, partial: bytes
) -> None:
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as bad:
        bad.sendall(partial)
    assert_answers_hello(server.port)


def test_stalled_connection_does_not_block_others(server: ServerThread) -> None:
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as stalled:
        stalled.sendall(b"\x01\x00" + bytes(5))  # promises 256 octets, sends 5, then waits
        assert_answers_hello(server.port)
        assert closed_by_server(stalled)  # at the idle timeout


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(junk=st.binary(min_size=12, max_size=300) | mutated().filter(lambda w: len(w) >= 12))
def test_junk_frames_are_answered_or_skipped_and_the_connection_goes_on(
    server: ServerThread, junk: bytes
) -> None:
    query = dns.message.make_query("hello.demo.edge.internal", "A", id=probe_id())
    probe = query.to_wire()
    with socket.create_connection((HOST, server.port), timeout=DEADLINE) as sock:
        sock.sendall(frame(junk) + frame(probe))
        while True:
            data = read_frame(sock)
            if data[:2] == junk[:2]:
                check(junk, data, tcp=True)
            if data[:2] == probe[:2] and (data[2] >> 3) & 0xF == dns.opcode.QUERY:
                answer = dns.message.from_wire(data)
                if answer.question == query.question:
                    break
    assert [rd.to_text() for rd in answer.answer[0]] == ["10.0.0.1", "10.0.0.2"]
