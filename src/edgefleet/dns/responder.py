"""The fleet DNS responder: one query in wire format, one answer in wire format.

``resolve`` is the decision: which records answer a question about the fleet zone, as a pure
function of the zone, the name, the type and the client. ``Responder.handle`` is the shell
around it: it parses (dnspython), checks the message (RFC 1035, RFC 6891 EDNS, RFC 7871 ECS),
encodes and truncates the answer, and keeps the fast-path cache. It never raises: anything that
goes wrong while answering is a SERVFAIL (RFC 1035 4.1.1), and the next query is answered as
usual.

Names of the zone (``edge.internal.``; every answer below it is authoritative, AA set):

* apex: SOA and NS; ``ns.<origin>``: A/AAAA of ``zone.nameserver()``.
* ``<app>.<tenant>.<origin>``: A, AAAA, TXT ("site=<name>" per target), ANY = all three.
* ``_http._tcp.<app>.<tenant>.<origin>``: SRV, priority = rank, with the targets' A/AAAA in
  the additional section under ``<site>.sites.<origin>``.
* ``<site>.sites.<origin>``: A/AAAA of ``zone.site_address(site)``.
* ``<tenant>.<origin>``, ``sites.<origin>``, ``_tcp.<app>.<tenant>.<origin>`` exist but own no
  records (empty non-terminals): NODATA. ``ns`` and ``sites`` are therefore not tenant names.

Negative answers (RFC 2308): NXDOMAIN for a name that does not exist, NODATA (NOERROR and an
empty answer) for a missing type, both with the zone's SOA in the authority section, its TTL
being ``negative_ttl`` (also the SOA MINIMUM).

Everything else, in the order checked:

* shorter than a header (12 octets), or QR set (a response): dropped, no answer;
* opcode other than QUERY: NOTIMP, the question echoed;
* unparseable message, question count other than 1, two OPT records, a malformed ECS option:
  FORMERR with the ID, and the question when it parses (RFC 1035 4.1.1, RFC 6891 6.1.1); a
  TSIG-signed query: NOTAUTH (RFC 8945 5.2; we hold no keys);
* EDNS version above 0: BADVERS with our OPT, version 0 (RFC 6891 6.1.3);
* class other than IN, AXFR or IXFR (the zone is computed, not transferred), a name outside
  the zone: REFUSED without AA;
* a name of an app (or below it) that the client may not reach (``zone.lookup`` raises
  ``Refused``: the app's access rules): REFUSED without AA, cached like any answer for the
  client's key.

The question is echoed as asked and answers are owned by that name, so 0x20 case survives;
names are matched case-blind (RFC 4343). RRsets keep the zone's order (best target first): not
shuffled. With EDNS the answer carries our OPT (payload ``EDNS_PAYLOAD``, DO copied); UDP
answers are cut to the client's payload size at RRset boundaries with TC set (RFC 2181 9).

ECS (RFC 7871): a query's option is checked on the raw bytes (FAMILY 1 or 2, prefix lengths
within the address width, exactly the needed ADDRESS octets, zero bits beyond SOURCE
PREFIX-LENGTH, one option per query), else FORMERR (section 6: "MUST" for an unknown family,
"SHOULD" for the others, which we follow). The answer echoes FAMILY, SOURCE PREFIX-LENGTH and
ADDRESS with SCOPE PREFIX-LENGTH from ``Lookup.scope_prefix`` for app names, 0 elsewhere.

The fast path. An answer is a function of the zone's version, of ``zone.client_key(client)``
and of the query's bytes after the 2-byte ID (the ECS option, the payload size and the 0x20
case of the name are all in those bytes), and of the transport (UDP answers may be truncated).
So the responder keeps, per transport, a dict from the query bytes after the ID to an entry:
the query's ECS subnet (parsed once, when the entry was made) and the encoded answers without
their ID, by client key. ``client_key`` is memoized per source address (per source address and
ECS option when the query has one), so a hit is three dict lookups and one bytes concatenation:
no parsing at all, and the ECS option is parsed only the first time those query bytes are seen.
The cache holds one version of the zone: the first query after ``zone.version()`` changes
empties it. It holds at most ``cache_size`` answers: reaching that empties it too (a full
flush is O(1) per insert amortized and needs no bookkeeping on the hit path, unlike an LRU).

The tally. Demand is counted where the queries are answered: a count in the zone would miss
every cache hit. Given a ``tally`` (a ``collections.Counter``), the responder adds one to the
question name (wire format, lowercased) of every query it answers: through ``handle`` (cached
or not, UDP or TCP) and through the flat table, which then counts the hits the server's UDP
loop takes from it. Without a tally nothing changes: the flat table is a plain dict and
``handle`` pays one test. Counts are added by one C call each, so another thread may take them
with ``Counter.pop`` without losing or doubling any (the GIL orders the two).
"""

