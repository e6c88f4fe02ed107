"""The responder at the message level: wire in, wire out, no sockets."""

from __future__ import annotations

import struct
from collections.abc import Hashable
from ipaddress import IPv4Network, IPv6Network

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from edgefleet.dns import (
    ORIGIN,
    Client,
    Lookup,
    Responder,
    StaticZone,
    Target,
    resolve,
    soa_serial,
)

PARIS = Target("paris", "10.0.0.1", "fd00::1", 8080)
LYON = Target("lyon", "10.0.0.2", None, 8081)
BERLIN = Target("berlin", None, "fd00::3", 8082)
NS = Target("ns1", "127.0.0.53", "::1", 53)
MANY = [
    Target(f"s{i}", f"10.1.{i // 250}.{i % 250 + 1}", f"fd01::{i + 1:x}", 80) for i in range(60)
]
SOURCE = "192.0.2.1"


def make_zone(**kwargs: object) -> StaticZone:
    return StaticZone(
        nameserver=NS,
        apps={
            ("demo", "hello"): [PARIS, LYON],
            ("demo", "three"): [PARIS, LYON, BERLIN],
            ("demo", "idle"): [],
            ("demo", "v6only"): [BERLIN],
            ("demo", "many"): MANY,
            ("demo", "twenty"): MANY[:20],
        },
        sites=[PARIS, LYON, BERLIN],
        max_targets=100,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def zone() -> StaticZone:
    return make_zone()


@pytest.fixture
def responder(zone: StaticZone) -> Responder:
    return Responder(zone, ttl=5, max_answers=2, negative_ttl=7)


def query(
    name: str,
    rdtype: str = "A",
    *,
    edns: int | None = 0,
    payload: int = 1232,
    options: list[dns.edns.Option] | None = None,
    rdclass: str = "IN",
    want_dnssec: bool = False,
) -> dns.message.QueryMessage:
    q = dns.message.make_query(
        name,
        rdtype,
        rdclass,
        use_edns=edns if edns is not None else False,
        payload=payload,
        options=options,
        want_dnssec=want_dnssec,
    )
    return q


def ask(
    responder: Responder,
    name: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    source: str = SOURCE,
    **kwargs: object,
) -> dns.message.Message:
    wire = query(name, rdtype, **kwargs).to_wire()  # type: ignore[arg-type]
    answer = responder.handle(wire, source, tcp=tcp)
    assert answer is not None
    assert answer[:2] == wire[:2]
    return dns.message.from_wire(answer)


def rdata_texts(message: dns.message.Message, rdtype: int) -> list[str]:
    return [rd.to_text() for rrset in message.answer if rrset.rdtype == rdtype for rd in rrset]


def soa_of(message: dns.message.Message) -> dns.rrset.RRset:
    (soa,) = message.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name == ORIGIN
    return soa


# -- positive answers ----------------------------------------------------------------------------


def test_a_lists_targets_best_first_authoritatively(responder: Responder) -> None:
    r = ask(responder, "hello.demo.edge.internal", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert r.flags & dns.flags.QR
    assert not r.flags & dns.flags.RA
    assert rdata_texts(r, dns.rdatatype.A) == ["10.0.0.1", "10.0.0.2"]
    assert r.answer[0].ttl == 5
    assert r.authority == []


def test_a_is_limited_to_max_answers(responder: Responder) -> None:
    r = ask(responder, "three.demo.edge.internal", "A")
    assert rdata_texts(r, dns.rdatatype.A) == ["10.0.0.1", "10.0.0.2"]


def test_aaaa_lists_the_targets_that_have_ipv6(responder: Responder) -> None:
    r = ask(responder, "hello.demo.edge.internal", "AAAA")
    assert rdata_texts(r, dns.rdatatype.AAAA) == ["fd00::1"]


def test_txt_names_each_site(responder: Responder) -> None:
    r = ask(responder, "hello.demo.edge.internal", "TXT")
    assert rdata_texts(r, dns.rdatatype.TXT) == ['"site=paris"', '"site=lyon"']


def test_any_is_a_aaaa_and_txt(responder: Responder) -> None:
    r = ask(responder, "hello.demo.edge.internal", "ANY")
    assert [rrset.rdtype for rrset in r.answer] == [
        dns.rdatatype.A,
        dns.rdatatype.AAAA,
        dns.rdatatype.TXT,
    ]


def test_srv_ranks_targets_and_brings_their_addresses(responder: Responder) -> None:
    r = ask(responder, "_http._tcp.hello.demo.edge.internal", "SRV")
    assert r.rcode() == dns.rcode.NOERROR
    assert rdata_texts(r, dns.rdatatype.SRV) == [
        "0 0 8080 paris.sites.edge.internal.",
        "1 0 8081 lyon.sites.edge.internal.",
    ]
    additional = {
        (str(rrset.name), rrset.rdtype): [rd.to_text() for rd in rrset] for rrset in r.additional
    }
    assert additional == {
        ("paris.sites.edge.internal.", dns.rdatatype.A): ["10.0.0.1"],
        ("paris.sites.edge.internal.", dns.rdatatype.AAAA): ["fd00::1"],
        ("lyon.sites.edge.internal.", dns.rdatatype.A): ["10.0.0.2"],
    }


def test_site_names_resolve_to_site_addresses(responder: Responder) -> None:
    assert rdata_texts(ask(responder, "paris.sites.edge.internal", "A"), 1) == ["10.0.0.1"]
    r = ask(responder, "Paris.Sites.Edge.Internal", "AAAA")
    assert rdata_texts(r, dns.rdatatype.AAAA) == ["fd00::1"]
    assert ask(responder, "nowhere.sites.edge.internal", "A").rcode() == dns.rcode.NXDOMAIN


def test_apex_soa(responder: Responder, zone: StaticZone) -> None:
    r = ask(responder, "edge.internal", "SOA")
    (soa,) = r.answer[0]
    assert soa.mname == dns.name.from_text("ns.edge.internal.")
    assert soa.rname == dns.name.from_text("hostmaster.edge.internal.")
    assert soa.serial == soa_serial(zone.version())
    assert soa.minimum == 7
    assert soa.refresh > soa.retry > 0
    assert soa.expire > soa.refresh


def test_soa_serial_follows_the_zone_version(responder: Responder, zone: StaticZone) -> None:
    before = ask(responder, "edge.internal", "SOA").answer[0][0].serial
    zone.set_app("demo", "new", [PARIS])
    after = ask(responder, "edge.internal", "SOA").answer[0][0].serial
    assert before != after
    assert 0 <= after < 2**32


def test_apex_ns_with_glue(responder: Responder) -> None:
    r = ask(responder, "edge.internal", "NS")
    assert rdata_texts(r, dns.rdatatype.NS) == ["ns.edge.internal."]
    glue = {rrset.rdtype: [rd.to_text() for rd in rrset] for rrset in r.additional}
    assert glue == {dns.rdatatype.A: ["127.0.0.53"], dns.rdatatype.AAAA: ["::1"]}
    assert rdata_texts(ask(responder, "ns.edge.internal", "A"), 1) == ["127.0.0.53"]


def test_question_and_owner_keep_the_case_as_asked(responder: Responder) -> None:
    wire = query("HeLLo.DeMo.eDGE.internal", "A").to_wire()
    answer = responder.handle(wire, SOURCE, tcp=False)
    assert answer is not None
    assert b"\x05HeLLo\x04DeMo\x04eDGE\x08internal\x00" in answer
    r = dns.message.from_wire(answer)
    assert str(r.question[0].name) == "HeLLo.DeMo.eDGE.internal."
    assert str(r.answer[0].name) == "HeLLo.DeMo.eDGE.internal."


# -- negative answers (RFC 2308) -----------------------------------------------------------------

NAMES = [
    # name, type, rcode, answer RRsets
    ("hello.demo.edge.internal", "MX", dns.rcode.NOERROR, 0),
    ("idle.demo.edge.internal", "A", dns.rcode.NOERROR, 0),
    ("v6only.demo.edge.internal", "A", dns.rcode.NOERROR, 0),
    ("v6only.demo.edge.internal", "AAAA", dns.rcode.NOERROR, 1),
    ("demo.edge.internal", "A", dns.rcode.NOERROR, 0),
    ("sites.edge.internal", "A", dns.rcode.NOERROR, 0),
    ("_tcp.hello.demo.edge.internal", "SRV", dns.rcode.NOERROR, 0),
    ("_http._tcp.hello.demo.edge.internal", "A", dns.rcode.NOERROR, 0),
    ("_http._tcp.idle.demo.edge.internal", "SRV", dns.rcode.NOERROR, 0),
    ("edge.internal", "A", dns.rcode.NOERROR, 0),
    ("ns.edge.internal", "TXT", dns.rcode.NOERROR, 0),
    ("nobody.edge.internal", "A", dns.rcode.NXDOMAIN, 0),
    ("nope.demo.edge.internal", "A", dns.rcode.NXDOMAIN, 0),
    ("www.hello.demo.edge.internal", "A", dns.rcode.NXDOMAIN, 0),
    ("_udp.hello.demo.edge.internal", "SRV", dns.rcode.NXDOMAIN, 0),
    ("_ftp._tcp.hello.demo.edge.internal", "SRV", dns.rcode.NXDOMAIN, 0),
    ("x._http._tcp.hello.demo.edge.internal", "SRV", dns.rcode.NXDOMAIN, 0),
    ("a.b.sites.edge.internal", "A", dns.rcode.NXDOMAIN, 0),
    ("x.ns.edge.internal", "A", dns.rcode.NXDOMAIN, 0),
    ("_tcp.nope.demo.edge.internal", "A", dns.rcode.NXDOMAIN, 0),
]


@pytest.mark.parametrize(("name", "rdtype", "rcode", "answers"), NAMES)
def test_names_and_types(
    responder: Responder, name: str, rdtype: str, rcode: dns.rcode.Rcode, answers: int
) -> None:
    r = ask(responder, name, rdtype)
    assert r.rcode() == rcode
    assert r.flags & dns.flags.AA
    assert len(r.answer) == answers
    if answers == 0:
        # NXDOMAIN and NODATA carry the SOA, its TTL the negative TTL (RFC 2308 3).
        assert soa_of(r).ttl == 7


def test_non_ascii_label_does_not_exist(responder: Responder) -> None:
    name = dns.name.Name((b"h\xc3\xa9", b"demo", b"edge", b"internal", b""))
    q = dns.message.make_query(name, "A")
    answer = responder.handle(q.to_wire(), SOURCE, tcp=False)
    assert answer is not None
    assert dns.message.from_wire(answer).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    ("name", "rdtype", "rdclass"),
    [
        ("example.com", "A", "IN"),
        ("internal", "SOA", "IN"),
        ("hello.demo.edge.internal", "A", "CH"),
        ("edge.internal", "AXFR", "IN"),
        ("edge.internal", "IXFR", "IN"),
    ],
)
def test_refused(responder: Responder, name: str, rdtype: str, rdclass: str) -> None:
    r = ask(responder, name, rdtype, rdclass=rdclass)
    assert r.rcode() == dns.rcode.REFUSED
    assert not r.flags & dns.flags.AA
    assert r.answer == [] and r.authority == []


# -- malformed and unsupported -------------------------------------------------------------------


def header(qid: int = 0x1234, flags: int = 0x0100, counts: tuple[int, ...] = (1, 0, 0, 0)) -> bytes:
    return struct.pack("!HH4H", qid, flags, *counts)


QUESTION = b"\x05hello\x04demo\x04edge\x08internal\x00" + struct.pack("!HH", 1, 1)


def raw_ask(responder: Responder, wire: bytes) -> dns.message.Message:
    answer = responder.handle(wire, SOURCE, tcp=False)
    assert answer is not None
    assert answer[:2] == wire[:2]
    return dns.message.from_wire(answer)


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.IQUERY, 3])
def test_other_opcodes_are_not_implemented(responder: Responder, opcode: int) -> None:
    wire = header(flags=opcode << 11) + QUESTION
    answer = responder.handle(wire, SOURCE, tcp=False)
    assert answer is not None
    qid, flags, qdcount = struct.unpack_from("!HHH", answer)
    assert qid == 0x1234
    assert flags & 0x8000  # QR
    assert (flags >> 11) & 0xF == opcode
    assert flags & 0xF == dns.rcode.NOTIMP
    assert qdcount == 1
    assert answer[12:] == QUESTION  # the question echoed as it came


