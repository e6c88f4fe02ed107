"""What the test bed builds: sites, client regions and the hub, where they are, their addresses.

A topology is plain data. ``default_topology(n)`` takes the first ``n`` sites of a built-in
list of cities (the demo's six first, then more, regions taking turns); ``load_topology`` reads a
YAML file of the same shape::

    hub: {lat: 50.11, lon: 8.68}           # where the hub runs (Frankfurt by default)
    wan: {baseMs: 0.5, kmPerMs: 100, jitterMs: 0, loss: 0}
    sites:
      - {name: paris, region: eu-west, zone: eu-west-fr, lat: 48.86, lon: 2.35, maxReplicas: 20}
    clients:                               # optional: one per region, at its sites' centre
      - {name: eu-west, lat: 49.5, lon: 1.0}

Addresses (all inside the test bed's namespaces; nothing outside them uses them): the hub is
``10.77.0.1``, client region ``k`` is ``10.77.1.k``, site ``i`` is ``10.77.(8 + i // 250).(1 + i
% 250)``, and every site also answers DNS on the anycast address ``10.77.255.53``. The operator
reaches the hub over a management link: ``10.78.0.1`` (this side) to ``10.78.0.2`` (the hub).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from edgefleet.model import Site
from edgefleet.model.manifests import load_text

HUB_ADDRESS = "10.77.0.1"
"""The hub's address on the emulated wide-area network."""
ANYCAST_DNS = "10.77.255.53"
"""The address every site's edge DNS answers on; the WAN delivers it to the nearest site."""
PROBER_ADDRESS = "10.77.255.254"
"""Source of the WAN emulator's own health checks of the anycast members."""
MANAGEMENT_LOCAL = "10.78.0.1"
"""This machine's end of the management link to the hub's namespace."""
MANAGEMENT_HUB = "10.78.0.2"
"""The hub's end of the management link: the operator's CLI and the tests reach the hub here."""
HUB_PORT = 7700
"""Port of the hub's API."""
INGRESS_PORT = 8080
"""Port of every site's ingress and agent API."""
DNS_PORT = 53
"""Port of every site's edge DNS and of the central DNS."""
MAX_SITES = 250 * 8
"""Most sites the address plan has room for."""


@dataclass(frozen=True)
class SitePlan:
    """One site of the test bed."""

    name: str
    """Site name (a DNS label)."""
    region: str
    """Region, e.g. eu-west."""
    zone: str
    """Zone within the region."""
    lat: float
    """Latitude, degrees."""
    lon: float
    """Longitude, degrees."""
    address: str = ""
    """Its address on the emulated WAN (filled in by ``Topology``)."""
    max_replicas: int = 20
    """Most replicas the site runs."""

    @property
    def netns(self) -> str:
        """Name of the site's network namespace, without the test bed's prefix."""
        return f"s-{self.name}"


@dataclass(frozen=True)
class ClientRegion:
    """Clients of one region: one namespace sending as the region's users do."""

    name: str
    """Region name (clients of ``eu-west``)."""
    lat: float
    """Latitude of the clients, degrees."""
    lon: float
    """Longitude of the clients, degrees."""
    address: str = ""
    """Their address on the emulated WAN (filled in by ``Topology``)."""

    @property
    def node(self) -> str:
        """Node name of the clients on the WAN."""
        return f"clients-{self.name}"

    @property
    def netns(self) -> str:
        """Name of the clients' network namespace, without the test bed's prefix."""
        return f"c-{self.name}"


@dataclass(frozen=True)
class WanParams:
    """How the emulated wide-area network behaves between every pair."""

    base_ms: float = 0.5
    """One-way milliseconds added to every pair (access links, switching)."""
    km_per_ms: float = 100.0
    """Great-circle km per one-way millisecond (the fleet's own estimate uses the same)."""
    jitter_ms: float = 0.0
    """Uniform jitter, ± milliseconds, per packet."""
    loss: float = 0.0
    """Share of packets lost, 0..1."""


