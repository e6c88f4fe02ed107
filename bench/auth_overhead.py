"""What authentication costs a hub: per request, with each kind of caller, next to a request
that needs none, measured in the same run against a real hub process on loopback.

- ``/healthz`` (no authentication) is the reference;
- ``GET /api/v1/whoami`` with a hub token (one primary-key read of the tokens table), with a
  site credential (an Ed25519 signature check, then a read for revocation), and with a token
  the hub refuses;
- ``POST .../heartbeat`` with the site's credential: what each of 10,000 agents sends every 2 s.

Each figure is the median and p99 of ``--requests`` sequential requests on one kept-alive
connection, and the requests per second that makes. With ``EDGEFLEET_TEST_POSTGRES`` set (e.g.
``make postgres``) the hub runs on PostgreSQL too.

    .venv/bin/python bench/auth_overhead.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.localfleet import LocalFleet, free_port, scratch_database
from tests.factories import make_site


def timed(client: httpx.Client, method: str, path: str, count: int, **kwargs: object) -> str:
    """Median and p99 latency of ``count`` requests, and the rate they make."""
    samples = []
    started = time.perf_counter()
    for _ in range(count):
        begin = time.perf_counter()
        client.request(method, path, **kwargs)  # type: ignore[arg-type]
        samples.append((time.perf_counter() - begin) * 1000)
    rate = count / (time.perf_counter() - started)
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    return f"median {statistics.median(samples):6.2f} ms  p99 {p99:6.2f} ms  {rate:7.0f} req/s"


def run(db: str | None, label: str, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        fleet = LocalFleet(
            workdir=Path(tmp),
            hub_port=free_port(),
            dns_port=free_port(),
            db=db,
            hub_args=["--auth-failure-burst", "1000000"],
        )
        with fleet.running():
            fleet.start_hub()
            with fleet.client() as admin:
                admin.apply(make_site("paris"))
                made = admin.create_token("bench", "viewer", tenants=["demo"])
                join = admin.join_token("paris").token
            credential = httpx.post(
                f"{fleet.hub_url}/api/v1/agent/join",
                json={"site": "paris"},
                headers={"Authorization": f"Bearer {join}"},
            ).json()["credential"]
            beat = {"site": "paris", "observedRevision": 0}
            cases = [
                ("GET /healthz (no authentication)", "GET", "/healthz", None, None),
                ("GET /whoami, hub token", "GET", "/api/v1/whoami", made.token, None),
                ("GET /whoami, site credential", "GET", "/api/v1/whoami", credential, None),
                (
                    "GET /whoami, refused token",
                    "GET",
                    "/api/v1/whoami",
                    "efu_" + "0" * 16 + "_" + "x" * 43,
                    None,
                ),
                (
                    "POST heartbeat, site credential",
                    "POST",
                    "/api/v1/agent/sites/paris/heartbeat",
                    credential,
                    beat,
                ),
            ]
            print(f"hub on {label}, {count} sequential requests each:")
            with httpx.Client(base_url=fleet.hub_url, timeout=10) as client:
                for name, method, path, token, body in cases:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    timed(client, method, path, 50, headers=headers, json=body)  # warm up
                    figure = timed(client, method, path, count, headers=headers, json=body)
                    print(f"  {name:36s} {figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    run(None, "SQLite", args.requests)
    base = os.environ.get("EDGEFLEET_TEST_POSTGRES")
    if base:
        with scratch_database(base, prefix="ef_bench_") as url:
            run(url, "PostgreSQL", args.requests)


if __name__ == "__main__":
    main()
