"""The WAN emulator's decisions (delays, routes, anycast, health) and its loop over socket pairs.

The loop tests stand a datagram socket pair in for each TUN device: the emulator reads and
writes one packet per call on its end exactly as on a TUN descriptor, and the test plays the
namespaces' kernels on the other end. No root, no namespaces: those are in the integration tests.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import dns.message
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.geo import estimated_rtt_ms, great_circle_km
from edgefleet.testbed.packets import build_udp, parse_udp
from edgefleet.testbed.wan import (
    PROBE_SPORT,
    AnycastSpec,
    Health,
    LatenessHistogram,
    LinkOverride,
    NetworkState,
    NodeSpec,
    WanConfig,
    WanConfigError,
    WanControl,
    WanControlError,
    WanEmulator,
    choose_member,
    dns_query,
    dns_response_id,
    due_time,
    is_cut,
    link_between,
    observe,
    one_way_ms,
    route,
)

T = TypeVar("T")

CITIES = {
    "paris": (48.86, 2.35),
    "london": (51.51, -0.13),
    "frankfurt": (50.11, 8.68),
    "newyork": (40.71, -74.01),
    "tokyo": (35.68, 139.69),
}
ANYCAST = "10.77.255.53"
PROBER = "10.77.255.254"


def make_config(**changes: Any) -> WanConfig:
    nodes = tuple(
        NodeSpec(name=name, netns=f"ef-{name}", address=f"10.77.1.{i + 1}", lat=lat, lon=lon)
        for i, (name, (lat, lon)) in enumerate(CITIES.items())
    )
    config = WanConfig(
        nodes=nodes,
        anycast=(AnycastSpec(address=ANYCAST, members=("london", "newyork", "tokyo")),),
        prober_address=PROBER,
    )
    return replace(config, **changes)


CONFIG = make_config()
CALM = NetworkState()


def address(name: str) -> str:
    return CONFIG.node(name).address


# -- configuration -------------------------------------------------------------------------------

SPEC_EXAMPLE = {
    "nodes": [
        {"name": "hub", "netns": "ef-hub", "address": "10.77.0.1", "lat": 50.1, "lon": 8.7},
        {"name": "paris", "netns": "ef-s-paris", "address": "10.77.1.1", "lat": 48.86, "lon": 2.35},
        {"name": "london", "netns": "ef-s-london", "address": "10.77.1.2", "lat": 51.5, "lon": 0},
        {
            "name": "clients-eu-west",
            "netns": "ef-c-eu-west",
            "address": "10.77.2.1",
            "lat": 49.5,
            "lon": 1.0,
        },
    ],
    "anycast": [{"address": "10.77.255.53", "members": ["paris", "london"], "health_port": 53}],
    "prober_address": "10.77.255.254",
    "base_ms": 0.5,
    "km_per_ms": 100.0,
    "jitter_ms": 0.0,
    "loss": 0.0,
    "seed": 1,
}


def test_config_reads_the_documented_shape() -> None:
    config = WanConfig.from_json(json.dumps(SPEC_EXAMPLE))
    assert [n.name for n in config.nodes] == ["hub", "paris", "london", "clients-eu-west"]
    assert config.anycast == (
        AnycastSpec(address="10.77.255.53", members=("paris", "london"), health_port=53),
    )
    assert config.device("london") == "efw2"
    assert config.node("paris").netns == "ef-s-paris"


def test_config_defaults_match_the_fleet_estimates() -> None:
    config = WanConfig.from_json(json.dumps({"nodes": SPEC_EXAMPLE["nodes"]}))
    assert (config.base_ms, config.km_per_ms, config.jitter_ms, config.loss) == (0.5, 100, 0, 0)
    assert config.anycast == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["nodes"][1].update(address="10.77.1"), r"nodes\[1\]\.address: '10.77.1'"),
        (lambda c: c["nodes"][2].update(name="paris"), r"nodes\[2\]\.name: 'paris' is also"),
        (lambda c: c["nodes"][2].update(address="10.77.1.1"), r"nodes\[2\]\.address: 10.77.1.1"),
        (lambda c: c["nodes"][0].pop("netns"), r"nodes\[0\]\.netns: missing"),
        (lambda c: c["nodes"][0].update(lat=91), r"nodes\[0\]\.lat: must be <= 90"),
        (
            lambda c: c["anycast"][0]["members"].append("pariss"),
            r"anycast\[0\]\.members\[2\]: unknown node 'pariss'; nodes: hub, paris",
        ),
        (lambda c: c.update(loss=1.5), r"loss: must be <= 1"),
        (lambda c: c.update(km_per_ms=0), r"km_per_ms: must be > 0"),
        (lambda c: c.update(colour="blue"), r"colour: unknown field"),
        (lambda c: c.update(nodes=[]), r"nodes: at least one node"),
        (lambda c: c.update(device_prefix="averylongprefix"), r"device_prefix: .* too long"),
    ],
)
def test_config_errors_say_where(change: Callable[[dict[str, Any]], object], message: str) -> None:
    raw = json.loads(json.dumps(SPEC_EXAMPLE))
    change(raw)
    with pytest.raises(WanConfigError, match=message):
        WanConfig.from_json(json.dumps(raw), source="wan.json")


def test_config_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "wan.json"
    path.write_text("{nodes: []}")
    with pytest.raises(WanConfigError, match=rf"{path}: not JSON"):
        WanConfig.load(path)


# -- delays and links ----------------------------------------------------------------------------

node_names = st.sampled_from(list(CITIES))


@given(a=node_names, b=node_names)
def test_delay_is_symmetric(a: str, b: str) -> None:
    assert one_way_ms(CONFIG, CONFIG.node(a), CONFIG.node(b)) == pytest.approx(
        one_way_ms(CONFIG, CONFIG.node(b), CONFIG.node(a))
    )


@given(a=node_names, b=node_names)
def test_round_trip_at_defaults_is_the_fleet_estimate(a: str, b: str) -> None:
    na, nb = CONFIG.node(a), CONFIG.node(b)
    km = great_circle_km(na.lat, na.lon, nb.lat, nb.lon)
    assert 2 * one_way_ms(CONFIG, na, nb) == pytest.approx(estimated_rtt_ms(km))


def test_delay_grows_with_distance() -> None:
    paris = CONFIG.node("paris")
    delays = [one_way_ms(CONFIG, paris, CONFIG.node(n)) for n in ("london", "newyork", "tokyo")]
    assert delays == sorted(delays)
    assert delays[0] > CONFIG.base_ms
    # Paris - New York is about 5,840 km: 58.9 ms one way at 100 km/ms plus 0.5 ms.
    assert delays[1] == pytest.approx(58.9, abs=0.5)


def test_delay_model_follows_the_config() -> None:
    config = replace(CONFIG, base_ms=2.0, km_per_ms=200.0)
    paris, tokyo = config.node("paris"), config.node("tokyo")
    km = great_circle_km(paris.lat, paris.lon, tokyo.lat, tokyo.lon)
    assert one_way_ms(config, paris, tokyo) == pytest.approx(2.0 + km / 200)
    assert one_way_ms(config, paris, paris) == 0


def test_overrides_replace_or_add_and_apply_one_way_when_asked() -> None:
    computed = link_between(CONFIG, CALM, "paris", "london").delay_ms
    state = CALM.link("paris", "london", LinkOverride(delay_ms=30, jitter_ms=2, loss=0.05))
    there, back = (
        link_between(CONFIG, state, "paris", "london"),
        link_between(CONFIG, state, "london", "paris"),
    )
    assert there == back
    assert (there.delay_ms, there.jitter_ms, there.loss) == (30, 2, 0.05)
    state = CALM.link("paris", "london", LinkOverride(extra_ms=10), oneway=True)
    assert link_between(CONFIG, state, "paris", "london").delay_ms == pytest.approx(computed + 10)
    assert link_between(CONFIG, state, "london", "paris").delay_ms == pytest.approx(computed)
    assert link_between(CONFIG, state.unlink("paris", "london"), "paris", "london").delay_ms == (
        pytest.approx(computed)
    )


def test_unset_override_fields_keep_the_configured_defaults() -> None:
    config = replace(CONFIG, jitter_ms=3.0, loss=0.01)
    state = CALM.link("paris", "tokyo", LinkOverride(delay_ms=5))
    link = link_between(config, state, "paris", "tokyo")
    assert (link.delay_ms, link.jitter_ms, link.loss) == (5, 3.0, 0.01)


# -- cuts and routes -----------------------------------------------------------------------------


def test_pair_cut_is_both_ways_and_only_that_pair() -> None:
    state = CALM.cut("paris", "london")
    assert is_cut(state, "paris", "london") and is_cut(state, "london", "paris")
    assert not is_cut(state, "paris", "tokyo")
    assert route(CONFIG, state, "london", address("paris")).drop == "cut"
    assert route(CONFIG, state, "tokyo", address("paris")).kind == "node"


def test_isolation_cuts_everyone_and_heal_variants() -> None:
    state = CALM.cut("paris").cut("london", "tokyo").cut("paris", "newyork")
    assert all(is_cut(state, "paris", other) for other in CITIES if other != "paris")
    assert route(CONFIG, state, "frankfurt", address("paris")).drop == "cut"
    assert route(CONFIG, state, "paris", ANYCAST).drop == "cut"
    healed_pair = state.heal("paris", "newyork")
    assert is_cut(healed_pair, "paris", "newyork")  # still isolated
    healed_paris = state.heal("paris")
    assert not any(is_cut(healed_paris, "paris", o) for o in CITIES)
    assert is_cut(healed_paris, "london", "tokyo")
    assert state.heal() == CALM


def test_routes_by_destination() -> None:
    to_node = route(CONFIG, CALM, "paris", address("tokyo"))
    assert (to_node.kind, to_node.node) == ("node", "tokyo")
    assert to_node.link == link_between(CONFIG, CALM, "paris", "tokyo")
    assert route(CONFIG, CALM, "paris", PROBER).kind == "prober"
    nowhere = route(CONFIG, CALM, "paris", "10.1.2.3")
    assert (nowhere.kind, nowhere.drop) == ("none", "no_route")


def test_the_prober_is_reached_even_from_an_isolated_node() -> None:
    # Health checks are local to a site: a cut WAN does not stop its DNS from answering them.
    assert route(CONFIG, CALM.cut("london"), "london", PROBER).kind == "prober"


# -- anycast -------------------------------------------------------------------------------------

GROUP = CONFIG.anycast[0]


def test_anycast_goes_to_the_nearest_member() -> None:
    assert choose_member(CONFIG, CALM, "paris", GROUP) == ("london", None)
    assert choose_member(CONFIG, CALM, "frankfurt", GROUP) == ("london", None)
    found = route(CONFIG, CALM, "paris", ANYCAST)
    assert (found.kind, found.node) == ("anycast", "london")
    assert found.link == link_between(CONFIG, CALM, "paris", "london")


def test_anycast_skips_withdrawn_and_cut_members() -> None:
    withdrawn = CALM.announce(ANYCAST, "london", announced=False)
    assert choose_member(CONFIG, withdrawn, "paris", GROUP) == ("newyork", None)
    cut = CALM.cut("paris", "london")
    assert choose_member(CONFIG, cut, "paris", GROUP) == ("newyork", None)
    assert choose_member(CONFIG, cut, "frankfurt", GROUP) == ("london", None)
    isolated = CALM.cut("london")
    assert choose_member(CONFIG, isolated, "frankfurt", GROUP) == ("newyork", None)
    assert choose_member(CONFIG, withdrawn.announce(ANYCAST, "london", True), "paris", GROUP) == (
        "london",
        None,
    )


def test_anycast_with_no_member_left_says_why() -> None:
    all_cut = CALM.cut("paris", "london").cut("paris", "newyork").cut("paris", "tokyo")
    assert choose_member(CONFIG, all_cut, "paris", GROUP) == (None, "cut")
    none_announced = CALM
    for member in GROUP.members:
        none_announced = none_announced.announce(ANYCAST, member, announced=False)
    assert choose_member(CONFIG, none_announced, "paris", GROUP) == (None, "no_route")
    assert route(CONFIG, none_announced, "paris", ANYCAST).drop == "no_route"


def test_anycast_order_follows_overrides() -> None:
    state = CALM.link("paris", "tokyo", LinkOverride(delay_ms=0.1), oneway=True)
    assert choose_member(CONFIG, state, "paris", GROUP) == ("tokyo", None)
    assert choose_member(CONFIG, state, "frankfurt", GROUP) == ("london", None)


def test_anycast_ties_go_to_the_first_listed_member() -> None:
    twins = (
        NodeSpec(name="client", netns="c", address="10.0.0.1", lat=0, lon=0),
        NodeSpec(name="east", netns="e", address="10.0.0.2", lat=0, lon=10),
        NodeSpec(name="west", netns="w", address="10.0.0.3", lat=0, lon=-10),
    )
    for members in (("east", "west"), ("west", "east")):
        group = AnycastSpec(address="10.0.0.53", members=members)
        config = WanConfig(nodes=twins, anycast=(group,), prober_address="10.0.0.254")
        assert choose_member(config, CALM, "client", group) == (members[0], None)


def test_a_member_never_gets_its_own_anycast_packets() -> None:
    assert choose_member(CONFIG, CALM, "london", GROUP) == ("newyork", None)


# -- jitter keeps pairs in order -----------------------------------------------------------------


@given(
    arrivals=st.lists(st.tuples(st.floats(0, 0.01), st.floats(-1, 1)), min_size=1, max_size=200),
    delay_s=st.floats(0, 0.2),
    jitter_s=st.floats(0, 0.05),
)
def test_jitter_never_reorders_a_pair(
    arrivals: list[tuple[float, float]], delay_s: float, jitter_s: float
) -> None:
    now, previous = 0.0, 0.0
    dues = []
    for gap, draw in arrivals:
        now += gap
        due = due_time(now=now, delay_s=delay_s, jitter_s=draw * jitter_s, previous=previous)
        # Never earlier than the draw allows, never later than the draw or the one before.
        assert due >= now + delay_s - jitter_s - 1e-12
        assert due <= max(now + delay_s + jitter_s, previous) + 1e-12
        dues.append(due)
        previous = due
    assert dues == sorted(dues)


def test_due_time_without_jitter_is_the_delay() -> None:
    assert due_time(now=10.0, delay_s=0.05, jitter_s=0.0, previous=0.0) == pytest.approx(10.05)
    assert due_time(now=10.0, delay_s=0.05, jitter_s=-0.01, previous=10.045) == 10.045


# -- health checks -------------------------------------------------------------------------------


def run_checks(answers: str, start: Health | None = None) -> list[bool]:
    """Announced after each check of ``answers`` ('y' answered, 'n' missed)."""
    health = start or Health()
    seen = []
    for answer in answers:
        health = observe(health, answer == "y")
        seen.append(health.announced)
    return seen


def test_three_misses_in_a_row_withdraw() -> None:
    assert run_checks("nnn") == [True, True, False]
    assert run_checks("nnynnyn") == [True] * 7  # an answer starts the count again


def test_two_answers_in_a_row_announce_again() -> None:
    withdrawn = Health(announced=False)
    assert run_checks("yy", withdrawn) == [False, True]
    assert run_checks("ynyny", withdrawn) == [False] * 5
    assert run_checks("nnnyy") == [True, True, False, False, True]


def test_members_start_announced() -> None:
    assert Health().announced


def test_dns_query_is_well_formed_and_answers_are_recognised() -> None:
    query = dns_query(0x1234)
    message = dns.message.from_wire(query)
    assert message.id == 0x1234
    assert str(message.question[0]) == "edge.internal. IN SOA"
    assert dns_response_id(query) is None  # a query is no answer
    response = dns.message.make_response(message)
    response.set_rcode(dns.rcode.REFUSED)
    assert dns_response_id(response.to_wire()) == 0x1234
    assert dns_response_id(b"\x12") is None


# -- lateness histogram --------------------------------------------------------------------------


def test_lateness_percentiles() -> None:
    histogram = LatenessHistogram()
    for us in range(1, 101):
        histogram.record(us / 1e6)
    summary = histogram.summary()
    assert summary["count"] == 100
    assert summary["p50"] in (49, 50)  # float rounding of us / 1e6 may floor one below
    assert summary["p99"] in (98, 99)
    assert summary["max"] == 100
    histogram.record(0.0123)  # 12.3 ms: a coarse bucket
    histogram.record(0.5)  # beyond the last bucket
    assert histogram.percentile(100) == 500_000
    assert histogram.max_us == 500_000
    assert LatenessHistogram().summary() == {"p50": 0, "p99": 0, "max": 0, "count": 0}


def test_lateness_coarse_buckets_report_their_upper_edge() -> None:
    histogram = LatenessHistogram()
    histogram.record(0.00505)  # 5,050 us: the 5,000-5,100 bucket
    histogram.record(0.00509)
    assert histogram.percentile(50) == 5_090  # capped at the largest seen
    histogram.record(0.007)
    assert histogram.percentile(50) == 5_100


# -- control protocol without sockets ------------------------------------------------------------


def test_control_unknown_node_lists_the_nodes() -> None:
    emulator = WanEmulator(CONFIG)
    reply = emulator.handle({"op": "cut", "a": "pariss"})
    assert reply == {
        "ok": False,
        "error": "unknown node 'pariss'; nodes: paris, london, frankfurt, newyork, tokyo",
    }


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "explode"}, "unknown op 'explode'; ops: stats, cut"),
        ({"op": "cut"}, "'a' is required"),
        ({"op": "link", "a": "paris", "b": "london", "loss": 2}, "'loss' must be <= 1"),
        ({"op": "link", "a": "paris", "b": "london", "delay_ms": -1}, "'delay_ms' must be"),
        ({"op": "route", "src": "paris"}, "'dst' must be"),
    ],
)
def test_control_refuses_bad_requests(request_: dict[str, Any], error: str) -> None:
    reply = WanEmulator(CONFIG).handle(request_)
    assert reply["ok"] is False
    assert error in reply["error"]


def test_control_changes_the_routes() -> None:
    emulator = WanEmulator(CONFIG)
    assert emulator.handle({"op": "route", "src": "paris", "dst": ANYCAST})["node"] == "london"
    assert emulator.handle({"op": "cut", "a": "paris", "b": "london"}) == {"ok": True}
    reply = emulator.handle({"op": "route", "src": "paris", "dst": ANYCAST})
    assert reply["node"] == "newyork"
    assert reply["delay_ms"] == pytest.approx(
        link_between(CONFIG, CALM, "paris", "newyork").delay_ms
    )
    assert emulator.handle({"op": "route", "src": "paris", "dst": "london"})["drop"] == "cut"
    emulator.handle({"op": "heal"})
    reply = emulator.handle(
        {"op": "link", "a": "paris", "b": "tokyo", "delay_ms": 1, "extra_ms": 2, "oneway": True}
    )
    assert reply["link"]["delay_ms"] == 3
    assert emulator.handle({"op": "route", "src": "paris", "dst": ANYCAST})["node"] == "tokyo"
    assert emulator.handle({"op": "route", "src": "tokyo", "dst": "paris"})["delay_ms"] > 90
    emulator.handle({"op": "unlink", "a": "paris", "b": "tokyo"})
    assert emulator.handle({"op": "route", "src": "paris", "dst": ANYCAST})["node"] == "london"
    stats = emulator.handle({"op": "stats"})
    assert stats["cuts"] == [] and stats["overrides"] == []


def test_control_heal_of_one_node_and_stats_show_the_state() -> None:
    emulator = WanEmulator(CONFIG)
    emulator.handle({"op": "cut", "a": "tokyo"})
    emulator.handle({"op": "cut", "a": "paris", "b": "london"})
    emulator.handle({"op": "link", "a": "paris", "b": "london", "loss": 0.5})
    stats = emulator.handle({"op": "stats"})
    assert stats["isolated"] == ["tokyo"]
    assert stats["cuts"] == [["london", "paris"]]
    assert {"a": "paris", "b": "london", "extra_ms": 0.0, "loss": 0.5} in stats["overrides"]
    emulator.handle({"op": "heal", "a": "tokyo"})
    assert emulator.handle({"op": "stats"})["isolated"] == []
    assert emulator.handle({"op": "anycast"})["anycast"][0]["members"][0] == {
        "name": "london",
        "announced": True,
        "misses": 0,
        "answers": 0,
    }


# -- the loop, over socket pairs -----------------------------------------------------------------


@dataclass
class Bed:
    """A running emulator whose devices are socket pairs; ``ends[name]`` is the node's side."""

    emulator: WanEmulator
    control: WanControl
    ends: dict[str, socket.socket]

    def send(self, src: str, dst: str, payload: bytes, *, sport: int = 1000) -> None:
        packet = build_udp(
            src=address(src),
            dst=dst if dst[0].isdigit() else address(dst),
            sport=sport,
            dport=2000,
            payload=payload,
        )
        self.ends[src].send(packet)

    def receive(self, name: str, *, timeout: float = 5.0) -> bytes | None:
        self.ends[name].settimeout(timeout)
        try:
            return self.ends[name].recv(65536)
        except TimeoutError:
            return None


