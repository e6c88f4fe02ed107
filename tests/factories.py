"""Manifests and small fleets for tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from edgefleet.localfleet import LocalFleet, free_port
from edgefleet.model import App, Site


def make_site(
    name: str,
    *,
    region: str = "eu-west",
    zone: str | None = None,
    ip: str = "127.0.0.1",
    port: int = 8080,
    lat: float = 48.85,
    lon: float = 2.35,
    labels: dict[str, str] | None = None,
    max_replicas: int = 20,
    networks: list[str] | None = None,
) -> Site:
    """A site manifest for tests."""
    return Site.model_validate(
        {
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {
                "region": region,
                "zone": zone or f"{region}-a",
                "location": {"lat": lat, "lon": lon},
                "capacity": {"cpu": 4, "memory": "8Gi", "maxReplicas": max_replicas},
                "addresses": {"ip": ip, "ingressPort": port},
                "networks": networks or [],
            },
        }
    )


def make_app(
    name: str = "hello",
    *,
    tenant: str = "demo",
    placement: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
    scaling: dict[str, object] | None = None,
) -> App:
    """An app manifest running the bundled sample server."""
    return App.model_validate(
        {
            "metadata": {"name": name, "tenant": tenant},
            "spec": {
                "workload": {"type": "process", "command": "edgefleet-hello", "env": env or {}},
                "resources": {"cpu": "100m", "memory": "32Mi"},
                "placement": placement or {"replicas": 1},
                **({"scaling": scaling} if scaling else {}),
            },
        }
    )


TWO_REGIONS = {
    "paris": ("eu-west", 48.8566, 2.3522),
    "lyon": ("eu-west", 45.764, 4.8357),
    "new-york": ("us-east", 40.7128, -74.006),
}
"""Three sites in two regions: Paris and Lyon close together, New York far away."""


def two_region_sites(subnets: Iterator[int]) -> tuple[dict[str, Site], dict[str, int]]:
    """The sites of ``TWO_REGIONS``, each at ``127.0.<n>.1`` with clients in ``127.1.<n>.0/24``
    (``n`` drawn from ``subnets``); returns the sites and each one's ``n``."""
    sites, subnet = {}, {}
    for name, (region, lat, lon) in TWO_REGIONS.items():
        n = subnet[name] = next(subnets)
        sites[name] = make_site(
            name, region=region, ip=f"127.0.{n}.1", lat=lat, lon=lon, networks=[f"127.1.{n}.0/24"]
        )
    return sites, subnet


def fast_fleet(workdir: Path) -> LocalFleet:
    """A fleet whose hub places every second and whose demand moves within seconds."""
    return LocalFleet(
        workdir=workdir,
        hub_port=free_port(),
        dns_port=free_port(),
        placement_resync=1.0,
        demand_tau=3.0,
        demand_window=1.0,
    )
