"""What flows between the hub and an agent: desired state down, status and heartbeats up."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from edgefleet.model.objects import Resources, SiteSelector, Workload, _Base
from edgefleet.model.routing import RoutingUpdate


class LocalScaling(_Base):
    """Bounds within which a site scales an app by itself, between the hub's rounds or without
    the hub; the windows and targets come from the app's ``spec.scaling``."""

    min_replicas: int = Field(ge=0, description="Fewest replicas at this site (0: may sleep).")
    max_replicas: int = Field(ge=0, description="Most replicas at this site.")
    target_concurrency: float = Field(gt=0, description="Requests in flight per replica.")
    stable_window: float = Field(gt=0, description="Seconds concurrency is averaged over.")
    panic_window: float = Field(gt=0, description="Seconds of the burst-detecting window.")
    panic_threshold: float = Field(gt=1, description="Burst at this multiple of capacity.")
    idle_timeout: float = Field(ge=0, description="Seconds without requests before zero; 0 never.")


class AppAssignment(_Base):
    """One app's share at one site: what the agent must run."""

    tenant: str = Field(description="Tenant of the app.")
    app: str = Field(description="App name.")
    generation: int = Field(description="App spec generation this assignment was made from.")
    replicas: int = Field(ge=0, description="Replicas to run at this site.")
    workload: Workload = Field(description="What a replica runs.")
    resources: Resources = Field(default_factory=Resources, description="Per replica.")
    scaling: LocalScaling | None = Field(
        default=None,
        description="Local scaling bounds; unset: run exactly ``replicas`` (explicit placement).",
    )
    selector: SiteSelector | None = Field(
        default=None, description="Sites the app may run at, for offload to a neighbour."
    )
    regions: list[str] | None = Field(
        default=None,
        description="Residency: the only regions the app may run in, for offload to a "
        "neighbour; unset: any.",
    )
    may_offload: bool = Field(
        default=True,
        description="Whether neighbours may be asked to run it beyond this site's ceiling; "
        "False when its tenant has a quota, which replicas started by a neighbour would escape.",
    )

    @property
    def key(self) -> str:
        """``tenant/app``."""
        return f"{self.tenant}/{self.app}"


class DesiredState(_Base):
    """Everything one site must run; replaced whole on every change (level-based)."""

    site: str = Field(description="Site name.")
    revision: int = Field(
        description="Grows with every change of this site's desired state; watch from it."
    )
    apps: list[AppAssignment] = Field(default_factory=list, description="Assignments.")


class ReplicaState(_Base):
    """One replica as the agent sees it."""

    id: str = Field(description="Replica id, unique at the site (tenant-app-index).")
    index: int = Field(description="Index among the app's replicas at the site.")
    port: int | None = Field(default=None, description="Port the replica listens on.")
    host: str | None = Field(
        default=None,
        description="Address the replica serves on, when not the site's (kubernetes: the pod IP).",
    )
    pid: int | None = Field(default=None, description="OS process id (process driver).")
    state: str = Field(description="starting | running | crashed | backoff | stopped")
    ready: bool = Field(default=False, description="Health check passed.")
    restarts: int = Field(default=0, description="Restarts since the replica was created.")
    started_at: datetime | None = Field(default=None, description="Start of the current run.")
    generation: int = Field(default=0, description="App generation the replica runs.")


class AppReport(_Base):
    """An app's replicas at the reporting site."""

    tenant: str
    app: str
    replicas: list[ReplicaState] = Field(default_factory=list)


class StatusReport(_Base):
    """What an agent reports about its site; sent when it changes, small."""

    site: str = Field(description="Reporting site.")
    agent_version: str = Field(description="Agent version.")
    agent_endpoint: str | None = Field(default=None, description="Agent's local API URL.")
    observed_revision: int = Field(description="Desired-state revision the agent has applied.")
    apps: list[AppReport] = Field(default_factory=list, description="Replicas per app.")


class Heartbeat(_Base):
    """I am alive; tiny and frequent. Carries the agent's verdicts on its neighbours."""

    site: str
    observed_revision: int = 0
    probes: dict[str, bool] = Field(
        default_factory=dict, description="Neighbour site -> up, from this agent's probes."
    )
    problem: str | None = Field(
        default=None,
        max_length=500,
        description="Why this site cannot run replicas now (e.g. its cluster's API does not "
        "answer); unset when it can.",
    )


class WatchAnswer(_Base):
    """The answer to a site's long-poll: what changed of its desired state and of its share of
    the routing table (``RoutingUpdate``: whole or a delta). One of the two at least."""

    desired_state: DesiredState | None = Field(
        default=None, description="The site's desired state, when its revision moved."
    )
    routes: RoutingUpdate | None = Field(
        default=None, description="The site's share of the routing table, when it changed."
    )


class HeartbeatAnswer(_Base):
    """The hub's answer to a heartbeat."""

    heartbeat_interval: float = Field(
        description="Seconds the hub asks between heartbeats (more in a big fleet); the agent "
        "beats at this interval or its own, whichever is longer."
    )


class Event(_Base):
    """Something that happened to an object, for `describe`."""

    time: datetime
    kind: str = Field(description="Site or App.")
    tenant: str | None = None
    name: str
    reason: str = Field(description="CamelCase reason, e.g. Placed, Unreachable.")
    message: str
    type: str = Field(default="Normal", description="Normal or Warning.")