def wait_for(check: Callable[[], T | None], *, timeout: float = 10.0, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextmanager
def running(config: WanConfig, tmp_path: Path) -> Iterator[Bed]:
    emulator = WanEmulator(config)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in config.nodes]
    for inner, _ in pairs:
        inner.setblocking(False)
    emulator.use_devices([inner.detach() for inner, _ in pairs])
    ready = threading.Event()
    path = tmp_path / "wan.sock"
    thread = threading.Thread(
        target=emulator.serve, args=(path,), kwargs={"ready": [ready.set]}, daemon=True
    )
    thread.start()
    try:
        assert ready.wait(10), "the emulator did not start"
        yield Bed(
            emulator=emulator,
            control=WanControl(path),
            ends={node.name: outer for node, (_, outer) in zip(config.nodes, pairs, strict=True)},
        )
    finally:
        emulator.request_stop()
        thread.join(10)
        emulator.close()
        for _, outer in pairs:
            outer.close()
    assert not thread.is_alive()
    assert not path.exists(), "the control socket is removed on exit"


def no_anycast(**changes: Any) -> WanConfig:
    return make_config(anycast=(), **changes)


def test_loop_delivers_after_the_delay(tmp_path: Path) -> None:
    with running(no_anycast(), tmp_path) as bed:
        sent = time.monotonic()
        bed.send("paris", "newyork", b"hello")
        packet = bed.receive("newyork")
        arrived = time.monotonic()
        assert packet is not None
        assert parse_udp(packet).payload == b"hello"
        # A lower bound only: a busy machine can make it later, never earlier.
        assert (
            arrived - sent
            >= one_way_ms(CONFIG, CONFIG.node("paris"), CONFIG.node("newyork")) / 1000
        )
        stats = bed.control.stats()
        assert (stats["packets_in"], stats["packets_out"]) == (1, 1)
        assert stats["bytes_in"] == stats["bytes_out"] == len(packet)
        assert stats["lateness_us"]["count"] == 1