@pytest.mark.parametrize(
    "wire",
    [
        header(counts=(0, 0, 0, 0)),
        header(counts=(2, 0, 0, 0)) + QUESTION + QUESTION,
        header() + QUESTION + b"junk",
        header(counts=(1, 0, 0, 1)) + QUESTION,
        header() + QUESTION[:-2],
        header() + b"\xc0\x0c" + struct.pack("!HH", 1, 1),
        header() + b"\x40abc\x00" + struct.pack("!HH", 1, 1),
    ],
    ids=[
        "no question",
        "two questions",
        "trailing junk",
        "missing additional",
        "cut question",
        "pointer loop",
        "bad label type",
    ],
)
def test_malformed_queries_get_formerr(responder: Responder, wire: bytes) -> None:
    r = raw_ask(responder, wire)
    assert r.rcode() == dns.rcode.FORMERR
    assert r.flags & dns.flags.QR
    assert not r.flags & dns.flags.AA
    assert r.answer == []


def test_formerr_echoes_a_parseable_question(responder: Responder) -> None:
    r = raw_ask(responder, header() + QUESTION + b"junk")
    assert [str(q.name) for q in r.question] == ["hello.demo.edge.internal."]


def test_formerr_with_two_opt_records_keeps_edns(responder: Responder) -> None:
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    r = raw_ask(responder, header(counts=(1, 0, 0, 2)) + QUESTION + opt + opt)
    assert r.rcode() == dns.rcode.FORMERR
    assert r.edns == 0


