"""The wide-area network of the test bed, emulated in user space between network namespaces.

Every node of the test bed (the hub, each site, each client region) lives in its own network
namespace. This kernel has no ``netem``, so this process owns one TUN device per namespace (the
namespace's only link and its default route) and forwards every IPv4 packet read from one TUN to
the destination's TUN after the one-way delay of the (source, destination) pair, with optional
jitter, loss, per-link overrides and cuts. Destinations are a node's address, an anycast address
(delivered to the nearest member that announces it, as BGP anycast does) or the emulator's own
prober address (the health checks that decide which anycast members announce).

The decisions are pure functions over frozen values (:func:`route`, :func:`link_between`,
:func:`due_time`, :func:`observe`); :class:`WanEmulator` is the thin shell around them: devices,
``ip`` commands, one epoll loop, the control socket. :class:`WanControl` is its client.

    python -m edgefleet.testbed.wan --config wan.json --control /run/edgefleet/wan.sock
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import heapq
import itertools
import json
import math
import os
import random
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from edgefleet.geo import BASE_RTT_MS, FIBRE_KM_PER_MS, great_circle_km
from edgefleet.testbed.netns import NETNS_DIR
from edgefleet.testbed.packets import (
    PacketError,
    address_bytes,
    build_udp,
    parse_udp,
)

# -- configuration -------------------------------------------------------------------------------

DROP_REASONS = (
    "loss",
    "cut",
    "no_route",
    "queue_full",
    "not_ipv4",
    "tun_full",
    "write_error",
)
"""Why a packet was not delivered: drawn as lost; cut link; no node, anycast member or prober at
its destination; the delay queue was full; not an IPv4 packet; the destination device refused it
(its queue full, or another error)."""

PROBE_SPORT = 40053
"""UDP source port of the anycast health checks (their answers come back to it)."""

PROBE_NAME = "edge.internal"
"""Name asked by the anycast health checks (type SOA): any answer counts, whatever its rcode."""


SETUP_WORKERS = 8
"""Namespaces configured at once by ``WanEmulator.setup``."""

TUN_NAME_MAX = 15
"""Longest Linux interface name (IFNAMSIZ - 1)."""


class WanConfigError(ValueError):
    """The emulator's configuration is wrong: the message names the field and what to do."""


@dataclass(frozen=True)
class NodeSpec:
    """One node of the emulated WAN: a namespace with one address at a place on Earth."""

    name: str
    """Node name, as the control socket and the test bed name it (``paris``, ``hub``)."""
    netns: str
    """Network namespace it lives in (already created by the test bed)."""
    address: str
    """Its IPv4 address on the WAN."""
    lat: float
    """Latitude, degrees."""
    lon: float
    """Longitude, degrees."""


@dataclass(frozen=True)
class AnycastSpec:
    """An address that several nodes carry, delivered to the nearest one that announces it."""

    address: str
    """The anycast IPv4 address (on each member's ``lo``)."""
    members: tuple[str, ...]
    """Names of the nodes that carry it; on equal delays the first listed wins."""
    health_port: int = 53
    """UDP port of the DNS server whose answers keep a member announced."""


