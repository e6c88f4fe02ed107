"""Where simulated sites are: nine regions of three zones, scattered over land where edge sites
would be, reproducibly (a seed), with addresses nothing listens on."""

from __future__ import annotations

import random

from edgefleet.model import Site

REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "eu-west": ((40.0, 55.0), (-9.0, 15.0)),
    "eu-north": ((55.0, 65.0), (5.0, 30.0)),
    "us-east": ((30.0, 45.0), (-90.0, -72.0)),
    "us-west": ((33.0, 48.0), (-123.0, -105.0)),
    "latam": ((-35.0, 0.0), (-70.0, -40.0)),
    "africa": ((-30.0, 10.0), (15.0, 35.0)),
    "india": ((10.0, 28.0), (72.0, 87.0)),
    "asia-east": ((25.0, 40.0), (105.0, 140.0)),
    "oceania": ((-38.0, -20.0), (115.0, 150.0)),
}
"""Land boxes, (lat range, lon range) per region."""


def address(index: int) -> str:
    """A loopback address for the ``index``-th simulated site (0-based, up to four million),
    in 127.64.0.0/10: apart from the demo's 127.0.1.x and the tests' 127.0-127.3."""
    if not 0 <= index < 1 << 22:
        raise ValueError(f"a simulated site's index must be within 0..{(1 << 22) - 1}")
    return f"127.{64 + (index >> 16)}.{(index >> 8) & 255}.{index & 255}"


def world_sites(
    count: int,
    *,
    prefix: str = "sim-",
    width: int = 5,
    seed: int = 7,
    labels: dict[str, str] | None = None,
    max_replicas: int = 20,
) -> list[Site]:
    """``count`` sites named ``<prefix>00001``... (at least ``width`` digits) over the nine
    regions, in turn."""
    rng = random.Random(seed)
    regions = sorted(REGIONS)
    width = max(width, len(str(count)))
    sites = []
    for i in range(count):
        region = regions[i % len(regions)]
        (lat0, lat1), (lon0, lon1) = REGIONS[region]
        sites.append(
            Site.model_validate(
                {
                    "metadata": {"name": f"{prefix}{i + 1:0{width}d}", "labels": labels or {}},
                    "spec": {
                        "region": region,
                        "zone": f"{region}-{'abc'[rng.randrange(3)]}",
                        "location": {
                            "lat": round(rng.uniform(lat0, lat1), 3),
                            "lon": round(rng.uniform(lon0, lon1), 3),
                        },
                        "capacity": {"cpu": 8, "memory": "16Gi", "maxReplicas": max_replicas},
                        "addresses": {"ip": address(i)},
                        "driver": "simulated",
                    },
                }
            )
        )
    return sites