def test_loop_keeps_pairs_in_order_under_jitter(tmp_path: Path) -> None:
    config = no_anycast(jitter_ms=20.0, base_ms=0.0, km_per_ms=1e9)
    with running(config, tmp_path) as bed:
        for i in range(300):
            bed.send("paris", "london", i.to_bytes(2, "big"))
        received = [bed.receive("london") for _ in range(300)]
        order = [int.from_bytes(parse_udp(p).payload, "big") for p in received if p]
        assert order == list(range(300))


def test_loop_drops_by_reason(tmp_path: Path) -> None:
    with running(no_anycast(), tmp_path) as bed:
        bed.control.link("paris", "london", loss=1.0)
        bed.control.cut("paris", "tokyo")
        bed.send("paris", "london", b"lost")
        bed.send("paris", "tokyo", b"cut")
        bed.send("paris", "10.9.9.9", b"nowhere")
        bed.ends["paris"].send(bytes.fromhex("60000000") + b"\0" * 36)  # IPv6
        bed.send("paris", "frankfurt", b"through")
        assert parse_udp(bed.receive("frankfurt") or b"").payload == b"through"
        drops = bed.control.stats()["drops"]
        assert drops == {
            "loss": 1,
            "cut": 1,
            "no_route": 1,
            "queue_full": 0,
            "not_ipv4": 1,
            "tun_full": 0,
            "write_error": 0,
        }
        assert bed.receive("london", timeout=0.2) is None
        assert bed.receive("tokyo", timeout=0.2) is None
        bed.control.heal()
        bed.control.unlink("paris", "london")
        bed.send("paris", "tokyo", b"healed")
        assert parse_udp(bed.receive("tokyo") or b"").payload == b"healed"