@dataclass(frozen=True)
class Topology:
    """Sites, client regions, the hub and the network between them."""

    sites: tuple[SitePlan, ...]
    """The sites, with their addresses."""
    clients: tuple[ClientRegion, ...] = ()
    """Client regions; empty: one per region of the sites, at the centre of its sites."""
    hub_lat: float = 50.11
    """Latitude of the hub."""
    hub_lon: float = 8.68
    """Longitude of the hub."""
    wan: WanParams = field(default_factory=WanParams)
    """The network."""

    def __post_init__(self) -> None:
        if not self.sites:
            raise ValueError("a topology needs at least one site")
        if len(self.sites) > MAX_SITES:
            raise ValueError(
                f"at most {MAX_SITES} sites fit the address plan, not {len(self.sites)}"
            )
        names = [s.name for s in self.sites]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"site names must be unique; repeated: {', '.join(duplicates)}")
        sites = tuple(
            s if s.address else replace(s, address=site_address(i))
            for i, s in enumerate(self.sites)
        )
        object.__setattr__(self, "sites", sites)
        clients = self.clients or default_clients(sites)
        if len(clients) > 250:
            raise ValueError(f"at most 250 client regions, not {len(clients)}")
        clients = tuple(
            c if c.address else replace(c, address=f"10.77.1.{k + 1}")
            for k, c in enumerate(clients)
        )
        object.__setattr__(self, "clients", clients)

    def site(self, name: str) -> SitePlan:
        """The site called ``name``; KeyError with the known names otherwise."""
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(f"no site {name!r} in the test bed; sites: {', '.join(self.site_names)}")

    def client(self, region: str) -> ClientRegion:
        """The client region called ``region``."""
        for c in self.clients:
            if c.name == region:
                return c
        known = ", ".join(c.name for c in self.clients)
        raise KeyError(f"no client region {region!r} in the test bed; regions: {known}")

    @property
    def site_names(self) -> list[str]:
        """Names of the sites, in order."""
        return [s.name for s in self.sites]

    def site_manifests(self) -> list[Site]:
        """The Site objects to apply at the hub."""
        documents = [
            {
                "apiVersion": "edgefleet.io/v1alpha1",
                "kind": "Site",
                "metadata": {"name": s.name, "labels": {"testbed": "yes"}},
                "spec": {
                    "region": s.region,
                    "zone": s.zone,
                    "location": {"lat": s.lat, "lon": s.lon},
                    "capacity": {"cpu": 8, "memory": "16Gi", "maxReplicas": s.max_replicas},
                    "addresses": {
                        "ip": s.address,
                        "ingressPort": INGRESS_PORT,
                        "dnsPort": DNS_PORT,
                    },
                },
            }
            for s in self.sites
        ]
        text = yaml.safe_dump_all(documents, sort_keys=False)
        return [m.obj for m in load_text(text, "testbed sites") if isinstance(m.obj, Site)]

    def wan_nodes(self, prefix: str) -> list[dict[str, Any]]:
        """Nodes of the WAN emulator's configuration: hub, sites, client regions."""
        nodes: list[dict[str, Any]] = [
            {
                "name": "hub",
                "netns": f"{prefix}hub",
                "address": HUB_ADDRESS,
                "lat": self.hub_lat,
                "lon": self.hub_lon,
            }
        ]
        nodes += [
            {
                "name": s.name,
                "netns": prefix + s.netns,
                "address": s.address,
                "lat": s.lat,
                "lon": s.lon,
            }
            for s in self.sites
        ]
        nodes += [
            {
                "name": c.node,
                "netns": prefix + c.netns,
                "address": c.address,
                "lat": c.lat,
                "lon": c.lon,
            }
            for c in self.clients
        ]
        return nodes

    def wan_config(self, prefix: str) -> dict[str, Any]:
        """The WAN emulator's configuration (JSON-ready)."""
        return {
            "nodes": self.wan_nodes(prefix),
            "anycast": [
                {
                    "address": ANYCAST_DNS,
                    "members": self.site_names,
                    "health_port": DNS_PORT,
                }
            ],
            "prober_address": PROBER_ADDRESS,
            "base_ms": self.wan.base_ms,
            "km_per_ms": self.wan.km_per_ms,
            "jitter_ms": self.wan.jitter_ms,
            "loss": self.wan.loss,
            "seed": 1,
        }

    def to_json(self) -> dict[str, Any]:
        """The topology in the file format (camelCase keys), addresses included."""
        return {
            "hub": {"lat": self.hub_lat, "lon": self.hub_lon},
            "wan": {
                "baseMs": self.wan.base_ms,
                "kmPerMs": self.wan.km_per_ms,
                "jitterMs": self.wan.jitter_ms,
                "loss": self.wan.loss,
            },
            "sites": [
                {
                    "name": s.name,
                    "region": s.region,
                    "zone": s.zone,
                    "lat": s.lat,
                    "lon": s.lon,
                    "address": s.address,
                    "maxReplicas": s.max_replicas,
                }
                for s in self.sites
            ],
            "clients": [
                {"name": c.name, "lat": c.lat, "lon": c.lon, "address": c.address}
                for c in self.clients
            ],
        }