@dataclass(frozen=True)
class WanConfig:
    """What the emulator connects and how: nodes, anycast groups, the delay model."""

    nodes: tuple[NodeSpec, ...]
    """Every node, in device order (node ``i`` gets TUN device ``<device_prefix><i>``)."""
    anycast: tuple[AnycastSpec, ...] = ()
    """Anycast addresses and their members."""
    prober_address: str = "10.77.255.254"
    """Source address of the health checks; packets to it are consumed by the emulator."""
    # These two defaults make a round trip (twice the one-way delay) equal to
    # edgefleet.geo.estimated_rtt_ms, the fleet's own estimate from coordinates: what the test
    # bed measures and what DNS and placement assume then agree.
    base_ms: float = BASE_RTT_MS / 2
    """One-way ms added to every pair: access links and switching."""
    km_per_ms: float = FIBRE_KM_PER_MS
    """Great-circle km covered per ms one way."""
    jitter_ms: float = 0.0
    """Default jitter: uniform in [-jitter_ms, +jitter_ms] per packet, never reordering a pair."""
    loss: float = 0.0
    """Default probability that a packet is dropped, independently per packet."""
    seed: int = 1
    """Seed of the loss and jitter draws, so a run can be repeated."""
    probe_interval_s: float = 0.25
    """Seconds between two health checks of an anycast member."""
    max_queue: int = 100_000
    """Most packets held in the delay queue; beyond, packets are dropped (``queue_full``)."""
    device_prefix: str = "efw"
    """Name prefix of the TUN devices inside the namespaces."""

    @classmethod
    def from_json(cls, text: str, *, source: str = "WAN config") -> WanConfig:
        """Read and validate a configuration from its JSON text (``source`` names it in errors)."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WanConfigError(
                f"{source}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        return cls.from_dict(raw, source=source)

    @classmethod
    def load(cls, path: str | Path) -> WanConfig:
        """Read and validate the configuration file at ``path``."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise WanConfigError(f"cannot read the WAN config {path}: {exc.strerror}") from exc
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_dict(cls, raw: object, *, source: str = "WAN config") -> WanConfig:
        """Validate an already parsed configuration (the shape of the JSON file)."""
        reader = _Reader(source)
        obj = reader.mapping(raw, "")
        known = {
            "nodes",
            "anycast",
            "prober_address",
            "base_ms",
            "km_per_ms",
            "jitter_ms",
            "loss",
            "seed",
            "probe_interval_s",
            "max_queue",
            "device_prefix",
        }
        reader.no_extra(obj, known, "")
        nodes_raw = reader.sequence(obj.get("nodes"), "nodes")
        nodes = tuple(reader.node(item, f"nodes[{i}]") for i, item in enumerate(nodes_raw))
        anycast_raw = reader.sequence(obj.get("anycast", []), "anycast")
        anycast = tuple(reader.anycast(item, f"anycast[{i}]") for i, item in enumerate(anycast_raw))
        defaults = cls(nodes=())
        config = cls(
            nodes=nodes,
            anycast=anycast,
            prober_address=reader.address(
                obj.get("prober_address", defaults.prober_address), "prober_address"
            ),
            base_ms=reader.number(obj.get("base_ms", defaults.base_ms), "base_ms", low=0.0),
            km_per_ms=reader.number(
                obj.get("km_per_ms", defaults.km_per_ms), "km_per_ms", low=0.0, open_low=True
            ),
            jitter_ms=reader.number(obj.get("jitter_ms", defaults.jitter_ms), "jitter_ms", low=0),
            loss=reader.number(obj.get("loss", defaults.loss), "loss", low=0.0, high=1.0),
            seed=reader.integer(obj.get("seed", defaults.seed), "seed"),
            probe_interval_s=reader.number(
                obj.get("probe_interval_s", defaults.probe_interval_s),
                "probe_interval_s",
                low=0.0,
                open_low=True,
            ),
            max_queue=reader.integer(obj.get("max_queue", defaults.max_queue), "max_queue", low=1),
            device_prefix=reader.string(
                obj.get("device_prefix", defaults.device_prefix), "device_prefix"
            ),
        )
        config.validate(source=source)
        return config

    def validate(self, *, source: str = "WAN config") -> None:
        """Check what the fields cannot check alone: unique names and addresses, known members,
        device names that fit."""
        if not self.nodes:
            raise WanConfigError(f"{source}: nodes: at least one node is needed")
        seen_names: dict[str, int] = {}
        seen_addresses: dict[str, str] = {self.prober_address: "prober_address"}
        for i, node in enumerate(self.nodes):
            if node.name in seen_names:
                raise WanConfigError(
                    f"{source}: nodes[{i}].name: {node.name!r} is also nodes"
                    f"[{seen_names[node.name]}]; give every node its own name"
                )
            seen_names[node.name] = i
            if node.address in seen_addresses:
                raise WanConfigError(
                    f"{source}: nodes[{i}].address: {node.address} is already "
                    f"{seen_addresses[node.address]}'s"
                )
            seen_addresses[node.address] = f"nodes[{i}]"
        for i, group in enumerate(self.anycast):
            if group.address in seen_addresses:
                raise WanConfigError(
                    f"{source}: anycast[{i}].address: {group.address} is already "
                    f"{seen_addresses[group.address]}'s"
                )
            seen_addresses[group.address] = f"anycast[{i}]"
            for j, member in enumerate(group.members):
                if member not in seen_names:
                    raise WanConfigError(
                        f"{source}: anycast[{i}].members[{j}]: unknown node {member!r}; "
                        f"nodes: {', '.join(n.name for n in self.nodes)}"
                    )
            if len(set(group.members)) != len(group.members):
                raise WanConfigError(f"{source}: anycast[{i}].members: a member is listed twice")
        longest = f"{self.device_prefix}{len(self.nodes) - 1}"
        if not self.device_prefix or len(longest) > TUN_NAME_MAX:
            raise WanConfigError(
                f"{source}: device_prefix: {longest!r} would be too long a device name; "
                f"use a prefix of at most {TUN_NAME_MAX - len(str(len(self.nodes) - 1))} "
                "characters"
            )

    @cached_property
    def by_name(self) -> Mapping[str, NodeSpec]:
        """Nodes by name."""
        return {node.name: node for node in self.nodes}

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Position of each node (its device number) by name."""
        return {node.name: i for i, node in enumerate(self.nodes)}

    @cached_property
    def by_address(self) -> Mapping[str, NodeSpec]:
        """Nodes by address."""
        return {node.address: node for node in self.nodes}

    @cached_property
    def anycast_by_address(self) -> Mapping[str, AnycastSpec]:
        """Anycast groups by address."""
        return {group.address: group for group in self.anycast}

    @cached_property
    def delay_cache(self) -> dict[tuple[str, str], float]:
        """Computed one-way delays by node name pair (sorted), filled by :func:`one_way_ms`."""
        return {}

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``; ``KeyError`` with the list of nodes if there is none."""
        try:
            return self.by_name[name]
        except KeyError:
            raise UnknownNodeError(name, [n.name for n in self.nodes]) from None

    def device(self, name: str) -> str:
        """Name of the TUN device of node ``name`` inside its namespace."""
        return f"{self.device_prefix}{self.index[name]}"


class UnknownNodeError(KeyError):
    """A control request or a lookup named a node the emulator does not have."""

    def __init__(self, name: str, nodes: Sequence[str]) -> None:
        super().__init__(name)
        self.message = f"unknown node {name!r}; nodes: {', '.join(nodes)}"

    def __str__(self) -> str:
        return self.message