from __future__ import annotations

import collections
import logging
import math
import struct
import time
import zlib
from collections.abc import Callable, Hashable, Iterable, MutableMapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset

from edgefleet.dns.zone import Client, FleetZone, Refused, Target

__all__ = ["EDNS_PAYLOAD", "Answer", "Responder", "resolve"]

_log = logging.getLogger(__name__)

EDNS_PAYLOAD = 1232
"""Our EDNS UDP payload size (RFC 6891 6.2.5; the DNS Flag Day 2020 value that avoids IP
fragmentation on the common paths)."""

UDP_MIN_PAYLOAD = 512
"""The UDP message size without EDNS (RFC 1035 4.2.1), and the floor of any advertised size
(RFC 6891 6.2.5)."""

TCP_MAX_MESSAGE = 65535
"""The largest message that the 2-byte TCP length prefix can frame (RFC 1035 4.2.2)."""

HEADER_SIZE = 12
"""The DNS header (RFC 1035 4.1.1): a shorter packet has no complete header and is dropped."""

_IN = dns.rdataclass.IN
_A = dns.rdatatype.A
_AAAA = dns.rdatatype.AAAA
_TXT = dns.rdatatype.TXT
_SRV = dns.rdatatype.SRV
_SOA = dns.rdatatype.SOA
_NS = dns.rdatatype.NS
_ANY = dns.rdatatype.ANY
_OPT_TYPE = 41
_ECS_CODE = int(dns.edns.OptionType.ECS)
_CACHEABLE = frozenset({dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED})
_SOA_REFRESH = 3600
_SOA_RETRY = 600
_SOA_EXPIRE = 86400
_MISSING = object()
_ERROR_LOG_INTERVAL = 1.0

# Counter.update's C helper: a count's read and write are one call, which holds the GIL, so
# a ``pop`` of the same name in another thread cannot fall between them (no count lost or
# counted twice). ``tally[name] += 1`` is two steps of the interpreter.
_CountInto = Callable[[MutableMapping[bytes, int], Iterable[bytes]], None]
_count: _CountInto = collections._count_elements  # type: ignore[attr-defined]

_Subnet = IPv4Network | IPv6Network
_Entry = tuple[bytes | None, _Subnet | None, dict[Hashable, bytes]]
"""A cache entry: the query's raw ECS option data and subnet (None without ECS), and the
encoded answers without their ID, by client key."""


@dataclass(frozen=True)
class Answer:
    """The decision for one question: rcode and sections, before encoding."""

    rcode: dns.rcode.Rcode
    """NOERROR (positive or NODATA), NXDOMAIN or REFUSED."""
    answer: tuple[dns.rrset.RRset, ...] = ()
    """Answer section RRsets, in order."""
    authority: tuple[dns.rrset.RRset, ...] = ()
    """Authority section: the SOA of negative answers (RFC 2308 3)."""
    additional: tuple[dns.rrset.RRset, ...] = ()
    """Additional section: addresses of SRV and NS targets (RFC 2782, RFC 1035 3.3.11)."""
    scope_prefix: int = 0
    """RFC 7871 SCOPE PREFIX-LENGTH of this answer."""
    authoritative: bool = True
    """AA: set for every answer within the zone."""


