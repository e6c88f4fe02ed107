"""Raw IPv4/UDP helpers: header fields, checksums against known packets, crafting round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.testbed.packets import (
    PROTO_UDP,
    PacketError,
    address_bytes,
    address_text,
    build_udp,
    dst_address,
    header_length,
    internet_checksum,
    ipv4_header_ok,
    is_ipv4,
    parse_udp,
    protocol,
    src_address,
    total_length,
)

# The worked example of the IPv4 header checksum (192.168.0.1 -> 192.168.0.199, UDP, 0x73
# bytes); its checksum field holds 0xb861.
EXAMPLE_HEADER = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")

# A datagram Linux sent through a TUN device: 10.99.1.1:40053 -> 10.99.1.2:53, payload
# b"edgefleet", IP id 0xefad, don't-fragment, TTL 64; both checksums computed by the kernel.
LINUX_UDP = bytes.fromhex(
    "45000025efad4000401134520a6301010a6301029c75003500113fbd65646765666c656574"
)

addresses = st.builds(
    lambda raw: address_text(raw), st.binary(min_size=4, max_size=4).filter(lambda b: b[0] != 0)
)


def test_header_checksum_of_the_worked_example() -> None:
    assert internet_checksum(EXAMPLE_HEADER) == 0xB861
    filled = EXAMPLE_HEADER[:10] + bytes.fromhex("b861") + EXAMPLE_HEADER[12:]
    assert internet_checksum(filled) == 0
    assert ipv4_header_ok(filled)
    assert not ipv4_header_ok(EXAMPLE_HEADER)


def test_checksum_pads_an_odd_length() -> None:
    assert internet_checksum(b"\x01") == internet_checksum(b"\x01\x00") == 0xFEFF


def test_header_fields_of_a_linux_packet() -> None:
    assert is_ipv4(LINUX_UDP)
    assert src_address(LINUX_UDP) == "10.99.1.1"
    assert dst_address(LINUX_UDP) == "10.99.1.2"
    assert protocol(LINUX_UDP) == PROTO_UDP
    assert header_length(LINUX_UDP) == 20
    assert total_length(LINUX_UDP) == len(LINUX_UDP) == 37


def test_build_udp_gives_the_bytes_linux_sent() -> None:
    built = build_udp(
        src="10.99.1.1", dst="10.99.1.2", sport=40053, dport=53, payload=b"edgefleet", ident=0xEFAD
    )
    assert built == LINUX_UDP


def test_parse_udp_of_a_linux_packet() -> None:
    datagram = parse_udp(LINUX_UDP)
    assert (datagram.src, datagram.dst, datagram.sport, datagram.dport) == (
        "10.99.1.1",
        "10.99.1.2",
        40053,
        53,
    )
    assert datagram.payload == b"edgefleet"


@given(
    src=addresses,
    dst=addresses,
    sport=st.integers(0, 0xFFFF),
    dport=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=1472),
    ident=st.integers(0, 0xFFFF),
)
def test_build_then_parse_round_trips(
    src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int
) -> None:
    packet = build_udp(src=src, dst=dst, sport=sport, dport=dport, payload=payload, ident=ident)
    assert ipv4_header_ok(packet)
    assert total_length(packet) == len(packet) == 28 + len(payload)
    datagram = parse_udp(packet)  # verifies both checksums
    assert (datagram.src, datagram.dst, datagram.sport, datagram.dport) == (src, dst, sport, dport)
    assert datagram.payload == payload


@given(payload=st.binary(min_size=1, max_size=200), flip=st.integers(0, 10_000))
def test_a_flipped_bit_fails_a_checksum(payload: bytes, flip: int) -> None:
    packet = bytearray(
        build_udp(src="10.0.0.1", dst="10.0.0.2", sport=1000, dport=53, payload=payload)
    )
    # Any bit of the addresses, the UDP header or the payload: covered by one checksum or both.
    position = 12 + flip % (len(packet) - 12)
    packet[position] ^= 1 << (flip % 8)
    with pytest.raises(PacketError):
        parse_udp(bytes(packet))


def test_unverified_parsing_reads_a_packet_with_a_wrong_checksum() -> None:
    packet = bytearray(LINUX_UDP)
    packet[-1] ^= 0xFF
    with pytest.raises(PacketError, match="UDP checksum"):
        parse_udp(bytes(packet))
    assert parse_udp(bytes(packet), verify=False).payload == b"edgefleet"[:-1] + bytes(
        [ord("t") ^ 0xFF]
    )


def test_a_zero_udp_checksum_means_none_sent() -> None:
    packet = bytearray(LINUX_UDP)
    packet[26:28] = b"\0\0"
    assert parse_udp(bytes(packet)).payload == b"edgefleet"


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"\x45" + b"\0" * 10, "not an IPv4 packet"),
        (bytes.fromhex("6000000000000000") + b"\0" * 32, "not an IPv4 packet"),
        (EXAMPLE_HEADER[:9] + b"\x06" + EXAMPLE_HEADER[10:], "not UDP"),
        (LINUX_UDP[:30], "truncated"),
        (LINUX_UDP[:6] + b"\x20\x00" + LINUX_UDP[8:], "fragment"),
    ],
)
def test_parse_udp_refuses(packet: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        parse_udp(packet)


def test_header_readers_refuse_what_is_not_ipv4() -> None:
    with pytest.raises(PacketError):
        dst_address(b"\x60" + b"\0" * 39)
    assert not is_ipv4(b"\x45\0")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sport": 70000},
        {"dport": -1},
        {"ident": 1 << 16},
        {"ttl": 0},
        {"src": "10.0.0"},
        {"payload": b"x" * 65520},
    ],
)
def test_build_udp_refuses_bad_fields(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "src": "10.0.0.1",
        "dst": "10.0.0.2",
        "sport": 1,
        "dport": 2,
        "payload": b"",
    }
    fields.update(kwargs)
    with pytest.raises(PacketError):
        build_udp(**fields)  # type: ignore[arg-type]


def test_address_conversions() -> None:
    assert address_bytes("10.77.255.53") == bytes([10, 77, 255, 53])
    assert address_text(bytes([10, 77, 255, 53])) == "10.77.255.53"
    with pytest.raises(PacketError):
        address_text(b"\0\0\0")
