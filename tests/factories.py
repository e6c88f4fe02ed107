"""Manifests for tests."""

from __future__ import annotations

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
