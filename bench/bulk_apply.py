"""Registering a fleet of 10,000 sites and reading it back through the CLI, against a real hub.

A file of ``--sites`` Site manifests is generated as an operator's inventory would read: sites
around 54 metros in nine regions, a zone per country, coordinates scattered within about 30 km
of their metro, a street address and the site's tier and rack count as labels and annotations,
a management address each and a /24 of clients each. Then a real hub (``LocalFleet``, SQLite,
on a free port) is started and timed from the ``edgefleet`` command, as an operator runs it:

- **apply**: ``edgefleet apply -f sites.yaml`` (local validation of every document, then the
  bulk endpoint 1,000 at a time), next to the target of 60 s and to the same hub taking
  ``--put-sample`` sites one PUT each (``Client.apply``) just before, extrapolated to the
  fleet's size (a low estimate: it is measured while the fleet is small);
- **get, first row** and **get, all rows**: ``edgefleet get sites`` until its first table row
  and until it exits; **get -o json**: until the JSON document is complete; the better of two
  runs each. Next to the same commands against a hub of ``--reference`` sites, measured in the
  same run.

The commands run as separate processes, so Python's start and imports are in every figure
(``edgefleet version`` without a hub shows what that costs alone).

    .venv/bin/python bench/bulk_apply.py [--sites 10000] [--put-sample 500] [--reference 20]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.localfleet import LocalFleet, free_port
from edgefleet.model import Site

TARGET_APPLY_S = 60.0

# Metros per region: (city, country code, lat, lon).
METROS: dict[str, list[tuple[str, str, float, float]]] = {
    "eu-west": [
        ("paris", "fr", 48.857, 2.352),
        ("lyon", "fr", 45.764, 4.836),
        ("marseille", "fr", 43.297, 5.370),
        ("london", "gb", 51.507, -0.128),
        ("manchester", "gb", 53.481, -2.243),
        ("madrid", "es", 40.417, -3.704),
        ("barcelona", "es", 41.385, 2.173),
        ("lisbon", "pt", 38.722, -9.139),
        ("dublin", "ie", 53.350, -6.260),
    ],
    "eu-central": [
        ("frankfurt", "de", 50.110, 8.682),
        ("berlin", "de", 52.520, 13.405),
        ("munich", "de", 48.135, 11.582),
        ("amsterdam", "nl", 52.370, 4.895),
        ("zurich", "ch", 47.377, 8.541),
        ("vienna", "at", 48.208, 16.374),
        ("warsaw", "pl", 52.230, 21.012),
        ("milan", "it", 45.464, 9.190),
    ],
    "eu-north": [
        ("stockholm", "se", 59.329, 18.069),
        ("oslo", "no", 59.914, 10.752),
        ("copenhagen", "dk", 55.676, 12.568),
        ("helsinki", "fi", 60.170, 24.938),
    ],
    "us-east": [
        ("new-york", "us", 40.713, -74.006),
        ("boston", "us", 42.360, -71.059),
        ("washington", "us", 38.907, -77.037),
        ("atlanta", "us", 33.749, -84.388),
        ("miami", "us", 25.762, -80.192),
        ("chicago", "us", 41.878, -87.630),
        ("toronto", "ca", 43.653, -79.383),
    ],
    "us-west": [
        ("seattle", "us", 47.606, -122.332),
        ("san-francisco", "us", 37.775, -122.419),
        ("los-angeles", "us", 34.052, -118.244),
        ("denver", "us", 39.739, -104.990),
        ("phoenix", "us", 33.448, -112.074),
        ("vancouver", "ca", 49.283, -123.121),
    ],
    "latam": [
        ("sao-paulo", "br", -23.551, -46.633),
        ("rio", "br", -22.907, -43.173),
        ("buenos-aires", "ar", -34.604, -58.382),
        ("santiago", "cl", -33.449, -70.669),
        ("bogota", "co", 4.711, -74.072),
        ("mexico-city", "mx", 19.433, -99.133),
    ],
    "asia-east": [
        ("tokyo", "jp", 35.676, 139.650),
        ("osaka", "jp", 34.694, 135.502),
        ("seoul", "kr", 37.567, 126.978),
        ("taipei", "tw", 25.033, 121.565),
        ("hong-kong", "hk", 22.320, 114.169),
        ("singapore", "sg", 1.352, 103.820),
    ],
    "asia-south": [
        ("mumbai", "in", 19.076, 72.878),
        ("delhi", "in", 28.704, 77.102),
        ("bangalore", "in", 12.972, 77.595),
        ("chennai", "in", 13.083, 80.271),
    ],
    "oceania": [
        ("sydney", "au", -33.869, 151.209),
        ("melbourne", "au", -37.814, 144.963),
        ("brisbane", "au", -27.470, 153.026),
        ("auckland", "nz", -36.849, 174.763),
    ],
}
STREETS = [
    "Station Road",
    "Harbour Street",
    "Market Square",
    "Industrial Park",
    "Mill Lane",
    "Airport Way",
    "Bridge Street",
    "Tower Avenue",
    "Depot Road",
    "Exchange Place",
]


def inventory(count: int, *, seed: int = 42) -> Iterator[dict[str, Any]]:
    """``count`` Site manifests, as plain data."""
    rng = random.Random(seed)
    metros = [(region, *metro) for region, found in METROS.items() for metro in found]
    first_ip = ipaddress.IPv4Address("10.32.0.1")
    clients = ipaddress.IPv4Network("100.64.0.0/10")
    for i in range(count):
        region, city, country, lat, lon = metros[i % len(metros)]
        tier = rng.choice(["store", "store", "store", "factory", "cell-site", "metro"])
        yield {
            "apiVersion": "edgefleet.io/v1alpha1",
            "kind": "Site",
            "metadata": {
                "name": f"{country}-{city}-{i:05d}",
                "labels": {"tier": tier, "country": country, "racks": str(rng.randint(1, 4))},
                "annotations": {
                    "edgefleet.io/address": f"{rng.randint(1, 400)} {rng.choice(STREETS)}, "
                    f"{city.replace('-', ' ').title()}, {country.upper()}",
                },
            },
            "spec": {
                "region": region,
                "zone": f"{region}-{country}",
                "location": {
                    "lat": round(lat + rng.uniform(-0.3, 0.3), 4),
                    "lon": round(lon + rng.uniform(-0.3, 0.3), 4),
                },
                "capacity": {
                    "cpu": rng.choice([4, 8, 16, 32]),
                    "memory": rng.choice(["16Gi", "32Gi", "64Gi"]),
                    "maxReplicas": rng.choice([20, 50, 100]),
                },
                "addresses": {"ip": str(first_ip + 4 * i)},
                "networks": [str(ipaddress.IPv4Network((int(clients[0]) + 256 * i, 24)))],
            },
        }


def write_inventory(path: Path, count: int) -> None:
    """The manifests of ``inventory`` as one multi-document YAML file."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w") as out:
        yaml.dump_all(inventory(count), out, Dumper=dumper, sort_keys=False)


