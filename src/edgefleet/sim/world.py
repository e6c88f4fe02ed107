"""Where simulated sites are: nine regions of three zones, scattered over land where edge sites
would be, reproducibly (a seed), with addresses nothing listens on; or, for a fleet that grows
around real sites, in boxes around them (``areas_around``)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from edgefleet.model import Site

Box = tuple[tuple[float, float], tuple[float, float]]
"""(lat range, lon range), degrees."""

REGIONS: dict[str, Box] = {
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

AROUND_DEGREES = 5.0
"""Half the height of the box ``areas_around`` draws around a site (about 550 km): the towns of
the site's country or so, apart enough to be told apart on a map of the world."""


def address(index: int) -> str:
    """A loopback address for the ``index``-th simulated site (0-based, up to four million),
    in 127.64.0.0/10: apart from the demo's 127.0.1.x and the tests' 127.0-127.3."""
    if not 0 <= index < 1 << 22:
        raise ValueError(f"a simulated site's index must be within 0..{(1 << 22) - 1}")
    return f"127.{64 + (index >> 16)}.{(index >> 8) & 255}.{index & 255}"


def areas_around(
    sites: Sequence[Site], *, degrees: float = AROUND_DEGREES
) -> list[tuple[str, Box]]:
    """A box around each of ``sites``, in its region: ``degrees`` of latitude either side, and
    as many kilometres of longitude (more degrees away from the equator), within the map."""
    areas = []
    for site in sites:
        lat, lon = site.spec.location.lat, site.spec.location.lon
        wide = min(180.0, degrees / max(0.1, math.cos(math.radians(lat))))
        box = (
            (max(-89.0, lat - degrees), min(89.0, lat + degrees)),
            (max(-180.0, lon - wide), min(180.0, lon + wide)),
        )
        areas.append((site.spec.region, box))
    return areas


def world_sites(
    count: int,
    *,
    prefix: str = "sim-",
    width: int = 5,
    seed: int = 7,
    labels: dict[str, str] | None = None,
    max_replicas: int = 20,
    areas: Sequence[tuple[str, Box]] | None = None,
    client_networks: bool = False,
) -> list[Site]:
    """``count`` sites named ``<prefix>00001``... (at least ``width`` digits) over ``areas``
    ((region, box) pairs; default: the nine ``REGIONS``), in turn.

    The names depend only on ``count``, ``prefix`` and ``width``: ``edgefleet sim --no-create``
    runs sites that another call made in other places. With ``client_networks`` each site's
    own address is its client network, so the fleet's DNS locates a client there (an ECS
    subnet of that address) at the site.
    """
    rng = random.Random(seed)
    places = list(areas) if areas is not None else sorted(REGIONS.items())
    if not places:
        raise ValueError("world_sites needs at least one area to put sites in")
    width = max(width, len(str(count)))
    sites = []
    for i in range(count):
        region, ((lat0, lat1), (lon0, lon1)) = places[i % len(places)]
        ip = address(i)
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
                        "addresses": {"ip": ip},
                        "networks": [f"{ip}/32"] if client_networks else [],
                        "driver": "simulated",
                    },
                }
            )
        )
    return sites