def soa_serial(version: str) -> int:
    """The SOA serial for a zone version: its CRC-32, the same on every server of the fleet.

    Not increasing in the RFC 1982 sense: nothing transfers this zone (AXFR is refused), the
    serial only tells two answers from different versions apart.
    """
    return zlib.crc32(version.encode("utf-8", "surrogatepass"))


def resolve(
    zone: FleetZone,
    qname: dns.name.Name,
    qtype: dns.rdatatype.RdataType,
    client: Client,
    *,
    ttl: int,
    max_answers: int,
    negative_ttl: int,
) -> Answer:
    """Decide the answer to ``qname``/``qtype`` (class IN) from ``client``; no I/O.

    Owner names in the answer section are ``qname`` as asked, so 0x20 case survives.
    """
    origin = zone.origin
    if not qname.is_subdomain(origin):
        return Answer(rcode=dns.rcode.REFUSED, authoritative=False)
    records = _Records(origin=origin, ttl=ttl, negative_ttl=negative_ttl, zone=zone)
    try:
        # Labels below the origin, top down, lowercase (RFC 4343: names compare case-blind).
        path = [
            label.decode("ascii").lower()
            for label in reversed(qname.labels[: len(qname) - len(origin)])
        ]
    except UnicodeDecodeError:
        return records.nxdomain()
    depth = len(path)
    if depth == 0:
        return records.apex(qname, qtype)
    top = path[0]
    if top == "ns":
        if depth > 1:
            return records.nxdomain()
        return records.addresses(qname, qtype, zone.nameserver())
    if top == "sites":
        if depth == 1:
            return records.nodata()
        site = zone.site_address(path[1]) if depth == 2 else None
        if site is None:
            return records.nxdomain()
        return records.addresses(qname, qtype, site)
    if depth == 1:
        return records.nodata() if zone.has_tenant(top) else records.nxdomain()
    try:
        lookup = zone.lookup(top, path[1], client)
    except Refused as refusal:
        return Answer(
            rcode=dns.rcode.REFUSED, authoritative=False, scope_prefix=refusal.scope_prefix
        )
    if lookup is None:
        return records.nxdomain()
    scope = lookup.scope_prefix
    if depth == 2:
        return records.app(qname, qtype, lookup.targets[:max_answers], scope)
    if path[2] != "_tcp":
        return records.nxdomain()
    if depth == 3:
        return records.nodata()
    if depth > 4 or path[3] != "_http":
        return records.nxdomain()
    return records.srv(qname, qtype, lookup.targets[:max_answers], scope)


def _a(address: str) -> dns.rdata.Rdata:
    return dns.rdtypes.IN.A.A(_IN, _A, address)  # type: ignore[no-untyped-call]


