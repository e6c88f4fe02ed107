"""The API objects: Site and App, in the Kubernetes manifest shape.

One pydantic model is shared by the API, the store, the CLI, the agent and the client library.
Field names are camelCase on the wire (``maxReplicas``), snake_case in Python.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from ipaddress import ip_address, ip_network
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

API_VERSION = "edgefleet.io/v1alpha1"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


class _Base(BaseModel):
    """Strict wire model: unknown fields are errors, camelCase aliases, snake_case attributes."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
        validate_assignment=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict with camelCase keys, leaving out unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _check_dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    for key, label_value in value.items():
        if not _LABEL_KEY.match(key):
            raise ValueError(f"label key {key!r} is not valid: use [prefix/]name, name ≤ 63 chars")
        if not _LABEL_VALUE.match(label_value):
            raise ValueError(f"label value {label_value!r} for {key!r} is not valid")
    return value


DnsLabel = Annotated[str, AfterValidator(_check_dns_label)]
"""A name usable as one DNS label (RFC 1123): sites, apps and tenants become DNS names."""

Labels = Annotated[dict[str, str], AfterValidator(_check_labels)]

_CPU = re.compile(r"^(\d+(\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T|k)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_cpu(value: object) -> float:
    """CPU in cores from ``2``, ``0.5`` or a Kubernetes quantity such as ``"500m"``."""
    if isinstance(value, bool):
        raise ValueError("cpu must be a number of cores or a quantity such as '500m'")
    if isinstance(value, int | float):
        cores = float(value)
    elif isinstance(value, str) and (match := _CPU.match(value.strip())):
        cores = float(match.group(1)) / (1000 if match.group(3) else 1)
    else:
        raise ValueError(
            f"cpu {value!r} is not a quantity: write cores (2, 0.5) or millicores ('500m')"
        )
    if cores < 0:
        raise ValueError("cpu must not be negative")
    return cores


def parse_memory(value: object) -> int:
    """Memory in bytes from an integer or a Kubernetes quantity such as ``"512Mi"``."""
    if isinstance(value, bool):
        raise ValueError("memory must be bytes or a quantity such as '512Mi'")
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and (match := _MEMORY.match(value.strip())):
        amount = int(float(match.group(1)) * _MEMORY_UNITS[match.group(3)])
    else:
        raise ValueError(f"memory {value!r} is not a quantity: write bytes or e.g. '512Mi', '2Gi'")
    if amount < 0:
        raise ValueError("memory must not be negative")
    return amount


_DURATION = re.compile(r"^(\d+(\.\d+)?)(ms|s|m|h|d)?$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string such as ``"500ms"``, ``"30s"``, ``"5m"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is seconds or a string such as '30s', '5m', '500ms'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(3)]
    else:
        raise ValueError(
            f"duration {value!r} is not valid: write seconds (30) or '500ms', '30s', '5m', "
            "'1h', '7d'"
        )
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError("a duration must be a finite number of seconds >= 0")
    return seconds


Cpu = Annotated[float, BeforeValidator(parse_cpu)]
"""CPU cores; accepts Kubernetes quantities ('500m')."""
Memory = Annotated[int, BeforeValidator(parse_memory)]
"""Bytes; accepts Kubernetes quantities ('512Mi')."""
Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; accepts '500ms', '30s', '5m', '1h'."""


class ObjectMeta(_Base):
    """Identity and bookkeeping shared by every object, as in Kubernetes."""

    name: DnsLabel = Field(description="Object name, unique per kind (and tenant for apps).")
    tenant: DnsLabel | None = Field(
        default=None, description="Owning tenant; required for apps, absent for sites."
    )
    labels: Labels = Field(default_factory=dict, description="Key/value labels for selection.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Free-form notes.")
    uid: str | None = Field(default=None, description="Set by the hub on create.")
    resource_version: str | None = Field(
        default=None,
        description="Set by the hub on every write; send it back to update only that version.",
    )
    generation: int | None = Field(default=None, description="Incremented on every spec change.")
    creation_timestamp: datetime | None = Field(default=None, description="Set by the hub.")


# ---------------------------------------------------------------------------------------------
# Site


class Location(_Base):
    """Where a site is, in WGS 84 degrees."""

    lat: float = Field(ge=-90, le=90, description="Latitude in degrees, -90..90.")
    lon: float = Field(ge=-180, le=180, description="Longitude in degrees, -180..180.")


class SiteCapacity(_Base):
    """What a site can run for the fleet."""

    cpu: Cpu = Field(default=8.0, description="CPU cores available to replicas.")
    memory: Memory = Field(default=16 * 1024**3, description="Bytes of memory for replicas.")
    max_replicas: int = Field(default=100, ge=0, description="Most replicas, of all apps, at once.")


def _check_ipv4(value: str) -> str:
    if ip_address(value).version != 4:
        raise ValueError(f"{value!r} is not an IPv4 address: put IPv6 addresses in ipv6")
    return value


def _check_ipv6(value: str | None) -> str | None:
    if value is not None and ip_address(value).version != 6:
        raise ValueError(f"{value!r} is not an IPv6 address: put IPv4 addresses in ip")
    return value


def _check_network(value: str) -> str:
    try:
        return str(ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a network in CIDR form, e.g. 10.1.0.0/16: {exc}"
        ) from None


class SiteAddresses(_Base):
    """Where the site's services listen."""

    ip: Annotated[str, AfterValidator(_check_ipv4)] = Field(
        description="IPv4 address of the site's ingress and DNS (the demo uses 127.0.1.k)."
    )
    ipv6: Annotated[str | None, AfterValidator(_check_ipv6)] = Field(
        default=None, description="IPv6 address, if the site has one."
    )
    ingress_port: int = Field(default=8080, ge=1, le=65535, description="Ingress HTTP port.")
    dns_port: int = Field(default=5353, ge=1, le=65535, description="Edge DNS port.")


class DriverName(StrEnum):
    """How an agent runs replicas."""

    PROCESS = "process"
    KUBERNETES = "kubernetes"
    SIMULATED = "simulated"


class SiteSpec(_Base):
    """What the operator declares about a site."""

    region: DnsLabel = Field(description="Region, e.g. eu-west.")
    zone: DnsLabel = Field(description="Zone within the region, e.g. eu-west-1.")
    location: Location = Field(description="Coordinates, used for distance.")
    capacity: SiteCapacity = Field(default_factory=SiteCapacity, description="Capacity.")
    driver: DriverName = Field(default=DriverName.PROCESS, description="Replica driver.")
    addresses: SiteAddresses = Field(description="Ingress and DNS addresses.")
    networks: list[Annotated[str, AfterValidator(_check_network)]] = Field(
        default_factory=list,
        description="Client networks (CIDR) this site serves; the central DNS locates clients "
        "by them (EDNS Client Subnet, else the source address).",
    )


class SitePhase(StrEnum):
    """Health of a site as the hub sees it."""

    PENDING = "Pending"
    """Declared, no agent has reported yet."""
    READY = "Ready"
    """The agent reports on time."""
    UNREACHABLE = "Unreachable"
    """Heartbeats missed beyond the grace period."""


class SiteStatus(_Base):
    """What the hub observes about a site."""

    phase: SitePhase = Field(default=SitePhase.PENDING, description="Health verdict.")
    last_heartbeat: datetime | None = Field(default=None, description="Last agent heartbeat.")
    agent_version: str | None = Field(default=None, description="Version of the agent.")
    agent_endpoint: str | None = Field(
        default=None, description="URL of the agent's local API (logs), as the agent reports it."
    )
    replicas: int = Field(default=0, description="Replicas running at the site, all apps.")
    ready_replicas: int = Field(default=0, description="Ready replicas at the site, all apps.")
    message: str | None = Field(default=None, description="Why the phase is what it is.")


class Site(_Base):
    """One edge micro data center: one cluster."""

    api_version: Literal["edgefleet.io/v1alpha1"] = Field(default="edgefleet.io/v1alpha1")
    kind: Literal["Site"] = Field(default="Site")
    metadata: ObjectMeta
    spec: SiteSpec
    status: SiteStatus = Field(default_factory=SiteStatus)

    @field_validator("metadata")
    @classmethod
    def _no_tenant(cls, meta: ObjectMeta) -> ObjectMeta:
        if meta.tenant is not None:
            raise ValueError("sites belong to the fleet, not a tenant: remove metadata.tenant")
        return meta


class SiteNeighbour(_Base):
    """A site near another, as that site's agent sees it."""

    site: str = Field(description="Neighbour site name.")
    region: str
    zone: str
    distance_km: float = Field(description="Great-circle distance, km.")
    estimated_rtt_ms: float = Field(description="Round trip the distance implies, ms.")
    phase: SitePhase = Field(description="The neighbour's health as the hub sees it.")
    probe: Literal["up", "down"] | None = Field(
        default=None,
        description="The site's own fresh probe verdict of the neighbour; unset when it has "
        "not reported one lately (its agent probes only its nearest few).",
    )


class SiteNeighbours(_Base):
    """The sites nearest to one site, nearest first."""

    site: str
    neighbours: list[SiteNeighbour]


# ---------------------------------------------------------------------------------------------
# App


class ProcessWorkload(_Base):
    """A replica is a local OS process (process driver)."""

    type: Literal["process"] = "process"
    command: str = Field(min_length=1, description="Program to run, found on PATH.")
    args: list[str] = Field(default_factory=list, description="Arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="First port for replicas (replica i gets port+i); unset: the agent picks.",
    )
    health_path: str = Field(default="/healthz", pattern=r"^/", description="HTTP health path.")


class ContainerWorkload(_Base):
    """A replica is a container (kubernetes driver)."""

    type: Literal["container"] = "container"
    image: str = Field(min_length=1, description="Container image reference.")
    command: list[str] | None = Field(default=None, description="Entrypoint override.")
    args: list[str] | None = Field(default=None, description="Arguments override.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the container listens on.")
    health_path: str = Field(default="/healthz", pattern=r"^/", description="HTTP health path.")


CLOUD_INIT_MAX_BYTES = 2048
"""Most bytes of inline cloud-init user data KubeVirt accepts (its webhook refuses more)."""


def _check_image(value: str) -> str:
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"image {value!r} must not contain spaces: write e.g. 'nginx:1.27'")
    return value


Image = Annotated[str, Field(min_length=1), AfterValidator(_check_image)]
"""An OCI image reference, e.g. ``registry.example/shop/web:1.4``."""


class VmWorkload(_Base):
    """A replica is a virtual machine (kubernetes driver, KubeVirt): for software that needs its
    own kernel. The disk is a containerDisk image; CPU and memory come from ``resources``."""

    type: Literal["vm"] = "vm"
    image: Image = Field(description="containerDisk image holding the VM's boot disk.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the VM serves HTTP on.")
    health_path: str = Field(default="/healthz", pattern=r"^/", description="HTTP health path.")
    cloud_init: str | None = Field(
        default=None,
        min_length=1,
        description="cloud-init user data (NoCloud), e.g. '#cloud-config ...'; at most 2048 bytes.",
    )

    @field_validator("cloud_init")
    @classmethod
    def _small_cloud_init(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > CLOUD_INIT_MAX_BYTES:
            raise ValueError(
                f"cloudInit is {len(value.encode())} bytes; KubeVirt takes at most "
                f"{CLOUD_INIT_MAX_BYTES} inline: move the bulk into the image or fetch it at boot"
            )
        return value


class FunctionWorkload(_Base):
    """A scale-to-zero HTTP container (kubernetes driver): no replica runs until a request comes;
    the site's activator holds that request and wakes one replica."""

    type: Literal["function"] = "function"
    image: Image = Field(description="Container image reference.")
    command: list[str] | None = Field(default=None, description="Entrypoint override.")
    args: list[str] | None = Field(default=None, description="Arguments override.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the container listens on.")
    health_path: str = Field(default="/healthz", pattern=r"^/", description="HTTP health path.")


Workload = Annotated[
    ProcessWorkload | ContainerWorkload | VmWorkload | FunctionWorkload,
    Field(discriminator="type"),
]
"""What a replica runs, told apart by ``type``: process, container, vm or function."""

WORKLOAD_TYPES = ("process", "container", "vm", "function")
"""Every workload ``type``, as written in manifests."""


class Resources(_Base):
    """What one replica needs."""

    cpu: Cpu = Field(default=0.1, description="CPU cores per replica.")
    memory: Memory = Field(default=64 * 1024**2, description="Bytes of memory per replica.")


class Scaling(_Base):
    """Bounds on the number of replicas, and how sites scale between the hub's rounds.

    ``minReplicas``/``maxReplicas`` bound the whole fleet. The rest drives traffic placement and
    each site's local scaling: a replica is meant to carry ``targetConcurrency`` requests in
    flight; a site averages concurrency over ``stableWindow`` and, when the short
    ``panicWindow`` average reaches ``panicThreshold`` times its capacity, scales up on that at
    once and does not scale down until the panic ends. A site that served no request for
    ``idleTimeout`` goes to zero replicas and stays placed, so its first request wakes it.
    """

    min_replicas: int = Field(default=0, ge=0, description="Fewest replicas in the fleet.")
    max_replicas: int = Field(default=1000, ge=0, description="Most replicas in the fleet.")
    max_replicas_per_site: int | None = Field(
        default=None, ge=1, description="Most replicas at one site (traffic mode)."
    )
    target_concurrency: float = Field(
        default=10.0, gt=0, le=100_000, description="Requests in flight one replica should carry."
    )
    stable_window: Duration = Field(
        default=60.0, ge=1, le=3600, description="Window concurrency is averaged over (seconds)."
    )
    panic_window: Duration = Field(
        default=6.0, ge=0.5, le=600, description="Short window that detects bursts (seconds)."
    )
    panic_threshold: float = Field(
        default=2.0,
        gt=1,
        le=100,
        description="Burst: panic-window demand at this multiple of the replicas' capacity.",
    )
    idle_timeout: Duration = Field(
        default=300.0,
        ge=0,
        description="A site with no request for this long goes to zero replicas (traffic mode); "
        "0 never scales to zero.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        if self.panic_window > self.stable_window:
            raise ValueError("panicWindow must not be longer than stableWindow")
        return self


class SiteSelector(_Base):
    """Which sites may run an app; every given criterion must match (empty: all sites)."""

    regions: list[DnsLabel] = Field(default_factory=list, description="Allowed regions.")
    zones: list[DnsLabel] = Field(default_factory=list, description="Allowed zones.")
    sites: list[DnsLabel] = Field(default_factory=list, description="Allowed site names.")
    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels a site must carry, all of them."
    )


class SpreadBy(StrEnum):
    """The topology level a spread constraint balances over."""

    REGION = "region"
    ZONE = "zone"
    SITE = "site"


class Spread(_Base):
    """Even spread of replicas over topology domains, as Kubernetes topology spread."""

    by: SpreadBy = Field(default=SpreadBy.SITE, description="Domain: region, zone or site.")
    max_skew: int = Field(default=1, ge=1, description="Largest allowed gap between domains.")


class PlacementMode(StrEnum):
    """How the hub decides where an app runs."""

    EXPLICIT = "explicit"
    """Selectors, weights and spread, decided by the operator."""
    TRAFFIC = "traffic"
    """Where the traffic is: sites and replicas follow demand within the latency bound."""


class PlacementPolicy(_Base):
    """Where an app runs and how many replicas."""

    mode: PlacementMode = Field(default=PlacementMode.EXPLICIT, description="Placement mode.")
    selector: SiteSelector = Field(default_factory=SiteSelector, description="Eligible sites.")
    replicas: int | None = Field(
        default=None, ge=0, description="Total replicas divided across the selected sites."
    )
    replicas_per_site: int | None = Field(
        default=None, ge=0, description="Replicas at every selected site (instead of replicas)."
    )
    weights: dict[str, int] = Field(
        default_factory=dict,
        description="Static weight per site name; replicas are divided in proportion.",
    )
    spread: Spread | None = Field(default=None, description="Even spread over a topology level.")
    max_latency_ms: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Traffic mode: most round-trip milliseconds between a client's site and the "
        "site serving it; unset: no bound, nearest still preferred.",
    )
    min_sites: int | None = Field(
        default=None, ge=0, description="Traffic mode: fewest sites the app stays placed at (1)."
    )
    max_sites: int | None = Field(
        default=None, ge=1, description="Traffic mode: most sites the app runs at."
    )

    @model_validator(mode="after")
    def _one_count(self) -> PlacementPolicy:
        if self.mode == PlacementMode.TRAFFIC:
            return self._traffic()
        for name, value in (
            ("maxLatencyMs", self.max_latency_ms),
            ("minSites", self.min_sites),
            ("maxSites", self.max_sites),
        ):
            if value is not None:
                raise ValueError(f"{name} applies to mode: traffic only; remove it or set the mode")
        if self.replicas is not None and self.replicas_per_site is not None:
            raise ValueError("set either replicas or replicasPerSite, not both")
        if self.replicas is None and self.replicas_per_site is None:
            self.replicas = 1
        if self.weights and self.spread is not None:
            raise ValueError("weights and spread both divide replicas: set only one")
        if self.replicas_per_site is not None and (self.weights or self.spread is not None):
            raise ValueError("replicasPerSite runs the same count everywhere: drop weights/spread")
        for site, weight in self.weights.items():
            _check_dns_label(site)
            if weight < 0:
                raise ValueError(f"weight of {site!r} must not be negative")
        return self

    def _traffic(self) -> PlacementPolicy:
        for name, value in (
            ("replicas", self.replicas),
            ("replicasPerSite", self.replicas_per_site),
            ("spread", self.spread),
        ):
            if value is not None:
                raise ValueError(
                    f"{name} does not apply to mode: traffic (demand decides the count); "
                    "bound it with spec.scaling instead"
                )
        if self.weights:
            raise ValueError("weights do not apply to mode: traffic (demand decides the sites)")
        if (
            self.min_sites is not None
            and self.max_sites is not None
            and self.min_sites > self.max_sites
        ):
            raise ValueError("minSites must not exceed maxSites")
        return self


Network = Annotated[str, AfterValidator(_check_network)]
"""A network in CIDR form (``10.0.0.0/8``, ``2001:db8::/32``), host bits zero."""


class AccessRule(_Base):
    """Which clients may reach an app: those in one of ``networks`` or in one of ``regions``.

    Both empty: every client. A client's region is that of the site it is nearest to: at an edge
    DNS the site whose DNS is asked; at the central DNS and the ingress the site whose client
    networks hold the client's address (see ``edgefleet.routing.access``).
    """

    networks: list[Network] = Field(
        default_factory=list, description="Client networks (CIDR) allowed, e.g. 10.0.0.0/8."
    )
    regions: list[DnsLabel] = Field(
        default_factory=list, description="Regions whose clients are allowed, e.g. eu-west."
    )

    @property
    def open(self) -> bool:
        """Whether the rule lets every client in."""
        return not self.networks and not self.regions


class AppPolicy(_Base):
    """An app's own residency and access, within its tenant's (``edgefleet.model.tenant``)."""

    regions: list[DnsLabel] = Field(
        default_factory=list,
        description="Residency: the app runs only in these regions (empty: wherever its tenant "
        "allows); each must be one of the tenant's regions, if the tenant names any.",
    )
    access: AccessRule = Field(
        default_factory=AccessRule,
        description="Clients allowed to reach the app; they must pass the tenant's rule too.",
    )


class AppSpec(_Base):
    """What a tenant asks to run."""

    workload: Workload = Field(description="What a replica runs.")
    resources: Resources = Field(default_factory=Resources, description="Per replica.")
    scaling: Scaling = Field(default_factory=Scaling, description="Fleet-wide bounds.")
    placement: PlacementPolicy = Field(default_factory=PlacementPolicy, description="Where.")
    policy: AppPolicy | None = Field(
        default=None,
        description="Residency and access of this app, within its tenant's.",
        # Left out of dumps when unset, so the specs stored before it existed compare equal.
        exclude_if=lambda value: value is None,
    )


class SiteReplicas(_Base):
    """An app's replicas at one site."""

    site: str = Field(description="Site name.")
    desired: int = Field(default=0, description="Replicas placement asks for.")
    ready: int = Field(default=0, description="Replicas the agent reports ready.")
    running: int = Field(default=0, description="Replicas the agent reports running.")
    wakeable: bool = Field(
        default=False,
        description="The site may start replicas itself (traffic mode), from zero on a request.",
    )


class AppStatus(_Base):
    """What the hub observes about an app."""

    observed_generation: int | None = Field(default=None, description="Spec generation placed.")
    desired_replicas: int = Field(default=0, description="Sum of desired replicas.")
    ready_replicas: int = Field(default=0, description="Sum of ready replicas.")
    sites: list[SiteReplicas] = Field(default_factory=list, description="Per site.")
    message: str | None = Field(default=None, description="Why placement fell short, if it did.")


class App(_Base):
    """An application a tenant runs on the fleet."""

    api_version: Literal["edgefleet.io/v1alpha1"] = Field(default="edgefleet.io/v1alpha1")
    kind: Literal["App"] = Field(default="App")
    metadata: ObjectMeta
    spec: AppSpec
    status: AppStatus = Field(default_factory=AppStatus)

    @field_validator("metadata")
    @classmethod
    def _tenant_required(cls, meta: ObjectMeta) -> ObjectMeta:
        if meta.tenant is None:
            raise ValueError("apps belong to a tenant: set metadata.tenant")
        return meta

    @property
    def key(self) -> str:
        """``tenant/name``, unique in the fleet."""
        return f"{self.metadata.tenant}/{self.metadata.name}"