class _Reader:
    """Field-by-field checks of the JSON config, each error naming its path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, what: str) -> WanConfigError:
        where = f"{self.source}: {path}: " if path else f"{self.source}: "
        return WanConfigError(where + what)

    def mapping(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {type(value).__name__}")
        return value

    def sequence(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {type(value).__name__}")
        return value

    def no_extra(self, obj: Mapping[str, Any], known: set[str], path: str) -> None:
        extra = sorted(set(obj) - known)
        if extra:
            prefix = f"{path}." if path else ""
            raise self.fail(
                prefix + extra[0], f"unknown field; known fields: {', '.join(sorted(known))}"
            )

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {value!r}")
        return value

    def address(self, value: object, path: str) -> str:
        text = self.string(value, path)
        try:
            address_bytes(text)
        except PacketError:
            raise self.fail(path, f"{text!r} is not an IPv4 address") from None
        return text

    def number(
        self,
        value: object,
        path: str,
        *,
        low: float | None = None,
        high: float | None = None,
        open_low: bool = False,
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise self.fail(path, f"expected a number, got {value!r}")
        number = float(value)
        if low is not None and (number < low or (open_low and number == low)):
            bound = f"> {low:g}" if open_low else f">= {low:g}"
            raise self.fail(path, f"must be {bound}, not {number:g}")
        if high is not None and number > high:
            raise self.fail(path, f"must be <= {high:g}, not {number:g}")
        return number

    def integer(self, value: object, path: str, *, low: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {value!r}")
        if low is not None and value < low:
            raise self.fail(path, f"must be >= {low}, not {value}")
        return value

    def node(self, value: object, path: str) -> NodeSpec:
        obj = self.mapping(value, path)
        self.no_extra(obj, {"name", "netns", "address", "lat", "lon"}, path)
        for key in ("name", "netns", "address", "lat", "lon"):
            if key not in obj:
                raise self.fail(f"{path}.{key}", "missing")
        return NodeSpec(
            name=self.string(obj["name"], f"{path}.name"),
            netns=self.string(obj["netns"], f"{path}.netns"),
            address=self.address(obj["address"], f"{path}.address"),
            lat=self.number(obj["lat"], f"{path}.lat", low=-90.0, high=90.0),
            lon=self.number(obj["lon"], f"{path}.lon", low=-180.0, high=180.0),
        )

    def anycast(self, value: object, path: str) -> AnycastSpec:
        obj = self.mapping(value, path)
        self.no_extra(obj, {"address", "members", "health_port"}, path)
        if "address" not in obj:
            raise self.fail(f"{path}.address", "missing")
        members = self.sequence(obj.get("members"), f"{path}.members")
        port = self.integer(obj.get("health_port", 53), f"{path}.health_port", low=1)
        if port > 0xFFFF:
            raise self.fail(f"{path}.health_port", f"must be a port <= 65535, not {port}")
        return AnycastSpec(
            address=self.address(obj["address"], f"{path}.address"),
            members=tuple(self.string(m, f"{path}.members[{j}]") for j, m in enumerate(members)),
            health_port=port,
        )


# -- the network's state and the decisions over it ----------------------------------------------


@dataclass(frozen=True)
class LinkOverride:
    """What an operator changed on one direction of a link at run time."""

    delay_ms: float | None = None
    """One-way delay replacing the computed one; None keeps the computed delay."""
    extra_ms: float = 0.0
    """Added to the one-way delay (computed or replaced)."""
    jitter_ms: float | None = None
    """Jitter of this direction; None keeps the configured default."""
    loss: float | None = None
    """Loss probability of this direction; None keeps the configured default."""


@dataclass(frozen=True)
class NetworkState:
    """Everything about the network that changes at run time: overrides, cuts, withdrawals.

    Every method returns a new state; the emulator swaps its state whole, so a decision never
    sees half a change.
    """

    overrides: Mapping[tuple[str, str], LinkOverride] = field(default_factory=dict)
    """Overrides by directed (source, destination) pair."""
    cuts: frozenset[frozenset[str]] = frozenset()
    """Cut node pairs (both directions)."""
    isolated: frozenset[str] = frozenset()
    """Nodes cut from every other node, anycast included."""
    withdrawn: frozenset[tuple[str, str]] = frozenset()
    """(anycast address, member) pairs whose route is withdrawn (their health check fails)."""

    def cut(self, a: str, b: str | None = None) -> NetworkState:
        """Cut ``a`` from ``b`` in both directions, or from everyone when ``b`` is None."""
        if b is None:
            return replace(self, isolated=self.isolated | {a})
        return replace(self, cuts=self.cuts | {frozenset((a, b))})

    def heal(self, a: str | None = None, b: str | None = None) -> NetworkState:
        """Undo cuts: between ``a`` and ``b``; every cut involving ``a`` (its isolation and its
        pair cuts) when ``b`` is None; every cut when both are None."""
        if a is None:
            return replace(self, cuts=frozenset(), isolated=frozenset())
        if b is None:
            return replace(
                self,
                cuts=frozenset(pair for pair in self.cuts if a not in pair),
                isolated=self.isolated - {a},
            )
        return replace(self, cuts=self.cuts - {frozenset((a, b))})

    def link(self, a: str, b: str, override: LinkOverride, *, oneway: bool = False) -> NetworkState:
        """Set the override of a -> b (and of b -> a unless ``oneway``), replacing any earlier
        one of those directions."""
        overrides = dict(self.overrides)
        overrides[(a, b)] = override
        if not oneway:
            overrides[(b, a)] = override
        return replace(self, overrides=overrides)

    def unlink(self, a: str, b: str, *, oneway: bool = False) -> NetworkState:
        """Remove the override of a -> b (and of b -> a unless ``oneway``)."""
        overrides = dict(self.overrides)
        overrides.pop((a, b), None)
        if not oneway:
            overrides.pop((b, a), None)
        return replace(self, overrides=overrides)

    def announce(self, address: str, member: str, announced: bool) -> NetworkState:
        """Announce or withdraw ``member``'s route to the anycast ``address``."""
        key = (address, member)
        if announced:
            return replace(self, withdrawn=self.withdrawn - {key})
        return replace(self, withdrawn=self.withdrawn | {key})


@dataclass(frozen=True)
class Link:
    """How one direction of a pair behaves now."""

    delay_ms: float
    """One-way delay, ms."""
    jitter_ms: float
    """Jitter amplitude, ms."""
    loss: float
    """Loss probability."""


@dataclass(frozen=True)
class Route:
    """Where a packet from a node to an address goes, or why it goes nowhere."""

    kind: str
    """``node``, ``anycast`` (delivered to a member), ``prober`` (consumed by the emulator) or
    ``none`` (dropped)."""
    node: str | None
    """Receiving node, for ``node`` and ``anycast``."""
    link: Link | None
    """The link's delay, jitter and loss, when delivered to a node."""
    drop: str | None = None
    """Why it is dropped (``cut``, ``no_route``), when it is."""


def one_way_ms(config: WanConfig, a: NodeSpec, b: NodeSpec) -> float:
    """The computed one-way delay in ms between two nodes of ``config``.

    That is ``base_ms + great-circle km / km_per_ms``. With the defaults (0.5 ms, 100 km/ms)
    twice this is ``edgefleet.geo.estimated_rtt_ms``, the round trip the fleet itself estimates
    from coordinates, so the test bed's measured round trips and the fleet's estimates agree.
    A node to itself is 0.
    """
    if a.name == b.name:
        return 0.0
    # Memoised per config: anycast choices compare every member's delay, and a state change
    # recomputes them all.
    key = (a.name, b.name) if a.name < b.name else (b.name, a.name)
    cache = config.delay_cache
    delay = cache.get(key)
    if delay is None:
        km = great_circle_km(a.lat, a.lon, b.lat, b.lon)
        delay = cache[key] = config.base_ms + km / config.km_per_ms
    return delay


def is_cut(state: NetworkState, a: str, b: str) -> bool:
    """Whether packets between ``a`` and ``b`` are dropped by a cut (pair or isolation)."""
    if a == b:
        return False
    return a in state.isolated or b in state.isolated or frozenset((a, b)) in state.cuts


def link_between(config: WanConfig, state: NetworkState, src: str, dst: str) -> Link:
    """Delay, jitter and loss from ``src`` to ``dst``, overrides applied (cuts are not a link
    property: see :func:`is_cut`)."""
    override = state.overrides.get((src, dst))
    if override is None:
        delay = one_way_ms(config, config.node(src), config.node(dst))
        return Link(delay_ms=delay, jitter_ms=config.jitter_ms, loss=config.loss)
    base = override.delay_ms
    if base is None:
        base = one_way_ms(config, config.node(src), config.node(dst))
    return Link(
        delay_ms=base + override.extra_ms,
        jitter_ms=config.jitter_ms if override.jitter_ms is None else override.jitter_ms,
        loss=config.loss if override.loss is None else override.loss,
    )


