"""Several hub processes on one PostgreSQL: one leads the controllers, another takes over."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from edgefleet.localfleet import LocalFleet, free_port, wait_for
from tests.factories import make_app, make_site

pytestmark = pytest.mark.slow


def leads(fleet: LocalFleet) -> bool:
    """True if this hub says it runs the controllers."""
    return bool(httpx.get(f"{fleet.hub_url}/healthz", timeout=2).json()["leader"])


def test_one_leader_and_failover(postgres_url: str, tmp_path: Path) -> None:
    first = LocalFleet(
        workdir=tmp_path / "a", hub_port=free_port(), db=postgres_url, dns_port=free_port()
    )
    second = LocalFleet(
        workdir=tmp_path / "b", hub_port=free_port(), db=postgres_url, dns_port=free_port()
    )
    with first.running(), second.running():
        first.start_hub()
        second.start_hub()
        assert leads(first) and not leads(second)
        # Both serve the API; the follower's writes are placed by the leader.
        with second.client() as client:
            client.apply(make_site("paris"))
            client.apply(make_app(placement={"replicas": 2}))
            wait_for(
                lambda: client.get_app("demo", "hello").status.desired_replicas == 2,
                timeout=20,
                what="placement by the leader",
            )
        first.stop_hub(signal.SIGKILL)
        wait_for(lambda: leads(second), timeout=30, what="the second hub to take the lead")
        with second.client() as client:
            client.apply(make_app(placement={"replicas": 3}))
            wait_for(
                lambda: client.get_app("demo", "hello").status.desired_replicas == 3,
                timeout=20,
                what="placement by the new leader",
            )