def test_unknown_edns_version_gets_badvers(responder: Responder) -> None:
    r = ask(responder, "hello.demo.edge.internal", "A", edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0
    assert r.answer == []


@pytest.mark.parametrize(
    "wire",
    [b"", b"\x12", b"\x12\x34\x01", header()[:11]],
    ids=["empty", "one byte", "three bytes", "short header"],
)
def test_packets_shorter_than_a_header_are_dropped(responder: Responder, wire: bytes) -> None:
    assert responder.handle(wire, SOURCE, tcp=False) is None


def test_responses_are_dropped(responder: Responder) -> None:
    assert responder.handle(header(flags=0x8100) + QUESTION, SOURCE, tcp=False) is None
    wire = query("hello.demo.edge.internal").to_wire()
    answer = responder.handle(wire, SOURCE, tcp=False)
    assert answer is not None
    assert responder.handle(answer, SOURCE, tcp=False) is None


def test_signed_query_with_unknown_key_gets_notauth(responder: Responder) -> None:
    import dns.tsigkeyring

    q = query("hello.demo.edge.internal")
    q.use_tsig(dns.tsigkeyring.from_text({"key.": "c2VjcmV0c2VjcmV0"}), keyname="key.")
    r = raw_ask(responder, q.to_wire())
    assert r.rcode() == dns.rcode.NOTAUTH


# -- EDNS and truncation -------------------------------------------------------------------------


def test_edns_in_edns_out(responder: Responder) -> None:
    r = ask(responder, "hello.demo.edge.internal", edns=0, payload=4096)
    assert r.edns == 0
    assert r.payload == 1232
    assert list(r.options) == []
    assert ask(responder, "hello.demo.edge.internal", edns=None).edns == -1


def test_do_bit_is_copied(responder: Responder) -> None:
    r = ask(responder, "hello.demo.edge.internal", want_dnssec=True)
    assert r.ednsflags & dns.flags.DO
    assert not ask(responder, "hello.demo.edge.internal").ednsflags & dns.flags.DO


@pytest.fixture
def wide(zone: StaticZone) -> Responder:
    """Answers with every one of 60 targets."""
    return Responder(zone, max_answers=100)


def raw(responder: Responder, q: dns.message.Message, *, tcp: bool = False) -> bytes:
    answer = responder.handle(q.to_wire(), SOURCE, tcp=tcp)
    assert answer is not None
    return answer


def test_udp_without_edns_truncates_to_512(wide: Responder) -> None:
    wire = raw(wide, query("many.demo.edge.internal", "A", edns=None))
    r = dns.message.from_wire(wire)
    assert len(wire) <= 512
    assert r.flags & dns.flags.TC
    assert r.answer == []  # 60 A records do not fit: no partial RRset


def test_udp_with_edns_fits_our_payload_size(wide: Responder) -> None:
    wire = raw(wide, query("many.demo.edge.internal", "A", payload=4096))
    r = dns.message.from_wire(wire)
    assert 512 < len(wire) <= 1232
    assert not r.flags & dns.flags.TC
    assert len(rdata_texts(r, dns.rdatatype.A)) == 60


def test_truncation_keeps_the_whole_rrsets_that_fit(wide: Responder) -> None:
    wire = raw(wide, query("many.demo.edge.internal", "ANY", payload=4096))
    r = dns.message.from_wire(wire)
    assert len(wire) <= 1232
    assert r.flags & dns.flags.TC
    assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.A]
    assert len(r.answer[0]) == 60