def site_address(index: int) -> str:
    """The WAN address of the site at ``index`` (0-based) in the topology."""
    if not 0 <= index < MAX_SITES:
        raise ValueError(f"site index must be 0 to {MAX_SITES - 1}, not {index}")
    return f"10.77.{8 + index // 250}.{1 + index % 250}"


def default_clients(sites: Sequence[SitePlan]) -> tuple[ClientRegion, ...]:
    """One client region per region of ``sites``, at the centre of its sites, in first-seen order.

    The centre is the normalized mean of the sites' unit vectors, so regions that straddle the
    antimeridian get a centre between their sites, not on the other side of the world.
    """
    regions: dict[str, list[SitePlan]] = {}
    for s in sites:
        regions.setdefault(s.region, []).append(s)
    out = []
    for name, members in regions.items():
        x = sum(math.cos(math.radians(s.lat)) * math.cos(math.radians(s.lon)) for s in members)
        y = sum(math.cos(math.radians(s.lat)) * math.sin(math.radians(s.lon)) for s in members)
        z = sum(math.sin(math.radians(s.lat)) for s in members)
        lat = math.degrees(math.atan2(z, math.hypot(x, y)))
        lon = math.degrees(math.atan2(y, x))
        out.append(ClientRegion(name=name, lat=round(lat, 4), lon=round(lon, 4)))
    return tuple(out)


CITIES: tuple[tuple[str, str, str, float, float], ...] = (
    # The demo's six first, so that a default test bed is the demo fleet over a real WAN.
    ("paris", "eu-west", "eu-west-fr", 48.8566, 2.3522),
    ("london", "eu-west", "eu-west-uk", 51.5074, -0.1278),
    ("new-york", "us-east", "us-east-ny", 40.7128, -74.0060),
    ("boston", "us-east", "us-east-ma", 42.3601, -71.0589),
    ("tokyo", "ap", "ap-jp", 35.6762, 139.6503),
    ("singapore", "ap", "ap-sg", 1.3521, 103.8198),
    ("frankfurt", "eu-west", "eu-west-de", 50.1109, 8.6821),
    ("washington", "us-east", "us-east-va", 38.9072, -77.0369),
    ("osaka", "ap", "ap-jp", 34.6937, 135.5023),
    ("madrid", "eu-west", "eu-west-es", 40.4168, -3.7038),
    ("chicago", "us-east", "us-east-il", 41.8781, -87.6298),
    ("seoul", "ap", "ap-kr", 37.5665, 126.9780),
    ("amsterdam", "eu-west", "eu-west-nl", 52.3676, 4.9041),
    ("atlanta", "us-east", "us-east-ga", 33.7490, -84.3880),
    ("hong-kong", "ap", "ap-hk", 22.3193, 114.1694),
    ("milan", "eu-west", "eu-west-it", 45.4642, 9.1900),
    ("toronto", "us-east", "us-east-on", 43.6532, -79.3832),
    ("sydney", "ap", "ap-au", -33.8688, 151.2093),
)
"""Built-in sites: name, region, zone, latitude, longitude."""


