"""The demo's simulated sites: ``edgefleet demo --simulated N`` adds N of them around its real
sites, so that the map, DNS and placement show at the scale of a fleet.

The sites are ``world_sites`` in boxes around the real sites, in the real sites' regions,
labelled ``simulated: "true"``, each with its own address as its client network (so the central
DNS can locate a client at one). The demo creates them on the hub in bulk and runs them in an
``edgefleet sim`` process of their own (``LocalFleet.start_sim``): their thousands of
connections and their CPU stay out of the demo process, which sends the tour's load.

A simulated site has no data plane: no ingress and no edge DNS. So ``hello``, whose replicas are
real processes that the tour sends requests to, is kept to the real sites, and a second app,
``telemetry``, runs one replica at every simulated site: placement, the routing table and the
central DNS at the fleet's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from edgefleet.geo import great_circle_km
from edgefleet.model import App, Site, SiteSelector
from edgefleet.sim import world_sites
from edgefleet.sim.world import areas_around

PREFIX = "sim-"
"""Simulated sites are named ``sim-00001``..."""

LABELS = {"simulated": "true"}
"""What every simulated site carries, and what ``telemetry`` selects."""

APP = "telemetry"
"""The app that runs at every simulated site."""

JOINS_PER_SECOND = 250.0
"""Rate at which the simulated sites first call the hub: they join, and the hub places and
routes them, while the real sites keep their heartbeats on time."""


def simulated_sites(real: Sequence[Site], count: int) -> list[Site]:
    """``count`` simulated sites around the ``real`` ones, in turn, in their regions."""
    return world_sites(
        count, prefix=PREFIX, labels=LABELS, areas=areas_around(real), client_networks=True
    )


def kept_to(app: App, sites: Sequence[Site]) -> App:
    """``app`` placed only at ``sites`` (the real ones), however many simulated sites join."""
    kept = app.model_copy(deep=True)
    kept.spec.placement.selector = SiteSelector(sites=[s.metadata.name for s in sites])
    return kept


def fleet_app(tenant: str, count: int) -> App:
    """``telemetry``: one replica at every simulated site (a collector every site would run)."""
    return App.model_validate(
        {
            "metadata": {"name": APP, "tenant": tenant, "labels": {"team": "samples"}},
            "spec": {
                "workload": {"type": "process", "command": "edgefleet-hello"},
                "resources": {"cpu": "100m", "memory": "32Mi"},
                "scaling": {"maxReplicas": max(1, count)},
                "placement": {"selector": {"matchLabels": LABELS}, "replicasPerSite": 1},
            },
        }
    )


def farthest(simulated: Sequence[Site], real: Sequence[Site]) -> tuple[Site, Site, float]:
    """The simulated site farthest from every real site, the real site nearest to it, and the
    km between them: a place no real site's probes reach (real agents probe their nearest
    sites, and call a simulated one, which has no agent's API, down)."""

    def nearest_real(site: Site) -> tuple[float, Site]:
        here = site.spec.location
        return min(
            (
                (great_circle_km(here.lat, here.lon, r.spec.location.lat, r.spec.location.lon), r)
                for r in real
            ),
            key=lambda pair: pair[0],
        )

    best = max(simulated, key=lambda s: nearest_real(s)[0])
    km, near = nearest_real(best)
    return best, near, km


@dataclass(frozen=True)
class SimulatedStatus:
    """What the ``edgefleet sim`` process says of its sites (``GET /stats``)."""

    sites: int
    joined: int
    replicas: int
    ready: int
    rss_bytes: int

    @classmethod
    def read(cls, url: str) -> SimulatedStatus:
        """Ask the control API at ``url``."""
        data = httpx.get(f"{url}/stats", timeout=2.0).raise_for_status().json()
        return cls(
            sites=data["sites"],
            joined=data["joined"],
            replicas=data["replicas"],
            ready=data["ready"],
            rss_bytes=data["rss_bytes"],
        )

    def line(self) -> str:
        """One line for the demo's live view."""
        return (
            f"+ {self.sites} simulated sites ({PREFIX}...): {self.joined} joined, "
            f"{self.ready}/{self.replicas} {APP} replicas ready, "
            f"{self.rss_bytes / 2**20:.0f} MiB in edgefleet sim"
        )