@pytest.mark.parametrize("payload", [100, 512, 700])
def test_client_payload_size_is_honoured(wide: Responder, payload: int) -> None:
    wire = raw(wide, query("many.demo.edge.internal", "A", payload=payload))
    assert len(wire) <= max(512, payload)
    assert dns.message.from_wire(wire).flags & dns.flags.TC


def test_tcp_is_never_truncated(wide: Responder) -> None:
    wire = raw(wide, query("many.demo.edge.internal", "ANY", edns=None), tcp=True)
    r = dns.message.from_wire(wire)
    assert not r.flags & dns.flags.TC
    assert [len(rrset) for rrset in r.answer] == [60, 60, 60]


def test_same_query_over_udp_and_tcp_is_cached_apart(wide: Responder) -> None:
    q = query("many.demo.edge.internal", "A", edns=None)
    for _ in range(2):
        assert dns.message.from_wire(raw(wide, q)).flags & dns.flags.TC
        assert not dns.message.from_wire(raw(wide, q, tcp=True)).flags & dns.flags.TC


def test_additional_data_is_dropped_before_truncating(wide: Responder) -> None:
    # 20 SRV records fit in 1232 octets; their 40 addresses do not, and are left out.
    wire = raw(wide, query("_http._tcp.twenty.demo.edge.internal", "SRV", edns=0))
    r = dns.message.from_wire(wire)
    assert len(wire) <= 1232
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0]) == 20
    assert r.additional == []
    full = dns.message.from_wire(
        raw(wide, query("_http._tcp.twenty.demo.edge.internal", "SRV"), tcp=True)
    )
    assert len(full.additional) == 40