def test_loop_bounds_its_queue(tmp_path: Path) -> None:
    with running(no_anycast(max_queue=5), tmp_path) as bed:
        bed.control.link("paris", "london", delay_ms=500)
        for i in range(8):
            bed.send("paris", "london", bytes([i]))
        stats = wait_for(
            lambda: (s := bed.control.stats())["packets_in"] == 8 and s, what="8 packets read"
        )
        assert stats["drops"]["queue_full"] == 3
        assert stats["queued"] == 5
        assert [parse_udp(bed.receive("london") or b"").payload for _ in range(5)] == [
            bytes([i]) for i in range(5)
        ]


def test_loop_partial_loss_is_independent_per_packet(tmp_path: Path) -> None:
    with running(no_anycast(), tmp_path) as bed:
        bed.control.link("paris", "london", delay_ms=0, loss=0.5)
        for i in range(400):
            bed.send("paris", "london", i.to_bytes(2, "big"))
        stats = wait_for(
            lambda: (s := bed.control.stats())["packets_in"] == 400 and s, what="all read"
        )
        lost = stats["drops"]["loss"]
        assert 120 < lost < 280  # binomial(400, 0.5): outside is a 1-in-10^16 draw


def answer_checks(bed: Bed, member: str, *, answer: bool, until: Callable[[], bool]) -> None:
    """Play ``member``'s DNS: read its health checks and answer them (or not) until ``until``."""
    end = bed.ends[member]
    deadline = time.monotonic() + 10
    while not until():
        assert time.monotonic() < deadline, f"{member}: health state never reached"
        packet = bed.receive(member, timeout=0.5)
        if packet is None:
            continue
        check = parse_udp(packet)
        assert (check.src, check.dst, check.sport) == (PROBER, ANYCAST, PROBE_SPORT)
        query = dns.message.from_wire(check.payload)
        if answer:
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)  # any answer counts
            end.send(
                build_udp(
                    src=ANYCAST,
                    dst=PROBER,
                    sport=check.dport,
                    dport=check.sport,
                    payload=response.to_wire(),
                )
            )