def choose_member(
    config: WanConfig, state: NetworkState, src: str, group: AnycastSpec
) -> tuple[str | None, str | None]:
    """The member of ``group`` that gets ``src``'s packets, or None and why (``cut`` or
    ``no_route``).

    The nearest (smallest one-way delay after overrides) among members that announce the
    address and are not cut from ``src``; on equal delays the first listed. The sender itself
    is never chosen: its own copy of the address on ``lo`` answers it before the WAN sees the
    packet, as on a real anycast node.
    """
    best: tuple[float, int, str] | None = None
    announced_but_cut = False
    for order, member in enumerate(group.members):
        if member == src or (group.address, member) in state.withdrawn:
            continue
        if is_cut(state, src, member):
            announced_but_cut = True
            continue
        key = (link_between(config, state, src, member).delay_ms, order, member)
        if best is None or key < best:
            best = key
    if best is not None:
        return best[2], None
    return None, "cut" if announced_but_cut else "no_route"


def route(config: WanConfig, state: NetworkState, src: str, dst_address: str) -> Route:
    """Where a packet from node ``src`` to ``dst_address`` goes, and over which link."""
    config.node(src)  # an unknown source is the caller's bug: say so with the node list
    if dst_address == config.prober_address:
        return Route(kind="prober", node=None, link=None)
    target = config.by_address.get(dst_address)
    if target is not None:
        if is_cut(state, src, target.name):
            return Route(kind="none", node=target.name, link=None, drop="cut")
        return Route(
            kind="node", node=target.name, link=link_between(config, state, src, target.name)
        )
    group = config.anycast_by_address.get(dst_address)
    if group is None:
        return Route(kind="none", node=None, link=None, drop="no_route")
    member, why = choose_member(config, state, src, group)
    if member is None:
        return Route(kind="none", node=None, link=None, drop=why)
    return Route(kind="anycast", node=member, link=link_between(config, state, src, member))


def due_time(*, now: float, delay_s: float, jitter_s: float, previous: float) -> float:
    """When a packet read at ``now`` is to be written: after its delay plus the jitter draw
    ``jitter_s`` (already drawn, may be negative), but never before the previous packet of the
    same pair (``previous``), so jitter never reorders a pair, as netem without a rate."""
    return max(now + delay_s + jitter_s, previous)


@dataclass(frozen=True)
class Health:
    """An anycast member's health check state: announced or withdrawn, and the current run."""

    announced: bool = True
    """Whether the member announces the address. Members start announced, so a test bed that
    is starting works at once; the checks correct it within a second."""
    misses: int = 0
    """Checks unanswered in a row."""
    answers: int = 0
    """Checks answered in a row."""


WITHDRAW_AFTER_MISSES = 3
"""Unanswered checks in a row that withdraw a member (as ExaBGP's healthcheck ``--fall``)."""

ANNOUNCE_AFTER_ANSWERS = 2
"""Answered checks in a row that announce a withdrawn member again (``--rise``)."""


def observe(health: Health, answered: bool) -> Health:
    """The health state after one more check, answered or not."""
    if answered:
        answers = health.answers + 1
        announced = health.announced or answers >= ANNOUNCE_AFTER_ANSWERS
        return Health(announced=announced, misses=0, answers=answers)
    misses = health.misses + 1
    announced = health.announced and misses < WITHDRAW_AFTER_MISSES
    return Health(announced=announced, misses=misses, answers=0)


# -- DNS health checks ---------------------------------------------------------------------------

_DNS_QR = 0x80
_QTYPE_SOA = 6
_QCLASS_IN = 1


def dns_query(ident: int, name: str = PROBE_NAME, qtype: int = _QTYPE_SOA) -> bytes:
    """A well-formed DNS query (RFC 1035 4.1) for ``name`` of type ``qtype``, class IN."""
    labels = b"".join(
        len(label).to_bytes(1, "big") + label.encode("ascii") for label in name.split(".") if label
    )
    header = struct.pack("!HHHHHH", ident & 0xFFFF, 0, 1, 0, 0, 0)
    return header + labels + b"\0" + struct.pack("!HH", qtype, _QCLASS_IN)


def dns_response_id(payload: bytes) -> int | None:
    """The ID of a DNS response (QR bit set), whatever its rcode; None if it is not one."""
    if len(payload) < 12 or not payload[2] & _DNS_QR:
        return None
    return int.from_bytes(payload[:2], "big")


# -- statistics ----------------------------------------------------------------------------------

_FINE_US = 1000
_COARSE_STEP_US = 100
_COARSE_END_US = 100_000