# -- ECS (RFC 7871) ------------------------------------------------------------------------------


@pytest.fixture
def located_zone() -> StaticZone:
    return make_zone(
        networks={
            IPv4Network("10.9.0.0/16"): "lyon",
            IPv4Network("192.0.2.0/24"): "lyon",
            IPv6Network("2001:db8::/32"): "lyon",
        }
    )


def ecs_of(message: dns.message.Message) -> dns.edns.ECSOption | None:
    found = [o for o in message.options if isinstance(o, dns.edns.ECSOption)]
    assert len(found) <= 1
    return found[0] if found else None


def test_ecs_is_echoed_with_the_answer_scope(located_zone: StaticZone) -> None:
    responder = Responder(located_zone)
    r = ask(
        responder,
        "hello.demo.edge.internal",
        source="198.51.100.1",
        options=[dns.edns.ECSOption("10.9.2.0", 24)],
    )
    assert rdata_texts(r, dns.rdatatype.A) == ["10.0.0.2", "10.0.0.1"]
    ecs = ecs_of(r)
    assert ecs is not None
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("10.9.2.0", 24, 16)


def test_ecs_ipv6(located_zone: StaticZone) -> None:
    r = ask(
        Responder(located_zone),
        "hello.demo.edge.internal",
        options=[dns.edns.ECSOption("2001:db8:1::", 48)],
    )
    ecs = ecs_of(r)
    assert ecs is not None
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("2001:db8:1::", 48, 32)


def test_ecs_scope_is_zero_outside_app_answers(located_zone: StaticZone) -> None:
    r = ask(
        Responder(located_zone),
        "nope.demo.edge.internal",
        options=[dns.edns.ECSOption("10.9.2.0", 24)],
    )
    assert r.rcode() == dns.rcode.NXDOMAIN
    ecs = ecs_of(r)
    assert ecs is not None and ecs.scopelen == 0


def test_no_ecs_in_no_ecs_out(located_zone: StaticZone) -> None:
    r = ask(Responder(located_zone), "hello.demo.edge.internal", source="198.51.100.1")
    assert ecs_of(r) is None
    assert rdata_texts(r, dns.rdatatype.A) == ["10.0.0.1", "10.0.0.2"]


def ecs_raw(data: bytes) -> dns.edns.Option:
    return dns.edns.GenericOption(dns.edns.OptionType.ECS, data)