def _aaaa(address: str) -> dns.rdata.Rdata:
    return dns.rdtypes.IN.AAAA.AAAA(_IN, _AAAA, address)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class _Records:
    """Builds the RRsets of one answer."""

    origin: dns.name.Name
    ttl: int
    negative_ttl: int
    zone: FleetZone

    def _soa(self, owner: dns.name.Name, ttl: int) -> dns.rrset.RRset:
        rdata = dns.rdtypes.ANY.SOA.SOA(  # type: ignore[no-untyped-call]
            _IN,
            _SOA,
            dns.name.Name((b"ns", *self.origin.labels)),
            dns.name.Name((b"hostmaster", *self.origin.labels)),
            soa_serial(self.zone.version()),
            _SOA_REFRESH,
            _SOA_RETRY,
            _SOA_EXPIRE,
            self.negative_ttl,
        )
        return dns.rrset.from_rdata_list(owner, ttl, [rdata])

    def nxdomain(self) -> Answer:
        """The name does not exist (RFC 2308 2.1)."""
        soa = self._soa(self.origin, self.negative_ttl)
        return Answer(rcode=dns.rcode.NXDOMAIN, authority=(soa,))

    def nodata(self, scope: int = 0) -> Answer:
        """The name exists without records of the type (RFC 2308 2.2)."""
        return Answer(
            rcode=dns.rcode.NOERROR,
            authority=(self._soa(self.origin, self.negative_ttl),),
            scope_prefix=scope,
        )

    def _positive(
        self,
        answer: list[dns.rrset.RRset],
        additional: list[dns.rrset.RRset] | None = None,
        scope: int = 0,
    ) -> Answer:
        if not answer:
            return self.nodata(scope)
        return Answer(
            rcode=dns.rcode.NOERROR,
            answer=tuple(answer),
            additional=tuple(additional or ()),
            scope_prefix=scope,
        )

    def _address_rrsets(
        self, owner: dns.name.Name, qtype: int, targets: tuple[Target, ...]
    ) -> list[dns.rrset.RRset]:
        rrsets = []
        if qtype in (_A, _ANY):
            v4 = [_a(t.ipv4) for t in targets if t.ipv4]
            if v4:
                rrsets.append(dns.rrset.from_rdata_list(owner, self.ttl, v4))
        if qtype in (_AAAA, _ANY):
            v6 = [_aaaa(t.ipv6) for t in targets if t.ipv6]
            if v6:
                rrsets.append(dns.rrset.from_rdata_list(owner, self.ttl, v6))
        return rrsets

    def apex(self, qname: dns.name.Name, qtype: int) -> Answer:
        """SOA and NS of the origin; NS brings the nameserver's addresses as glue."""
        answer = []
        additional: list[dns.rrset.RRset] = []
        if qtype in (_SOA, _ANY):
            answer.append(self._soa(qname, self.ttl))
        if qtype in (_NS, _ANY):
            ns_name = dns.name.Name((b"ns", *self.origin.labels))
            ns = dns.rdtypes.ANY.NS.NS(_IN, _NS, ns_name)  # type: ignore[no-untyped-call]
            answer.append(dns.rrset.from_rdata_list(qname, self.ttl, [ns]))
            additional = self._address_rrsets(ns_name, _ANY, (self.zone.nameserver(),))
        return self._positive(answer, additional)

    def addresses(self, qname: dns.name.Name, qtype: int, target: Target) -> Answer:
        """A/AAAA of one host name (the nameserver, a site)."""
        return self._positive(self._address_rrsets(qname, qtype, (target,)))

    def app(
        self, qname: dns.name.Name, qtype: int, targets: tuple[Target, ...], scope: int
    ) -> Answer:
        """A, AAAA, TXT of an app name, best target first."""
        answer = self._address_rrsets(qname, qtype, targets)
        if qtype in (_TXT, _ANY) and targets:
            txt = [dns.rdtypes.ANY.TXT.TXT(_IN, _TXT, [f"site={t.site}"]) for t in targets]
            answer.append(dns.rrset.from_rdata_list(qname, self.ttl, txt))
        return self._positive(answer, scope=scope)

    def srv(
        self, qname: dns.name.Name, qtype: int, targets: tuple[Target, ...], scope: int
    ) -> Answer:
        """SRV of ``_http._tcp`` (RFC 2782): priority = rank, targets' addresses as glue."""
        if qtype not in (_SRV, _ANY) or not targets:
            return self.nodata(scope)
        sites = dns.name.Name((b"sites", *self.origin.labels))
        rdatas = []
        additional = []
        for rank, target in enumerate(targets):
            host = dns.name.Name((target.site.lower().encode("ascii"), *sites.labels))
            rdatas.append(
                dns.rdtypes.IN.SRV.SRV(  # type: ignore[no-untyped-call]
                    _IN, _SRV, rank, 0, target.port, host
                )
            )
            additional.extend(self._address_rrsets(host, _ANY, (target,)))
        srv = dns.rrset.from_rdata_list(qname, self.ttl, rdatas)
        return self._positive([srv], additional, scope)


class _BadEcs(Exception):
    """The ECS option breaks RFC 7871 6; the query gets FORMERR."""