def cli(fleet: LocalFleet | None, *args: str) -> subprocess.Popen[bytes]:
    """The ``edgefleet`` command as an operator runs it, talking to ``fleet``'s hub."""
    env = dict(os.environ)
    env["EDGEFLEET_HUB"] = fleet.hub_url if fleet else f"http://127.0.0.1:{free_port()}"
    env["EDGEFLEET_TOKEN"] = (fleet.admin_token if fleet else None) or "none"
    return subprocess.Popen(
        [sys.executable, "-m", "edgefleet", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def finish(process: subprocess.Popen[bytes], what: str) -> bytes:
    """Wait for ``process``; its stdout, or an error with its stderr."""
    out, errors = process.communicate(timeout=900)
    if process.returncode != 0:
        raise RuntimeError(f"{what} exited with {process.returncode}: {errors.decode()[-2000:]}")
    return out


def timed_apply(fleet: LocalFleet, path: Path) -> float:
    """Seconds ``edgefleet apply -f path`` takes."""
    started = time.perf_counter()
    finish(cli(fleet, "apply", "-f", str(path)), "edgefleet apply")
    return time.perf_counter() - started


def timed_puts(fleet: LocalFleet, count: int) -> float:
    """Seconds ``count`` sites (not in the inventory) take as one PUT each."""
    sites = [Site.model_validate(doc) for doc in inventory(count, seed=7)]
    with fleet.client() as client:
        started = time.perf_counter()
        for site in sites:
            site.metadata.name = f"put-{site.metadata.name}"
            client.apply(site)
        return time.perf_counter() - started


def timed_get(fleet: LocalFleet | None, count: int) -> dict[str, float]:
    """``edgefleet get sites``: seconds to its first row and to its end; ``-o json``: to the
    end. Each output is checked to hold every site."""
    started = time.perf_counter()
    table = cli(fleet, "get", "sites")
    assert table.stdout is not None
    table.stdout.readline()  # the header
    first_row = table.stdout.readline()
    first = time.perf_counter() - started
    rows = 1 + sum(1 for _ in table.stdout)
    finish(table, "edgefleet get sites")
    every = time.perf_counter() - started
    if not first_row or rows != count:
        raise RuntimeError(f"edgefleet get sites showed {rows} sites, not {count}")
    started = time.perf_counter()
    listed = json.loads(finish(cli(fleet, "get", "sites", "-o", "json"), "get sites -o json"))
    as_json = time.perf_counter() - started
    if len(listed["items"]) != count:
        raise RuntimeError(f"get sites -o json listed {len(listed['items'])} sites, not {count}")
    return {"first": first, "all": every, "json": as_json}


def fleet_of(workdir: Path) -> LocalFleet:
    """A hub on SQLite on free ports."""
    return LocalFleet(workdir=workdir, hub_port=free_port(), dns_port=free_port())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--put-sample", type=int, default=500)
    parser.add_argument("--reference", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        base = Path(tmp)
        big, small = base / "sites.yaml", base / "reference.yaml"
        write_inventory(big, args.sites)
        write_inventory(small, args.reference)
        started = time.perf_counter()
        finish(cli(None, "version"), "edgefleet version")
        start_cost = time.perf_counter() - started
        print(
            f"{args.sites} sites in {big.stat().st_size / 2**20:.1f} MiB of YAML; "
            f"edgefleet version (no hub) takes {start_cost:.2f} s"
        )
        fleet = fleet_of(base / "big")
        with fleet.running():
            fleet.start_hub()
            puts = timed_puts(fleet, args.put_sample)
            applied = timed_apply(fleet, big)
            runs = [timed_get(fleet, args.sites + args.put_sample) for _ in range(2)]
            got = {key: min(run[key] for run in runs) for key in runs[0]}
        reference = fleet_of(base / "small")
        with reference.running():
            reference.start_hub()
            timed_apply(reference, small)
            runs = [timed_get(reference, args.reference) for _ in range(2)]
            ref = {key: min(run[key] for run in runs) for key in runs[0]}
    per_put = puts / args.put_sample
    rows = [
        (
            f"edgefleet apply -f ({args.sites} sites)",
            applied,
            f"target {TARGET_APPLY_S:.0f} s; one PUT each: {args.put_sample} in {puts:.1f} s, "
            f"{per_put * args.sites:.0f} s for {args.sites}",
        ),
        (
            "edgefleet get sites: first row",
            got["first"],
            f"{args.reference} sites: {ref['first']:.2f} s",
        ),
        (
            "edgefleet get sites: every row",
            got["all"],
            f"{args.reference} sites: {ref['all']:.2f} s",
        ),
        (
            "edgefleet get sites -o json: all",
            got["json"],
            f"{args.reference} sites: {ref['json']:.2f} s",
        ),
    ]
    print(f"hub on SQLite, {args.sites + args.put_sample} sites after the apply")
    for label, figure, against in rows:
        print(f"  {label:38} {figure:7.2f} s   {against}")


if __name__ == "__main__":
    main()