@pytest.mark.parametrize(
    "options",
    [
        [ecs_raw(struct.pack("!HBB", 3, 24, 0) + b"\x0a\x01\x02")],
        [ecs_raw(struct.pack("!HBB", 1, 33, 0) + b"\x0a\x01\x02\x03\x04")],
        [ecs_raw(struct.pack("!HBB", 2, 129, 0) + bytes(17))],
        [ecs_raw(struct.pack("!HBB", 1, 24, 0) + b"\x0a\x01\x02\x03")],
        [ecs_raw(struct.pack("!HBB", 1, 24, 0) + b"\x0a\x01")],
        [ecs_raw(struct.pack("!HBB", 1, 23, 0) + b"\x0a\x01\x03")],
        [ecs_raw(b"\x00\x01\x18")],
        [dns.edns.ECSOption("10.1.2.0", 24), dns.edns.ECSOption("10.1.3.0", 24)],
    ],
    ids=[
        "unknown family",
        "ipv4 prefix too long",
        "ipv6 prefix too long",
        "too many address octets",
        "too few address octets",
        "bits beyond the prefix",
        "shorter than fixed fields",
        "two ECS options",
    ],
)
def test_malformed_ecs_gets_formerr(responder: Responder, options: list[dns.edns.Option]) -> None:
    wire = query("hello.demo.edge.internal", options=options).to_wire()
    r = raw_ask(responder, wire)
    assert r.rcode() == dns.rcode.FORMERR
    assert r.answer == []
    assert ecs_of(r) is None


def test_ecs_source_prefix_zero_is_valid(located_zone: StaticZone) -> None:
    r = ask(
        Responder(located_zone),
        "hello.demo.edge.internal",
        options=[dns.edns.ECSOption("0.0.0.0", 0)],
    )
    assert r.rcode() == dns.rcode.NOERROR
    ecs = ecs_of(r)
    assert ecs is not None and ecs.srclen == 0


# -- the cache -----------------------------------------------------------------------------------


class CountingZone:
    """A FleetZone that counts lookups and can be told to fail."""

    def __init__(self, inner: StaticZone) -> None:
        self.inner = inner
        self.origin = inner.origin
        self.lookups = 0
        self.client_keys = 0
        self.fail_lookup = False
        self.fail_version = False

    def version(self) -> str:
        if self.fail_version:
            raise RuntimeError("version broke")
        return self.inner.version()

    def client_key(self, client: Client) -> Hashable:
        self.client_keys += 1
        return self.inner.client_key(client)

    def lookup(self, tenant: str, app: str, client: Client) -> Lookup | None:
        self.lookups += 1
        if self.fail_lookup:
            raise RuntimeError("lookup broke")
        return self.inner.lookup(tenant, app, client)

    def has_tenant(self, tenant: str) -> bool:
        return self.inner.has_tenant(tenant)

    def site_address(self, site: str) -> Target | None:
        return self.inner.site_address(site)

    def nameserver(self) -> Target:
        return self.inner.nameserver()


def test_cache_hit_returns_the_same_bytes_under_the_new_id(zone: StaticZone) -> None:
    counting = CountingZone(zone)
    responder = Responder(counting)
    wire = query("hello.demo.edge.internal").to_wire()
    first = responder.handle(wire, SOURCE, tcp=False)
    second = responder.handle(b"\xbe\xef" + wire[2:], SOURCE, tcp=False)
    assert first is not None and second is not None
    assert second[:2] == b"\xbe\xef"
    assert second[2:] == first[2:]
    assert counting.lookups == 1
    assert counting.client_keys == 1
    assert responder.cached_answers == 1


def test_a_new_version_is_never_answered_from_the_old_cache(zone: StaticZone) -> None:
    responder = Responder(zone)
    assert rdata_texts(ask(responder, "hello.demo.edge.internal"), 1) == ["10.0.0.1", "10.0.0.2"]
    zone.set_app("demo", "hello", [LYON])
    assert rdata_texts(ask(responder, "hello.demo.edge.internal"), 1) == ["10.0.0.2"]
    zone.remove_app("demo", "hello")
    assert ask(responder, "hello.demo.edge.internal").rcode() == dns.rcode.NXDOMAIN
    assert responder.cached_answers == 1


def test_cache_is_bounded(zone: StaticZone) -> None:
    responder = Responder(zone, cache_size=3)
    for i in range(10):
        ask(responder, f"app{i}.demo.edge.internal")
        assert responder.cached_answers <= 3


def test_errors_are_not_cached(zone: StaticZone) -> None:
    counting = CountingZone(zone)
    responder = Responder(counting)
    counting.fail_lookup = True
    assert ask(responder, "hello.demo.edge.internal").rcode() == dns.rcode.SERVFAIL
    counting.fail_lookup = False
    assert ask(responder, "hello.demo.edge.internal").rcode() == dns.rcode.NOERROR
    assert responder.cached_answers == 1