class LatenessHistogram:
    """How late packets are written after their due time: 1 µs buckets below 1 ms, 100 µs
    buckets to 100 ms, one bucket above. That lateness is the jitter the emulator itself adds.
    """

    def __init__(self) -> None:
        self.counts = [0] * (_FINE_US + (_COARSE_END_US - _FINE_US) // _COARSE_STEP_US + 1)
        self.count = 0
        self.max_us = 0

    def record(self, seconds: float) -> None:
        """Count one write ``seconds`` after its due time."""
        us = int(seconds * 1e6)
        if us < 0:
            us = 0
        if us < _FINE_US:
            self.counts[us] += 1
        elif us < _COARSE_END_US:
            self.counts[_FINE_US + (us - _FINE_US) // _COARSE_STEP_US] += 1
        else:
            self.counts[-1] += 1
        self.count += 1
        if us > self.max_us:
            self.max_us = us

    def percentile(self, p: float) -> int:
        """Lateness in µs at or below which ``p`` percent of writes were (nearest rank; a coarse
        bucket counts as its upper edge, never above the largest seen)."""
        if not self.count:
            return 0
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for bucket, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                if bucket < _FINE_US:
                    return bucket
                if bucket == len(self.counts) - 1:
                    return self.max_us
                edge = _FINE_US + (bucket - _FINE_US + 1) * _COARSE_STEP_US
                return min(edge, self.max_us)
        return self.max_us

    def summary(self) -> dict[str, int]:
        """p50, p99, max (µs) and the number of writes."""
        return {
            "p50": self.percentile(50),
            "p99": self.percentile(99),
            "max": self.max_us,
            "count": self.count,
        }


@dataclass
class WanStats:
    """Counters of the forwarding loop."""

    packets_in: int = 0
    """Packets read from the TUN devices."""
    packets_out: int = 0
    """Packets written to the TUN devices (health checks not included)."""
    bytes_in: int = 0
    """Bytes read."""
    bytes_out: int = 0
    """Bytes written."""
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    """Packets dropped, by reason (see ``DROP_REASONS``)."""
    probes_sent: int = 0
    """Health checks sent to anycast members."""
    probe_answers: int = 0
    """Health check answers received in time."""
    to_prober: int = 0
    """Packets to the prober address (answers, late answers, ICMP errors): all consumed."""
    lateness: LatenessHistogram = field(default_factory=LatenessHistogram)
    """Write time minus due time of every delivered packet."""


# -- the emulator --------------------------------------------------------------------------------

_TUNSETIFF = 0x400454CA
_CLONE_NEWNET = 0x40000000
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_READ_SIZE = 4096  # the devices have MTU 1500 and no offloads: no packet is larger
_READ_BATCH = 64
_PROBER = "prober"


class WanSetupError(RuntimeError):
    """A device or namespace could not be set up: the message has the command and its error."""


class _ItimerSpec(ctypes.Structure):
    _fields_ = [
        ("interval_sec", ctypes.c_long),
        ("interval_nsec", ctypes.c_long),
        ("value_sec", ctypes.c_long),
        ("value_nsec", ctypes.c_long),
    ]


class _Timer:
    """A timerfd on CLOCK_MONOTONIC (the clock of ``time.monotonic``) armed at absolute times.

    epoll's own timeout is rounded up to whole milliseconds, which would add up to 1 ms of
    lateness to every due packet; a timerfd wakes the loop within microseconds.
    """

    def __init__(self) -> None:
        libc = _libc()
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_ItimerSpec),
            ctypes.c_void_p,
        ]
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd
        self._spec = _ItimerSpec()

    def arm(self, at: float) -> None:
        """Fire once at monotonic time ``at`` (at once if it is past)."""
        sec = int(at)
        nsec = int((at - sec) * 1e9)
        if sec <= 0 and nsec <= 0:
            nsec = 1  # zero would disarm
        self._spec.value_sec = sec
        self._spec.value_nsec = nsec
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def drain(self) -> None:
        """Clear the fired state."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        """Release the descriptor."""
        os.close(self.fd)


def _run_ip(args: Sequence[str], *, batch: str | None = None, check: bool = True) -> str:
    """Run ``ip`` with ``args`` (and a batch on stdin); its stderr when it fails."""
    command = ["ip", *args]
    if batch is not None:
        command += ["-batch", "-"]
    result = subprocess.run(
        command, input=batch, capture_output=True, text=True, check=False, timeout=60
    )
    if check and result.returncode != 0:
        shown = " ".join(command) + (f" <<< {batch.strip()!r}" if batch else "")
        raise WanSetupError(f"{shown} failed: {result.stderr.strip() or result.returncode}")
    return result.stderr


@cache
def _libc() -> ctypes.CDLL:
    """The C library, for the calls Python 3.11 lacks (setns, timerfd)."""
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _open_tun(name: str) -> int:
    """A non-blocking descriptor of a new TUN device ``name`` (IPv4 packets, no header) in the
    calling thread's network namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _open_tun_in(netns: str, name: str) -> int:
    """Create TUN device ``name`` inside namespace ``netns``: this thread enters it, creates the
    device, and comes back (the descriptor keeps working from anywhere)."""
    try:
        target = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise WanSetupError(
            f"network namespace {netns!r} does not exist ({NETNS_DIR / netns} is missing): "
            f"create it first (ip netns add {netns})"
        ) from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target)
        try:
            return _open_tun(name)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def _create_tun(netns: str, name: str) -> int:
    """TUN device ``name`` in ``netns``, replacing one an earlier emulator left there."""
    try:
        return _open_tun_in(netns, name)
    except OSError:
        # Most likely the name is taken: an emulator restarted while the old one still runs.
        _run_ip(["-n", netns, "link", "del", name], check=False)
    try:
        return _open_tun_in(netns, name)
    except OSError as exc:
        raise WanSetupError(f"cannot create TUN device {name} in {netns}: {exc}") from exc