def announced(bed: Bed) -> dict[str, bool]:
    members = bed.control.anycast()[0]["members"]
    return {m["name"]: m["announced"] for m in members}


def test_health_checks_withdraw_and_announce_members(tmp_path: Path) -> None:
    config = make_config(
        anycast=(AnycastSpec(address=ANYCAST, members=("london", "newyork")),),
        probe_interval_s=0.05,
    )
    with running(config, tmp_path) as bed:
        assert announced(bed) == {"london": True, "newyork": True}
        # newyork never answers; london does: newyork is withdrawn, london stays.
        stop = threading.Event()
        london = threading.Thread(
            target=answer_checks,
            args=(bed, "london"),
            kwargs={"answer": True, "until": stop.is_set},
        )
        london.start()
        try:
            wait_for(lambda: not announced(bed)["newyork"], what="newyork withdrawn")
            assert announced(bed)["london"]
            bed.control.link("paris", "newyork", delay_ms=0.1)  # newyork nearest if announced
            assert bed.control.route("paris", ANYCAST)["node"] == "london"
            answer_checks(bed, "newyork", answer=True, until=lambda: announced(bed)["newyork"])
            assert bed.control.route("paris", ANYCAST)["node"] == "newyork"
            # The anycast packet reaches the member now announced, and its answers are consumed.
            bed.send("paris", ANYCAST, b"query")
            packet = wait_for(lambda: bed.receive("newyork"), what="the query at newyork")
            while parse_udp(packet).dst != ANYCAST or parse_udp(packet).sport != 1000:
                packet = wait_for(lambda: bed.receive("newyork"), what="the query at newyork")
            assert parse_udp(packet).payload == b"query"
        finally:
            stop.set()
            london.join(10)
        stats = bed.control.stats()
        assert stats["probe_answers"] >= 4
        assert stats["to_prober"] >= stats["probe_answers"]