def test_answers_are_cached_per_client_key(located_zone: StaticZone) -> None:
    counting = CountingZone(located_zone)
    responder = Responder(counting)
    wire = query("hello.demo.edge.internal").to_wire()
    near_lyon = [responder.handle(wire, "192.0.2.7", tcp=False) for _ in range(2)]
    elsewhere = [responder.handle(wire, "198.51.100.7", tcp=False) for _ in range(2)]
    assert near_lyon[0] == near_lyon[1] and elsewhere[0] == elsewhere[1]
    assert near_lyon[0] != elsewhere[0]
    assert rdata_texts(dns.message.from_wire(near_lyon[0] or b""), 1)[0] == "10.0.0.2"
    assert rdata_texts(dns.message.from_wire(elsewhere[0] or b""), 1)[0] == "10.0.0.1"
    # Another client located like the first shares its cached answer.
    assert responder.handle(wire, "192.0.2.99", tcp=False) == near_lyon[0]
    assert counting.lookups == 2


def test_answers_are_cached_per_ecs_subnet(located_zone: StaticZone) -> None:
    counting = CountingZone(located_zone)
    responder = Responder(counting)
    lyon = query("hello.demo.edge.internal", options=[dns.edns.ECSOption("10.9.1.0", 24)])
    other = query("hello.demo.edge.internal", options=[dns.edns.ECSOption("172.16.1.0", 24)])
    for _ in range(3):
        a = dns.message.from_wire(raw(responder, lyon))
        b = dns.message.from_wire(raw(responder, other))
        assert rdata_texts(a, 1)[0] == "10.0.0.2"
        assert rdata_texts(b, 1)[0] == "10.0.0.1"
    assert counting.lookups == 2
    assert counting.client_keys == 2


# -- failures ------------------------------------------------------------------------------------


def test_a_failing_zone_gets_servfail_and_the_responder_goes_on(
    zone: StaticZone, caplog: pytest.LogCaptureFixture
) -> None:
    counting = CountingZone(zone)
    responder = Responder(counting)
    counting.fail_lookup = True
    r = ask(responder, "hello.demo.edge.internal")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert [str(q.name) for q in r.question] == ["hello.demo.edge.internal."]
    assert "SERVFAIL" in caplog.text
    assert ask(responder, "paris.sites.edge.internal").rcode() == dns.rcode.NOERROR


def test_a_failing_version_gets_servfail(zone: StaticZone) -> None:
    counting = CountingZone(zone)
    responder = Responder(counting)
    ask(responder, "hello.demo.edge.internal")
    counting.fail_version = True
    assert ask(responder, "hello.demo.edge.internal").rcode() == dns.rcode.SERVFAIL
    counting.fail_version = False
    assert ask(responder, "hello.demo.edge.internal").rcode() == dns.rcode.NOERROR


# -- the decision and the values -----------------------------------------------------------------


def test_resolve_is_a_pure_decision(zone: StaticZone) -> None:
    answer = resolve(
        zone,
        dns.name.from_text("hello.demo.edge.internal"),
        dns.rdatatype.A,
        Client(source=SOURCE, subnet=None),
        ttl=30,
        max_answers=1,
        negative_ttl=3,
    )
    assert answer.rcode == dns.rcode.NOERROR
    assert [rd.to_text() for rd in answer.answer[0]] == ["10.0.0.1"]
    assert answer.answer[0].ttl == 30


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"site": "a.b"}, "DNS label"),
        ({"site": ""}, "DNS label"),
        ({"ipv4": "fd00::1"}, "not an IPv4"),
        ({"ipv6": "10.0.0.1"}, "not an IPv6"),
        ({"ipv4": "nonsense"}, "not an IPv4"),
        ({"port": 70000}, "port"),
    ],
)
def test_targets_validate(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"site": "paris", "ipv4": "10.0.0.1", "ipv6": None, "port": 80}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Target(**fields)  # type: ignore[arg-type]


def test_lookup_validates_scope() -> None:
    with pytest.raises(ValueError, match="scope_prefix"):
        Lookup(targets=(), scope_prefix=129)


def test_responder_validates_settings(zone: StaticZone) -> None:
    with pytest.raises(ValueError, match="max_answers"):
        Responder(zone, max_answers=0)