def _skip_name(wire: bytes, offset: int) -> int:
    """The offset after the (possibly compressed) name at ``offset`` (RFC 1035 4.1.4)."""
    while True:
        length = wire[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length & 0xC0:
            raise ValueError("bad label type")
        offset += length + 1


def _opt_rdata(wire: bytes) -> bytes | None:
    """The raw RDATA of the first OPT record of ``wire``, or None; raises on a bad message."""
    qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", wire, 4)
    offset = HEADER_SIZE
    for _ in range(qdcount):
        offset = _skip_name(wire, offset) + 4
    for index in range(ancount + nscount + arcount):
        offset = _skip_name(wire, offset)
        rtype, _class, _ttl, rdlength = struct.unpack_from("!HHIH", wire, offset)
        offset += 10
        if offset + rdlength > len(wire):
            raise ValueError("record data past the end of the message")
        if rtype == _OPT_TYPE and index >= ancount + nscount:
            return wire[offset : offset + rdlength]
        offset += rdlength
    return None


def _client_subnet(wire: bytes) -> tuple[bytes, _Subnet]:
    """The query's one ECS option: its raw data and its subnet (RFC 7871 6).

    Checked here on the raw bytes rather than trusted to the parser, because that is where
    the RFC's rules live: FAMILY 1 or 2 (else FORMERR, "MUST"), SOURCE PREFIX-LENGTH at most
    32 or 128, exactly ceil(SOURCE PREFIX-LENGTH / 8) ADDRESS octets, and no ADDRESS bits set
    beyond SOURCE PREFIX-LENGTH (else FORMERR, "SHOULD", which we follow). More than one ECS
    option in a query is also FORMERR: the RFC defines one client subnet per query.
    """
    rdata = _opt_rdata(wire)
    found: list[bytes] = []
    offset = 0
    while rdata is not None and offset < len(rdata):
        code, length = struct.unpack_from("!HH", rdata, offset)
        offset += 4
        if code == _ECS_CODE:
            found.append(rdata[offset : offset + length])
        offset += length
    if len(found) != 1:
        raise _BadEcs(f"{len(found)} ECS options")
    data = found[0]
    if len(data) < 4:
        raise _BadEcs("ECS option shorter than its fixed fields")
    family, source_prefix, scope_prefix = struct.unpack_from("!HBB", data)
    if family == 1:
        width = 4
    elif family == 2:
        width = 16
    else:
        raise _BadEcs(f"unknown ECS family {family}")
    if source_prefix > width * 8 or scope_prefix > width * 8:
        raise _BadEcs("ECS prefix length beyond the address width")
    address = data[4:]
    if len(address) != (source_prefix + 7) // 8:
        raise _BadEcs("ECS address octets do not match the source prefix length")
    padded = address + bytes(width - len(address))
    value = int.from_bytes(padded, "big")
    if value & ((1 << (width * 8 - source_prefix)) - 1):
        raise _BadEcs("ECS address bits set beyond the source prefix length")
    if family == 1:
        return data, IPv4Network((padded, source_prefix))
    return data, IPv6Network((padded, source_prefix))


def _bare_answer(wire: bytes, rcode: int) -> bytes:
    """An answer built without the full parser: the header with ``rcode``, the question if
    it parses, and an OPT record if the query had one (RFC 6891 7: errors keep EDNS)."""
    question = b""
    try:
        if struct.unpack_from("!H", wire, 4)[0] == 1:
            name, used = dns.name.from_wire(wire, HEADER_SIZE)
            qtype, qclass = struct.unpack_from("!HH", wire, HEADER_SIZE + used)
            encoded = name.to_wire()
            assert encoded is not None
            question = encoded + struct.pack("!HH", qtype, qclass)
    except Exception:  # whatever the question is, it is not one we can echo
        question = b""
    try:
        opt = _opt_rdata(wire) is not None
    except Exception:  # a broken message has no usable OPT
        opt = False
    flags = 0x8000 | ((wire[2] & 0x79) << 8) | (rcode & 0xF)  # QR, opcode and RD echoed
    header = wire[:2] + struct.pack("!HHHHH", flags, 1 if question else 0, 0, 0, 1 if opt else 0)
    tail = b"\x00" + struct.pack("!HHIH", _OPT_TYPE, EDNS_PAYLOAD, 0, 0) if opt else b""
    return header + question + tail


def _render(response: dns.message.Message, max_size: int) -> bytes:
    """Encode within ``max_size``, truncating at RRset boundaries (RFC 2181 9).

    Additional data is dropped first, without TC (it is optional). If the answer still does
    not fit, TC is set and whole RRsets are dropped from the end until it does, down to an
    empty answer: the client retries over TCP (RFC 1035 4.2.1, RFC 7766).
    """
    try:
        return response.to_wire(max_size=max_size, want_shuffle=False)
    except dns.exception.TooBig:
        pass
    response.additional = []
    try:
        return response.to_wire(max_size=max_size, want_shuffle=False)
    except dns.exception.TooBig:
        response.flags |= dns.flags.TC
    while response.authority or response.answer:
        (response.authority or response.answer).pop()
        try:
            return response.to_wire(max_size=max_size, want_shuffle=False)
        except dns.exception.TooBig:
            continue
    return response.to_wire(max_size=max_size, want_shuffle=False)


def _question_name(query: bytes) -> bytes | None:
    """The question name of ``query`` (a message without its ID), in wire format, lowercased.

    None without a question, or with a name that is compressed or runs past the end.
    """
    if query[2:4] == b"\x00\x00":
        return None
    start = HEADER_SIZE - 2
    try:
        end = _skip_name(query, start)
    except (IndexError, ValueError):
        return None
    if query[end - 1] != 0:  # ended in a compression pointer: no name of its own
        return None
    return query[start:end].lower()


class _TallyingAnswers(dict[bytes, bytes]):
    """The flat table of a responder with a tally: each answer taken from it is counted.

    The server's UDP loop calls ``get`` for every datagram; a hit adds one to the question
    name, which ``names`` holds for every query bytes in the table.
    """

    __slots__ = ("names", "tally")

    def __init__(self, tally: collections.Counter[bytes], names: dict[bytes, bytes]) -> None:
        super().__init__()
        self.tally = tally
        self.names = names
        """Query bytes after the ID -> lowercased question name."""

    def get(self, query: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        body = dict.get(self, query)
        if body is None:
            return default
        _count(self.tally, (self.names[query],))
        return body


class Responder:
    """Answers queries about ``zone`` in wire format, with the fast-path cache.

    ``handle`` is the whole interface: the UDP and TCP server shells call it for every
    message. Not thread-safe: call it from one thread (the event loop's). The zone may change
    under it from anywhere; ``zone.version()`` is read on every query.
    """

    def __init__(
        self,
        zone: FleetZone,
        *,
        ttl: int = 5,
        max_answers: int = 2,
        negative_ttl: int = 5,
        cache_size: int = 100_000,
        tally: collections.Counter[bytes] | None = None,
    ) -> None:
        """``tally``, if given, counts every query answered by its question name (wire format,
        lowercased); the caller takes the counts out with ``pop``, from any thread."""
        if ttl < 0 or negative_ttl < 0:
            raise ValueError("ttl and negative_ttl must be >= 0 seconds")
        if max_answers < 1:
            raise ValueError(f"max_answers must be >= 1, not {max_answers}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, not {cache_size}")
        self._zone = zone
        self._ttl = ttl
        self._max_answers = max_answers
        self._negative_ttl = negative_ttl
        self._cache_size = cache_size
        self._version: str | None = None
        # query bytes after the ID -> (ECS data or None, ECS subnet or None, {client key: body})
        self._udp: dict[bytes, _Entry] = {}
        self._tcp: dict[bytes, _Entry] = {}
        self._tally = tally
        # query bytes after the ID -> question name, for the tally; emptied with the caches.
        self._names: dict[bytes, bytes] = {}
        # UDP answers that depend on nothing but the query bytes, for the server's hot loop.
        self._flat: dict[bytes, bytes] = self._new_flat()
        self._size = 0
        # source address, or (source address, ECS data) -> client key
        self._client_keys: dict[object, Hashable] = {}
        self._last_error_log = -math.inf

    def udp_fast_answers(self) -> dict[bytes, bytes] | None:
        """Query bytes after the ID -> answer bytes after the ID, valid for the zone as it is now.

        Only for zones whose answers do not depend on who asks (``client_independent``, as an
        edge DNS): then the UDP loop can answer a repeated question with one dict lookup, with
        no call into the responder at all. The server asks again for every batch of datagrams,
        so a new zone version is never served from an old table. None for other zones.
        """
        version = self._zone.version()
        if version != self._version:
            self._new_version(version)
        return self._flat if getattr(self._zone, "client_independent", False) else None

    @property
    def cached_answers(self) -> int:
        """How many encoded answers the cache holds now."""
        return self._size

    def handle(self, wire: bytes, source: str, *, tcp: bool) -> bytes | None:
        """The answer to the query ``wire`` from ``source``, or None to send nothing.

        Nothing is sent for a packet shorter than a header or for a response (QR set: answering
        responses invites loops). ``tcp`` answers are never truncated; UDP answers fit the
        client's EDNS payload size (capped at ``EDNS_PAYLOAD``) or 512 octets without EDNS.
        """
        try:
            version = self._zone.version()
            if version != self._version:
                self._new_version(version)
            entry = (self._tcp if tcp else self._udp).get(wire[2:])
            if entry is not None:
                ecs, subnet, answers = entry
                memo_key = source if ecs is None else (source, ecs)
                key = self._client_keys.get(memo_key, _MISSING)
                if key is _MISSING:
                    key = self._client_key(memo_key, Client(source=source, subnet=subnet))
                body = answers.get(key)
                if body is not None:
                    if self._tally is not None:
                        self._count_query(self._tally, wire)
                    return wire[:2] + body
            answer = self._answer(wire, source, tcp=tcp, version=version)
        except Exception:  # never let one query stop the server: SERVFAIL and go on
            self._log_error()
            answer = self._servfail(wire)
        if self._tally is not None and answer is not None:
            self._count_query(self._tally, wire)
        return answer

    def _count_query(self, tally: collections.Counter[bytes], wire: bytes) -> None:
        query = wire[2:]
        name = self._names.get(query)
        if name is None:
            name = _question_name(query)
            if name is None:
                return
        _count(tally, (name,))

    def _new_flat(self) -> dict[bytes, bytes]:
        if self._tally is None:
            return {}
        return _TallyingAnswers(self._tally, self._names)

    def _new_version(self, version: str) -> None:
        self._version = version
        self._udp = {}
        self._tcp = {}
        self._names = {}
        self._flat = self._new_flat()
        self._client_keys = {}
        self._size = 0

    def _client_key(self, memo_key: object, client: Client) -> Hashable:
        key = self._zone.client_key(client)
        if len(self._client_keys) >= self._cache_size:
            self._client_keys = {}
        self._client_keys[memo_key] = key
        return key

    def _log_error(self) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL:
            self._last_error_log = now
            _log.exception("answering a DNS query failed; sent SERVFAIL (logged once a second)")

    def _servfail(self, wire: bytes) -> bytes | None:
        if len(wire) < HEADER_SIZE or wire[2] & 0x80:
            return None
        try:
            return _bare_answer(wire, dns.rcode.SERVFAIL)
        except Exception:  # the bare answer only slices bytes, but never raise out of handle
            return None

    def _answer(self, wire: bytes, source: str, *, tcp: bool, version: str) -> bytes | None:
        """The slow path: parse, decide, encode, remember."""
        if len(wire) < HEADER_SIZE or wire[2] & 0x80:
            return None
        if (wire[2] >> 3) & 0xF != dns.opcode.QUERY:
            return _bare_answer(wire, dns.rcode.NOTIMP)
        try:
            query = dns.message.from_wire(wire)
        except dns.message.UnknownTSIGKey:
            # RFC 8945 5.2: an unknown key is NOTAUTH; we hold no keys, so send no TSIG back.
            return _bare_answer(wire, dns.rcode.NOTAUTH)
        except Exception:  # anything the parser rejects is a format error (RFC 1035 4.1.1)
            return _bare_answer(wire, dns.rcode.FORMERR)
        max_size = TCP_MAX_MESSAGE
        if not tcp:
            max_size = UDP_MIN_PAYLOAD
            if query.edns >= 0:
                max_size = max(UDP_MIN_PAYLOAD, min(query.payload, EDNS_PAYLOAD))
        if len(query.question) != 1:
            return _render(self._response(query, dns.rcode.FORMERR), max_size)
        if query.edns > 0:  # RFC 6891 6.1.3: we implement version 0 only
            return _render(self._response(query, dns.rcode.BADVERS), max_size)
        ecs: bytes | None = None
        subnet: _Subnet | None = None
        if any(option.otype == dns.edns.OptionType.ECS for option in query.options):
            try:
                ecs, subnet = _client_subnet(wire)
            except (_BadEcs, ValueError, struct.error, IndexError):
                return _render(self._response(query, dns.rcode.FORMERR), max_size)
        memo_key = source if ecs is None else (source, ecs)
        client = Client(source=source, subnet=subnet)
        key = self._client_key(memo_key, client)
        question = query.question[0]
        if question.rdclass != _IN or question.rdtype in (
            dns.rdatatype.AXFR,
            dns.rdatatype.IXFR,
        ):
            # Only class IN is served, and the zone is computed, not transferred (RFC 5936 5.1).
            answer = Answer(rcode=dns.rcode.REFUSED, authoritative=False)
        else:
            answer = resolve(
                self._zone,
                question.name,
                question.rdtype,
                client,
                ttl=self._ttl,
                max_answers=self._max_answers,
                negative_ttl=self._negative_ttl,
            )
        response = self._response(query, answer.rcode, answer=answer, subnet=subnet)
        encoded = _render(response, max_size)
        if answer.rcode in _CACHEABLE and self._zone.version() == version == self._version:
            self._remember(wire[2:], tcp=tcp, ecs=ecs, subnet=subnet, key=key, body=encoded[2:])
        return encoded

    def _response(
        self,
        query: dns.message.Message,
        rcode: dns.rcode.Rcode,
        *,
        answer: Answer | None = None,
        subnet: _Subnet | None = None,
    ) -> dns.message.Message:
        response = dns.message.QueryMessage(id=query.id)
        # RD and CD copied (RFC 1035 4.1.1, RFC 4035 3.1.6); no RA: authoritative only.
        response.flags = dns.flags.QR | (query.flags & (dns.flags.RD | dns.flags.CD))
        response.question = list(query.question)
        if answer is not None:
            if answer.authoritative:
                response.flags |= dns.flags.AA
            response.answer = list(answer.answer)
            response.authority = list(answer.authority)
            response.additional = list(answer.additional)
        if query.edns >= 0:
            options: list[dns.edns.Option] = []
            if subnet is not None and answer is not None:
                # RFC 7871 7.2.1: FAMILY, SOURCE PREFIX-LENGTH and ADDRESS copied from the
                # query, SCOPE PREFIX-LENGTH from the answer.
                scope = min(answer.scope_prefix, subnet.max_prefixlen)
                options.append(
                    dns.edns.ECSOption(str(subnet.network_address), subnet.prefixlen, scope)
                )
            response.use_edns(
                0,
                ednsflags=query.ednsflags & dns.flags.DO,  # RFC 3225 3: DO copied
                payload=EDNS_PAYLOAD,
                options=options,
            )
        response.set_rcode(rcode)
        return response

    def _remember(
        self,
        query: bytes,
        *,
        tcp: bool,
        ecs: bytes | None,
        subnet: _Subnet | None,
        key: Hashable,
        body: bytes,
    ) -> None:
        if self._size >= self._cache_size:
            self._udp = {}
            self._tcp = {}
            self._names = {}
            self._flat = self._new_flat()
            self._size = 0
        if self._tally is not None and query not in self._names:
            name = _question_name(query)
            if name is not None:
                self._names[query] = name
        if (
            not tcp
            and ecs is None
            and getattr(self._zone, "client_independent", False)
            and (self._tally is None or query in self._names)
        ):
            self._flat[query] = body
        cache = self._tcp if tcp else self._udp
        entry = cache.get(query)
        if entry is None:
            cache[query] = (ecs, subnet, {key: body})
        else:
            entry[2][key] = body
        self._size += 1