def test_stop_request_ends_the_loop(tmp_path: Path) -> None:
    emulator = WanEmulator(no_anycast())
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in CONFIG.nodes]
    for inner, _ in pairs:
        inner.setblocking(False)
    emulator.use_devices([inner.fileno() for inner, _ in pairs])
    ready = threading.Event()
    thread = threading.Thread(
        target=emulator.serve, args=(tmp_path / "c.sock",), kwargs={"ready": [ready.set]}
    )
    thread.start()
    assert ready.wait(10)
    WanControl(tmp_path / "c.sock").stop()
    thread.join(10)
    assert not thread.is_alive()
    for inner, outer in pairs:
        inner.close()
        outer.close()
    with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
        WanControl(tmp_path / "c.sock").stats()


def test_control_client_raises_the_error(tmp_path: Path) -> None:
    with running(no_anycast(), tmp_path) as bed:
        with pytest.raises(WanControlError, match="unknown node 'pariss'; nodes: paris"):
            bed.control.cut("pariss")
        # A bad line gets an error reply and the connection keeps serving.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(bed.control.path))
            sock.sendall(b"not json\n" + json.dumps({"op": "anycast"}).encode() + b"\n")
            reader = sock.makefile("rb")
            first, second = json.loads(reader.readline()), json.loads(reader.readline())
        assert first["ok"] is False and "not a JSON request" in first["error"]
        assert second == {"ok": True, "anycast": []}


def test_stats_reset(tmp_path: Path) -> None:
    with running(no_anycast(), tmp_path) as bed:
        bed.send("paris", "london", b"x")
        assert bed.receive("london") is not None
        assert bed.control.stats(reset=True)["packets_out"] == 1
        after = bed.control.stats()
        assert (after["packets_in"], after["packets_out"], after["lateness_us"]["count"]) == (
            0,
            0,
            0,
        )
        assert math.isfinite(after["uptime_s"])
