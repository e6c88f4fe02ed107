"""The routing table on the wire: what every DNS and ingress of the fleet answers from."""

from __future__ import annotations

from pydantic import Field

from edgefleet.model.identity import PublicKey
from edgefleet.model.objects import _Base


class RouteSite(_Base):
    """A site's location, addresses and the hub's reachability verdict."""

    name: str
    region: str
    zone: str
    lat: float
    lon: float
    ip: str
    ipv6: str | None = None
    ingress_port: int = 8080
    dns_port: int = 5353
    networks: list[str] = Field(default_factory=list, description="Client networks (CIDR).")
    reachable: bool = Field(default=True, description="False once heartbeats stopped.")


class RouteEndpoint(_Base):
    """One site serving one app."""

    site: str
    ready: int = Field(description="Ready replicas of the app at the site.")
    headroom: float = Field(default=1.0, description="Free share of the site's capacity, 0..1.")
    wakeable: bool = Field(
        default=False,
        description="Placed here with room to start replicas: the site's activator serves the "
        "first request while a replica starts, even at zero ready.",
    )


class RouteAccess(_Base):
    """One access rule of an app: a client must be in one of its networks or regions."""

    who: str = Field(description="Whose rule: 'tenant acme' or 'app shop.acme'.")
    networks: list[str] = Field(default_factory=list, description="Allowed networks (CIDR).")
    regions: list[str] = Field(default_factory=list, description="Allowed client regions.")


class RouteRegion(_Base):
    """The client networks of one region: every network of its sites, merged. A share carries
    the regions an app's access rule names, so that a site without every site's record can tell
    whether a client it cannot place is of an allowed region."""

    name: str
    networks: list[str] = Field(default_factory=list, description="Client networks (CIDR).")


class AppRoutes(_Base):
    """The sites serving one app."""

    tenant: str
    app: str
    max_latency_ms: float | None = Field(
        default=None,
        description="Latency bound of the app: farther ready sites lose to a nearer wakeable one.",
    )
    endpoints: list[RouteEndpoint] = Field(default_factory=list)
    regions: list[str] | None = Field(
        default=None,
        description="Residency: the regions the app may run and be served in (its tenant's "
        "and its own, intersected); unset: any. Spill-over and offload stay within them.",
    )
    access: list[RouteAccess] = Field(
        default_factory=list,
        description="Rules every client must pass to reach the app (its tenant's, its own); "
        "none: every client.",
    )


class RoutingTable(_Base):
    """Every app's serving sites; replaced whole when anything in it changes."""

    version: str = Field(description="Content hash: equal versions mean equal tables.")
    zone: str = Field(default="edge.internal.", description="DNS zone apps are named in.")
    sites: list[RouteSite] = Field(default_factory=list)
    apps: list[AppRoutes] = Field(default_factory=list)
    signing_keys: list[PublicKey] = Field(
        default_factory=list,
        description="The hub's public keys: sites check each other's credentials with them. "
        "Several during a key rotation.",
    )
    revoked_credentials: list[str] = Field(
        default_factory=list,
        description="Ids (jti) of site credentials revoked before they expire: refused by "
        "every site.",
    )
    regions: list[RouteRegion] = Field(
        default_factory=list,
        description="The client networks of each region an access rule names (in a site's "
        "share; the whole table has every site's networks instead).",
    )


class AppRef(_Base):
    """An app by tenant and name."""

    tenant: str
    app: str


class RoutingDelta(_Base):
    """What changed in a site's share of the routing table since the version it holds."""

    since: str = Field(description="The version this delta applies to.")
    version: str = Field(description="The version the share has once the delta is applied.")
    sites: list[RouteSite] = Field(
        default_factory=list, description="Site records added or changed."
    )
    removed_sites: list[str] = Field(
        default_factory=list, description="Sites no longer in the share."
    )
    apps: list[AppRoutes] = Field(
        default_factory=list, description="Apps added or changed, each whole (its section)."
    )
    removed_apps: list[AppRef] = Field(
        default_factory=list, description="Apps no longer in the share (deleted)."
    )
    signing_keys: list[PublicKey] | None = Field(
        default=None, description="The hub's public keys, when they changed."
    )
    revoked_credentials: list[str] | None = Field(
        default=None, description="The revoked site credentials, when they changed."
    )
    regions: list[RouteRegion] = Field(
        default_factory=list, description="Regions whose client networks changed, each whole."
    )
    removed_regions: list[str] = Field(
        default_factory=list, description="Regions no access rule names any more."
    )


class RoutingUpdate(_Base):
    """An answer to a site's long-poll of its share of the routing table: the share whole (the
    first time, or when the site's version is not the one the hub sent last) or a delta."""

    table: RoutingTable | None = None
    delta: RoutingDelta | None = None


def routing_update(body: bytes) -> RoutingTable | RoutingDelta:
    """The table or delta in a long-poll's answer (pydantic's ValidationError, a ValueError,
    when it holds neither)."""
    update = RoutingUpdate.model_validate_json(body)
    if update.table is not None:
        return update.table
    if update.delta is not None:
        return update.delta
    raise ValueError("a routing update with neither a table nor a delta")