def default_topology(sites: int = 6) -> Topology:
    """The first ``sites`` built-in cities; beyond them, numbered sites near their cities."""
    if sites < 1:
        raise ValueError(f"--sites must be at least 1, not {sites}")
    plans = []
    for i in range(sites):
        name, region, zone, lat, lon = CITIES[i % len(CITIES)]
        if i >= len(CITIES):
            # A further site a few km from the city it repeats, so distances stay distinct.
            round_ = i // len(CITIES)
            name = f"{name}-{round_ + 1}"
            lat += 0.05 * round_
            lon += 0.05 * round_
        plans.append(SitePlan(name=name, region=region, zone=zone, lat=lat, lon=lon))
    return Topology(sites=tuple(plans))


def _number(data: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value


def parse_topology(data: Any, source: str = "topology") -> Topology:
    """A topology from parsed YAML/JSON; ValueError naming the field that is wrong."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping with 'sites', got {type(data).__name__}")
    unknown = set(data) - {"hub", "wan", "sites", "clients"}
    if unknown:
        raise ValueError(
            f"{source}: unknown keys {sorted(unknown)}; expected hub, wan, sites, clients"
        )
    raw_sites = data.get("sites")
    if not isinstance(raw_sites, list) or not raw_sites:
        raise ValueError(f"{source}.sites: expected a non-empty list of sites")
    sites = []
    for i, raw in enumerate(raw_sites):
        where = f"{source}.sites[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a mapping")
        name = _text(raw, "name", where)
        sites.append(
            SitePlan(
                name=name,
                region=_text(raw, "region", where),
                zone=str(raw.get("zone") or f"{_text(raw, 'region', where)}-{name}"),
                lat=_lat(raw, where),
                lon=_lon(raw, where),
                address=str(raw.get("address") or ""),
                max_replicas=int(_number(raw, "maxReplicas", where, 20)),
            )
        )
    clients = []
    for i, raw in enumerate(data.get("clients") or []):
        where = f"{source}.clients[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a mapping")
        clients.append(
            ClientRegion(
                name=_text(raw, "name", where),
                lat=_lat(raw, where),
                lon=_lon(raw, where),
                address=str(raw.get("address") or ""),
            )
        )
    hub = data.get("hub") or {}
    wan = data.get("wan") or {}
    params = WanParams(
        base_ms=_number(wan, "baseMs", f"{source}.wan", 0.5),
        km_per_ms=_number(wan, "kmPerMs", f"{source}.wan", 100.0),
        jitter_ms=_number(wan, "jitterMs", f"{source}.wan", 0.0),
        loss=_number(wan, "loss", f"{source}.wan", 0.0),
    )
    if params.km_per_ms <= 0 or params.base_ms < 0 or params.jitter_ms < 0:
        raise ValueError(f"{source}.wan: kmPerMs must be > 0, baseMs and jitterMs >= 0")
    if not 0 <= params.loss <= 1:
        raise ValueError(f"{source}.wan.loss: expected 0 to 1, got {params.loss}")
    return Topology(
        sites=tuple(sites),
        clients=tuple(clients),
        hub_lat=_lat(hub, f"{source}.hub", 50.11),
        hub_lon=_lon(hub, f"{source}.hub", 8.68),
        wan=params,
    )


def _lat(data: Mapping[str, Any], where: str, default: float | None = None) -> float:
    lat = _number(data, "lat", where, default)
    if not -90 <= lat <= 90:
        raise ValueError(f"{where}.lat: expected -90 to 90 degrees, got {lat}")
    return lat


def _lon(data: Mapping[str, Any], where: str, default: float | None = None) -> float:
    lon = _number(data, "lon", where, default)
    if not -180 <= lon <= 180:
        raise ValueError(f"{where}.lon: expected -180 to 180 degrees, got {lon}")
    return lon


def load_topology(path: Path) -> Topology:
    """Read a topology file (YAML or JSON); ValueError saying what and where when it is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    return parse_topology(data, str(path))