class WanEmulator:
    """The forwarding process: one TUN device per node, one epoll loop, one control socket.

    ``setup()`` creates the devices and configures the namespaces, ``serve(path)`` forwards and
    answers control requests until a ``stop`` request or :meth:`request_stop`; ``handle`` is the
    control protocol without the socket (one request in, one reply out).
    """

    def __init__(self, config: WanConfig) -> None:
        self.config = config
        self.state = NetworkState()
        self.stats = WanStats()
        self.health: dict[tuple[str, str], Health] = {
            (group.address, member): Health()
            for group in config.anycast
            for member in group.members
        }
        self._rng = random.Random(config.seed)
        self._fds: list[int] = []
        self._address_raw = {address_bytes(n.address): n.address for n in config.nodes}
        self._address_raw.update({address_bytes(g.address): g.address for g in config.anycast})
        self._address_raw[address_bytes(config.prober_address)] = config.prober_address
        # Per source node: destination address bytes -> compiled route, filled on first use and
        # emptied whenever the state changes.
        self._routes: list[dict[bytes, Any]] = [{} for _ in config.nodes]
        self._last_due: dict[int, float] = {}
        self._heap: list[tuple[float, int, int, bytes]] = []
        self._seq = itertools.count()
        self._outstanding: dict[int, tuple[str, str]] = {}
        self._pending_probe: dict[tuple[str, str], int] = {}
        self._probe_ids = itertools.count(1)
        self._running = False
        self._stop_requested = False
        self._wakeup: tuple[int, int] | None = None
        self._started = time.monotonic()

    # -- state changes ----------------------------------------------------------------------

    def set_state(self, state: NetworkState) -> None:
        """Replace the network state; every compiled route is recomputed on its next use."""
        self.state = state
        for table in self._routes:
            table.clear()

    def _compile(self, src_index: int, dst_raw: bytes) -> Any:
        """The route entry of the forwarding loop for one (source, destination address)."""
        address = self._address_raw.get(dst_raw)
        if address is None:
            return "no_route"  # not cached: a scan of random addresses must not grow the table
        src = self.config.nodes[src_index].name
        found = route(self.config, self.state, src, address)
        if found.kind == "prober":
            entry: Any = _PROBER
        elif found.drop is not None or found.node is None or found.link is None:
            entry = found.drop or "no_route"
        else:
            dst_index = self.config.index[found.node]
            link = found.link
            entry = (
                dst_index,
                link.delay_ms / 1000,
                link.jitter_ms / 1000,
                link.loss,
                src_index * len(self.config.nodes) + dst_index,
            )
        self._routes[src_index][dst_raw] = entry
        return entry

    # -- control protocol -------------------------------------------------------------------

    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one control request (see the module's ``WanControl`` for the operations)."""
        try:
            return self._handle(request)
        except (UnknownNodeError, _RequestError) as exc:
            return {"ok": False, "error": str(exc)}

    def _node_arg(self, request: Mapping[str, Any], key: str, *, required: bool) -> str | None:
        value = request.get(key)
        if value is None:
            if required:
                raise _RequestError(f"{request.get('op')}: {key!r} is required")
            return None
        if not isinstance(value, str):
            raise _RequestError(f"{key!r} must be a node name, not {value!r}")
        self.config.node(value)
        return value

    def _number_arg(
        self, request: Mapping[str, Any], key: str, *, high: float | None = None
    ) -> float | None:
        value = request.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise _RequestError(f"{key!r} must be a number >= 0, not {value!r}")
        if high is not None and value > high:
            raise _RequestError(f"{key!r} must be <= {high:g}, not {value!r}")
        return float(value)

    def _handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "stats":
            reply = {"ok": True, **self.stats_snapshot()}
            if request.get("reset"):
                self.stats = WanStats()
            return reply
        if op == "cut":
            a = self._node_arg(request, "a", required=True)
            b = self._node_arg(request, "b", required=False)
            assert a is not None
            self.set_state(self.state.cut(a, b))
            return {"ok": True}
        if op == "heal":
            a = self._node_arg(request, "a", required=False)
            b = self._node_arg(request, "b", required=False)
            if a is None and b is not None:
                a, b = b, None
            self.set_state(self.state.heal(a, b))
            return {"ok": True}
        if op == "link":
            a = self._node_arg(request, "a", required=True)
            b = self._node_arg(request, "b", required=True)
            assert a is not None and b is not None
            override = LinkOverride(
                delay_ms=self._number_arg(request, "delay_ms"),
                extra_ms=self._number_arg(request, "extra_ms") or 0.0,
                jitter_ms=self._number_arg(request, "jitter_ms"),
                loss=self._number_arg(request, "loss", high=1.0),
            )
            self.set_state(self.state.link(a, b, override, oneway=bool(request.get("oneway"))))
            return {"ok": True, "link": self._link_reply(a, b)}
        if op == "unlink":
            a = self._node_arg(request, "a", required=True)
            b = self._node_arg(request, "b", required=True)
            assert a is not None and b is not None
            self.set_state(self.state.unlink(a, b, oneway=bool(request.get("oneway"))))
            return {"ok": True, "link": self._link_reply(a, b)}
        if op == "anycast":
            return {"ok": True, "anycast": self.anycast_snapshot()}
        if op == "route":
            src = self._node_arg(request, "src", required=True)
            assert src is not None
            dst = request.get("dst")
            if not isinstance(dst, str):
                raise _RequestError(f"'dst' must be an address or a node name, not {dst!r}")
            if dst in self.config.by_name:
                dst = self.config.by_name[dst].address
            found = route(self.config, self.state, src, dst)
            link = found.link
            return {
                "ok": True,
                "kind": found.kind,
                "node": found.node,
                "drop": found.drop,
                "delay_ms": None if link is None else link.delay_ms,
                "jitter_ms": None if link is None else link.jitter_ms,
                "loss": None if link is None else link.loss,
            }
        if op == "stop":
            self._running = False
            return {"ok": True}
        raise _RequestError(
            f"unknown op {op!r}; ops: stats, cut, heal, link, unlink, anycast, route, stop"
        )

    def _link_reply(self, a: str, b: str) -> dict[str, float]:
        link = link_between(self.config, self.state, a, b)
        return {"delay_ms": link.delay_ms, "jitter_ms": link.jitter_ms, "loss": link.loss}

    def stats_snapshot(self) -> dict[str, Any]:
        """The counters as JSON-ready values, with the state's cuts and overrides."""
        s = self.stats
        return {
            "uptime_s": round(time.monotonic() - self._started, 3),
            "packets_in": s.packets_in,
            "packets_out": s.packets_out,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "drops": dict(s.drops),
            "queued": len(self._heap),
            "lateness_us": s.lateness.summary(),
            "probes_sent": s.probes_sent,
            "probe_answers": s.probe_answers,
            "to_prober": s.to_prober,
            "cuts": sorted(sorted(pair) for pair in self.state.cuts),
            "isolated": sorted(self.state.isolated),
            "overrides": [
                {"a": a, "b": b, **{k: v for k, v in vars(o).items() if v is not None}}
                for (a, b), o in sorted(self.state.overrides.items())
            ],
        }

    def anycast_snapshot(self) -> list[dict[str, Any]]:
        """Each anycast address with its members, their health and whether they announce."""
        return [
            {
                "address": group.address,
                "health_port": group.health_port,
                "members": [
                    {
                        "name": member,
                        "announced": (group.address, member) not in self.state.withdrawn,
                        "misses": self.health[(group.address, member)].misses,
                        "answers": self.health[(group.address, member)].answers,
                    }
                    for member in group.members
                ],
            }
            for group in self.config.anycast
        ]

    # -- health checks ----------------------------------------------------------------------

    def _probe_round(self) -> None:
        """Count last round's unanswered checks as misses, then check every member again."""
        for key, ident in list(self._pending_probe.items()):
            self._outstanding.pop(ident, None)
            self._record_health(key, answered=False)
        self._pending_probe.clear()
        for group in self.config.anycast:
            for member in group.members:
                ident = next(self._probe_ids) & 0xFFFF
                key = (group.address, member)
                packet = build_udp(
                    src=self.config.prober_address,
                    dst=group.address,
                    sport=PROBE_SPORT,
                    dport=group.health_port,
                    payload=dns_query(ident),
                    ident=ident,
                )
                fd = self._fds[self.config.index[member]]
                with contextlib.suppress(OSError):  # an unsent check is a miss next round
                    os.write(fd, packet)
                self._outstanding[ident] = key
                self._pending_probe[key] = ident
                self.stats.probes_sent += 1

    def _record_health(self, key: tuple[str, str], *, answered: bool) -> None:
        before = self.health[key]
        after = observe(before, answered)
        self.health[key] = after
        if after.announced != before.announced:
            self.set_state(self.state.announce(key[0], key[1], after.announced))

    def _to_prober(self, src_index: int, packet: bytes) -> None:
        """A packet for the prober: an answer to a health check, or something to ignore."""
        self.stats.to_prober += 1
        try:
            datagram = parse_udp(packet)
        except PacketError:
            return  # ICMP port unreachable and the like: the check will count as missed
        if datagram.dport != PROBE_SPORT:
            return
        ident = dns_response_id(datagram.payload)
        key = None if ident is None else self._outstanding.get(ident)
        if key is None or self.config.index[key[1]] != src_index:
            return
        self._outstanding.pop(ident)  # type: ignore[arg-type]
        self._pending_probe.pop(key, None)
        self.stats.probe_answers += 1
        self._record_health(key, answered=True)

    # -- devices ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Create one TUN device per node and make it its namespace's only link and route.

        Each device is created inside its namespace (the creating thread enters it for the
        ``TUNSETIFF`` and comes back: moving a device between namespaces costs the kernel tens
        of milliseconds each), named ``<device_prefix><index>``, then given the node's address,
        MTU 1500 and the default route; members of an anycast group also get its address on
        ``lo`` (idempotent). A device of the same name left in the namespace by an earlier
        emulator is deleted first. Namespaces are set up a few at a time.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = len(self.config.nodes) + 256
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        members: dict[str, list[str]] = {}
        for group in self.config.anycast:
            for member in group.members:
                members.setdefault(member, []).append(group.address)
        fds: list[int | None] = [None] * len(self.config.nodes)

        def prepare(index: int) -> None:
            node = self.config.nodes[index]
            device = self.config.device(node.name)
            fds[index] = _create_tun(node.netns, device)
            lines = [
                "link set lo up",
                f"link set {device} addrgenmode none",  # no IPv6 link-local chatter
                f"address replace {node.address}/32 dev {device}",
                f"link set {device} up mtu 1500",
                f"route replace default dev {device} src {node.address}",
                *(f"address replace {a}/32 dev lo" for a in members.get(node.name, [])),
            ]
            _run_ip(["-n", node.netns], batch="\n".join(lines) + "\n")

        try:
            with ThreadPoolExecutor(max_workers=SETUP_WORKERS) as pool:
                for _ in pool.map(prepare, range(len(self.config.nodes))):
                    pass
        except BaseException:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
            raise
        self._fds = [fd for fd in fds if fd is not None]

    def use_devices(self, fds: Sequence[int]) -> None:
        """Forward between descriptors opened elsewhere, one per node in node order, instead of
        creating TUN devices: anything that reads and writes one packet per call (a datagram
        socket pair in the unit tests). They must be non-blocking; ``close`` closes them."""
        if len(fds) != len(self.config.nodes):
            raise ValueError(
                f"{len(self.config.nodes)} nodes need as many descriptors, not {len(fds)}"
            )
        self._fds = list(fds)

    def close(self) -> None:
        """Close every device (non-persistent TUN devices vanish with their descriptor)."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    # -- the loop ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Make :meth:`serve` return soon (or not start); safe from a signal handler."""
        self._stop_requested = True
        self._running = False
        if self._wakeup is not None:
            with contextlib.suppress(OSError):
                os.write(self._wakeup[1], b"\0")

    def serve(self, control_path: str | Path, *, ready: Iterable[Any] = ()) -> None:
        """Forward packets and answer control requests on the Unix socket ``control_path``
        until stopped. ``ready`` callables are called once the socket listens."""
        if not self._fds:
            raise WanSetupError("serve() before setup(): no device to forward between")
        path = Path(control_path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(16)
        listener.setblocking(False)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = (wake_r, wake_w)
        epoll = select.epoll()
        timer: _Timer | None
        try:
            timer = _Timer()
        except (OSError, AttributeError):
            timer = None
        try:
            for fd in self._fds:
                epoll.register(fd, select.EPOLLIN)
            epoll.register(listener.fileno(), select.EPOLLIN)
            epoll.register(wake_r, select.EPOLLIN)
            if timer is not None:
                epoll.register(timer.fd, select.EPOLLIN)
            self._running = not self._stop_requested
            for callback in ready:
                callback()
            self._loop(epoll, listener, timer, wake_r)
        finally:
            self._wakeup = None
            epoll.close()
            listener.close()
            if timer is not None:
                timer.close()
            os.close(wake_r)
            os.close(wake_w)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _loop(
        self,
        epoll: select.epoll,
        listener: socket.socket,
        timer: _Timer | None,
        wake_r: int,
    ) -> None:
        fd_index = {fd: i for i, fd in enumerate(self._fds)}
        conns: dict[int, tuple[socket.socket, bytearray]] = {}
        heap = self._heap
        monotonic = time.monotonic
        interval = self.config.probe_interval_s
        has_anycast = bool(self.config.anycast)
        next_probe = monotonic() if has_anycast else math.inf
        armed = -1.0
        while self._running:
            wake_at = heap[0][0] if heap else math.inf
            wake_at = min(wake_at, next_probe)
            if timer is not None:
                if wake_at != armed and wake_at != math.inf:
                    timer.arm(wake_at)
                    armed = wake_at
                timeout = 1.0
            else:
                timeout = 1.0 if wake_at == math.inf else max(0.0, wake_at - monotonic())
            for fd, _ in epoll.poll(min(timeout, 1.0)):
                index = fd_index.get(fd)
                if index is not None:
                    if not self._read(index, fd):
                        # The device is gone (its namespace was deleted): stop watching it, or
                        # epoll would report it ready forever. Packets to it count as
                        # write errors.
                        epoll.unregister(fd)
                        del fd_index[fd]
                        node = self.config.nodes[index]
                        print(
                            f"wan: the device of {node.name} in {node.netns} is gone",
                            file=sys.stderr,
                            flush=True,
                        )
                elif timer is not None and fd == timer.fd:
                    timer.drain()
                    armed = -1.0
                elif fd == listener.fileno():
                    self._accept(epoll, listener, conns)
                elif fd in conns:
                    self._serve_conn(epoll, fd, conns)
                elif fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 64)
            self._flush()
            if monotonic() >= next_probe:
                self._probe_round()
                next_probe += interval
                if next_probe < monotonic():  # fell behind (a stopped process): skip ahead
                    next_probe = monotonic() + interval
        for sock, _ in conns.values():
            sock.close()

    def _read(self, index: int, fd: int) -> bool:
        """Read up to a batch of packets from node ``index``'s device and queue or drop each;
        False if the device cannot be read any more."""
        stats = self.stats
        drops = stats.drops
        table = self._routes[index]
        heap = self._heap
        last_due = self._last_due
        fds = self._fds
        rnd = self._rng.random
        max_queue = self.config.max_queue
        seq = self._seq
        now = time.monotonic()
        packets = 0
        nbytes = 0
        for _ in range(_READ_BATCH):
            try:
                packet = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                stats.packets_in += packets
                stats.bytes_in += nbytes
                return False
            packets += 1
            nbytes += len(packet)
            if len(packet) < 20 or packet[0] >> 4 != 4:
                drops["not_ipv4"] += 1
                continue
            dst = packet[16:20]
            entry = table.get(dst)
            if entry is None:
                entry = self._compile(index, dst)
            if entry.__class__ is tuple:
                out, delay, jitter, loss, pair = entry
                if loss and rnd() < loss:
                    drops["loss"] += 1
                    continue
                if len(heap) >= max_queue:
                    drops["queue_full"] += 1
                    continue
                due = now + delay
                if jitter:
                    due += (2 * rnd() - 1) * jitter
                previous = last_due.get(pair, 0.0)
                if due < previous:
                    due = previous
                last_due[pair] = due
                heapq.heappush(heap, (due, next(seq), fds[out], packet))
            elif entry is _PROBER:
                self._to_prober(index, packet)  # may change the state: tables empty in place
            else:
                drops[entry] += 1
        stats.packets_in += packets
        stats.bytes_in += nbytes
        return True

    def _flush(self) -> None:
        """Write every packet that is due."""
        heap = self._heap
        if not heap:
            return
        stats = self.stats
        record = stats.lateness.record
        monotonic = time.monotonic
        write = os.write
        pop = heapq.heappop
        now = monotonic()
        written = 0
        nbytes = 0
        while heap and heap[0][0] <= now:
            due, _, fd, packet = pop(heap)
            try:
                write(fd, packet)
            except BlockingIOError:
                stats.drops["tun_full"] += 1
                continue
            except OSError:
                stats.drops["write_error"] += 1
                continue
            now = monotonic()
            record(now - due)
            written += 1
            nbytes += len(packet)
        stats.packets_out += written
        stats.bytes_out += nbytes

    def _accept(
        self,
        epoll: select.epoll,
        listener: socket.socket,
        conns: dict[int, tuple[socket.socket, bytearray]],
    ) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            conn.settimeout(2.0)  # sends of small replies; reads only happen when readable
            conns[conn.fileno()] = (conn, bytearray())
            epoll.register(conn.fileno(), select.EPOLLIN)

    def _serve_conn(
        self,
        epoll: select.epoll,
        fd: int,
        conns: dict[int, tuple[socket.socket, bytearray]],
    ) -> None:
        conn, buffer = conns[fd]
        try:
            chunk = conn.recv(65536)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            chunk = b""
        if chunk:
            buffer += chunk
        try:
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer[:] = rest
                if line.strip():
                    conn.sendall(json.dumps(self._handle_line(line)).encode() + b"\n")
            if len(buffer) > 1 << 20:
                raise OSError("control request too long")
        except OSError:
            chunk = b""
        if not chunk:
            epoll.unregister(fd)
            conn.close()
            del conns[fd]

    def _handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"not a JSON request: {exc}"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object with an 'op'"}
        return self.handle(request)


class _RequestError(Exception):
    """A control request that cannot be carried out; its text is the reply's error."""


# -- the client ----------------------------------------------------------------------------------


class WanControlError(RuntimeError):
    """The emulator refused a control request; the message is its error."""


class WanControl:
    """Client of a running emulator's control socket: one method per operation.

    Each call opens the socket, sends one JSON line and reads one back, so a client can be made
    before the emulator starts and survives its restarts.
    """

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send ``{"op": op, **fields}`` (None fields left out); the reply, or
        ``WanControlError`` when it says ``ok: false``."""
        message = {"op": op, **{k: v for k, v in fields.items() if v is not None}}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
            sock.sendall(json.dumps(message).encode() + b"\n")
            reply = _read_line(sock)
        answer: dict[str, Any] = json.loads(reply)
        if not answer.get("ok"):
            raise WanControlError(str(answer.get("error", answer)))
        return answer

    def stats(self, *, reset: bool = False) -> dict[str, Any]:
        """Counters: packets and bytes in and out, drops by reason, queue length, lateness
        p50/p99/max in µs; ``reset`` starts new counters after this reading."""
        return self.request("stats", reset=reset or None)

    def cut(self, a: str, b: str | None = None) -> None:
        """Drop every packet between ``a`` and ``b``, or between ``a`` and everyone."""
        self.request("cut", a=a, b=b)

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        """Undo the cut between ``a`` and ``b``, every cut of ``a``, or every cut."""
        self.request("heal", a=a, b=b)

    def link(
        self,
        a: str,
        b: str,
        *,
        delay_ms: float | None = None,
        extra_ms: float | None = None,
        jitter_ms: float | None = None,
        loss: float | None = None,
        oneway: bool = False,
    ) -> dict[str, Any]:
        """Override the link a <-> b (a -> b only with ``oneway``); fields left None keep the
        computed delay and the configured jitter and loss. Replaces an earlier override of the
        same direction. Returns the link a -> b as it now is."""
        reply = self.request(
            "link",
            a=a,
            b=b,
            delay_ms=delay_ms,
            extra_ms=extra_ms,
            jitter_ms=jitter_ms,
            loss=loss,
            oneway=oneway or None,
        )
        link: dict[str, Any] = reply["link"]
        return link

    def unlink(self, a: str, b: str, *, oneway: bool = False) -> dict[str, Any]:
        """Remove the override of a <-> b (a -> b only with ``oneway``); the link as it now is."""
        link: dict[str, Any] = self.request("unlink", a=a, b=b, oneway=oneway or None)["link"]
        return link

    def anycast(self) -> list[dict[str, Any]]:
        """Anycast addresses, their members and which of them announce."""
        groups: list[dict[str, Any]] = self.request("anycast")["anycast"]
        return groups

    def route(self, src: str, dst: str) -> dict[str, Any]:
        """Where a packet from node ``src`` to ``dst`` (address or node name) goes: ``kind``,
        ``node``, ``delay_ms``, ``jitter_ms``, ``loss``, or ``drop`` and why."""
        return self.request("route", src=src, dst=dst)

    def stop(self) -> None:
        """Make the emulator exit (its devices vanish with it)."""
        self.request("stop")


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the WAN emulator closed the control connection")
        chunks.append(chunk)
        if b"\n" in chunk:
            return b"".join(chunks).partition(b"\n")[0]


# -- the command ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator: set up every device, print ``ready``, forward until SIGTERM or stop."""
    parser = argparse.ArgumentParser(
        prog="python -m edgefleet.testbed.wan",
        description="Emulate the wide-area network between the test bed's namespaces.",
    )
    parser.add_argument("--config", required=True, help="JSON file: nodes, anycast, delays")
    parser.add_argument("--control", required=True, help="path of the control Unix socket")
    args = parser.parse_args(argv)
    try:
        config = WanConfig.load(args.config)
    except WanConfigError as exc:
        print(f"wan: {exc}", file=sys.stderr)
        return 2
    emulator = WanEmulator(config)

    def on_signal(signum: int, frame: object) -> None:
        emulator.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        emulator.setup()
    except (WanSetupError, OSError) as exc:
        print(f"wan: setup failed: {exc}", file=sys.stderr)
        return 1
    try:
        emulator.serve(args.control, ready=[lambda: print("ready", flush=True)])
    finally:
        emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
