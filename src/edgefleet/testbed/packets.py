"""Raw IPv4 packets as a TUN device hands them over: read the header, craft and parse UDP.

The WAN emulator routes every packet by its destination address without copying or decoding
more than it needs, and its anycast health checks speak DNS over UDP straight into a site's TUN
device, so it needs a few exact helpers on the bytes (RFC 791 for the IPv4 header, RFC 768 for
UDP, RFC 1071 for the Internet checksum). All of them are pure: no sockets, no devices.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPV4_HEADER_LEN = 20
"""Length of an IPv4 header without options, the only kind :func:`build_udp` writes."""

UDP_HEADER_LEN = 8
"""Length of a UDP header."""

PROTO_ICMP = 1
"""IPv4 protocol number of ICMP."""

PROTO_TCP = 6
"""IPv4 protocol number of TCP."""

PROTO_UDP = 17
"""IPv4 protocol number of UDP."""

DEFAULT_TTL = 64
"""Time to live of crafted packets, as Linux sends them."""

_FLAG_DONT_FRAGMENT = 0x4000
_MORE_FRAGMENTS = 0x2000
_FRAGMENT_OFFSET = 0x1FFF


class PacketError(ValueError):
    """The bytes are not the packet the caller asked about (too short, not IPv4, not UDP)."""


@dataclass(frozen=True)
class UdpDatagram:
    """One UDP datagram taken out of an IPv4 packet."""

    src: str
    """Source IPv4 address, dotted quad."""
    dst: str
    """Destination IPv4 address, dotted quad."""
    sport: int
    """Source port."""
    dport: int
    """Destination port."""
    payload: bytes
    """The UDP payload (the header's length field decides where it ends)."""


def address_bytes(address: str) -> bytes:
    """The 4 bytes of a dotted-quad IPv4 address, as they sit in a header (``PacketError`` if
    it is not one)."""
    try:
        return ipaddress.IPv4Address(address).packed
    except ValueError as exc:
        raise PacketError(f"not an IPv4 address: {address!r}") from exc


def address_text(raw: bytes) -> str:
    """The dotted quad of 4 header bytes."""
    if len(raw) != 4:
        raise PacketError(f"an IPv4 address is 4 bytes, not {len(raw)}")
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def is_ipv4(packet: bytes) -> bool:
    """Whether ``packet`` starts like an IPv4 packet: version 4 and a whole minimal header."""
    return len(packet) >= IPV4_HEADER_LEN and packet[0] >> 4 == 4


def _require_ipv4(packet: bytes) -> None:
    if not is_ipv4(packet):
        raise PacketError(f"not an IPv4 packet ({len(packet)} bytes)")


def src_address(packet: bytes) -> str:
    """Source address of an IPv4 packet."""
    _require_ipv4(packet)
    return address_text(packet[12:16])


def dst_address(packet: bytes) -> str:
    """Destination address of an IPv4 packet."""
    _require_ipv4(packet)
    return address_text(packet[16:20])


def protocol(packet: bytes) -> int:
    """IPv4 protocol number of the payload (``PROTO_UDP``, ``PROTO_TCP``, ``PROTO_ICMP``...)."""
    _require_ipv4(packet)
    return packet[9]


def header_length(packet: bytes) -> int:
    """Length in bytes of the IPv4 header, options included (IHL x 4)."""
    _require_ipv4(packet)
    return (packet[0] & 0x0F) * 4


def total_length(packet: bytes) -> int:
    """The IPv4 total length field: header plus payload, in bytes."""
    _require_ipv4(packet)
    return int.from_bytes(packet[2:4], "big")


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement of the one's complement sum of ``data`` (RFC 1071).

    An odd length is padded with a zero byte. Summing a header that already holds its right
    checksum gives 0.
    """
    if len(data) % 2:
        data += b"\0"
    # One big integer per 16-bit word would be slow in Python; unpacking them all at once and
    # summing in C is several times faster for a 1500-byte packet.
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_header_ok(packet: bytes) -> bool:
    """Whether the IPv4 header checksum of ``packet`` is right."""
    return is_ipv4(packet) and internet_checksum(packet[: header_length(packet)]) == 0


def _udp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    pseudo = src + dst + struct.pack("!BBH", 0, PROTO_UDP, len(segment))
    checksum = internet_checksum(pseudo + segment)
    # RFC 768: a computed 0 is sent as all ones, since 0 means "no checksum".
    return checksum or 0xFFFF


def build_udp(
    *,
    src: str,
    dst: str,
    sport: int,
    dport: int,
    payload: bytes,
    ident: int = 0,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    """An IPv4 packet (20-byte header, don't-fragment set) holding one UDP datagram.

    Both the header checksum and the UDP checksum are filled in, so a Linux stack receiving it
    on a TUN device accepts it as if it came off a wire.
    """
    for name, port in (("sport", sport), ("dport", dport)):
        if not 0 <= port <= 0xFFFF:
            raise PacketError(f"{name} must be a port 0-65535, not {port}")
    if not 0 <= ident <= 0xFFFF:
        raise PacketError(f"ident must fit 16 bits, not {ident}")
    if not 1 <= ttl <= 255:
        raise PacketError(f"ttl must be 1-255, not {ttl}")
    src_raw = address_bytes(src)
    dst_raw = address_bytes(dst)
    udp_len = UDP_HEADER_LEN + len(payload)
    total = IPV4_HEADER_LEN + udp_len
    if total > 0xFFFF:
        raise PacketError(f"payload of {len(payload)} bytes does not fit one IPv4 packet")
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    udp = udp[:6] + struct.pack("!H", _udp_checksum(src_raw, dst_raw, udp)) + udp[8:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # version 4, 5 words of header
        0,  # DSCP/ECN
        total,
        ident,
        _FLAG_DONT_FRAGMENT,
        ttl,
        PROTO_UDP,
        0,  # checksum, filled in below
        src_raw,
        dst_raw,
    )
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + udp


def parse_udp(packet: bytes, *, verify: bool = True) -> UdpDatagram:
    """The UDP datagram in an IPv4 packet.

    ``PacketError`` when the packet is not IPv4, not UDP, a fragment, truncated, or (with
    ``verify``) when its header or UDP checksum is wrong; a UDP checksum of 0 means "none sent"
    (RFC 768) and is accepted.
    """
    _require_ipv4(packet)
    if packet[9] != PROTO_UDP:
        raise PacketError(f"not UDP: IPv4 protocol {packet[9]}")
    ihl = header_length(packet)
    total = total_length(packet)
    if ihl < IPV4_HEADER_LEN or total < ihl + UDP_HEADER_LEN or len(packet) < total:
        raise PacketError(f"truncated packet: {len(packet)} bytes, total length {total}")
    fragment = int.from_bytes(packet[6:8], "big")
    if fragment & (_MORE_FRAGMENTS | _FRAGMENT_OFFSET):
        raise PacketError("a fragment: only whole datagrams are parsed")
    if verify and internet_checksum(packet[:ihl]) != 0:
        raise PacketError("wrong IPv4 header checksum")
    sport, dport, udp_len, checksum = struct.unpack_from("!HHHH", packet, ihl)
    if udp_len < UDP_HEADER_LEN or ihl + udp_len > total:
        raise PacketError(f"UDP length {udp_len} does not fit the packet")
    segment = packet[ihl : ihl + udp_len]
    if verify and checksum:
        pseudo = packet[12:20] + struct.pack("!BBH", 0, PROTO_UDP, udp_len)
        if internet_checksum(pseudo + segment) != 0:
            raise PacketError("wrong UDP checksum")
    return UdpDatagram(
        src=address_text(packet[12:16]),
        dst=address_text(packet[16:20]),
        sport=sport,
        dport=dport,
        payload=bytes(segment[UDP_HEADER_LEN:]),
    )
