"""Schemathesis against a real hub: generated requests to every operation of its OpenAPI
document, with a valid admin token and with an invalid one; no answer may be a 5xx."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefleet.localfleet import LocalFleet, free_port
from tests.factories import make_app, make_site

pytestmark = pytest.mark.slow

SCHEMATHESIS = Path(sys.executable).parent / "st"


@pytest.fixture
def seeded_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """A hub with a site, a tenant and an app, so that generated requests find things."""
    fleet = LocalFleet(
        workdir=tmp_path / "fleet",
        hub_port=free_port(),
        dns_port=free_port(),
        # Invalid tokens by the thousand from one address: rate limiting is tested elsewhere.
        hub_args=["--auth-failure-burst", "1000000"],
    )
    with fleet.running():
        fleet.start_hub()
        with fleet.client() as admin:
            admin.apply(make_site("paris"))
            admin.apply(make_app("hello", tenant="demo"))
        httpx.put(
            f"{fleet.hub_url}/api/v1/tenants/demo",
            json={"metadata": {"name": "demo"}, "spec": {}},
            headers=fleet.headers,
            timeout=10,
        ).raise_for_status()
        yield fleet


@pytest.mark.parametrize("token", ["valid", "invalid"])
def test_no_request_makes_the_hub_fail(
    seeded_fleet: LocalFleet, token: str, tmp_path: Path
) -> None:
    bearer = seeded_fleet.admin_token if token == "valid" else "efu_0123456789abcdef_" + "Z" * 43
    # With a refused token every request stops at authentication: generated data (fuzzing)
    # is enough there; the valid token also gets the boundary cases (coverage) and sequences
    # of calls (stateful).
    phases = "coverage,fuzzing,stateful" if token == "valid" else "fuzzing"
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{seeded_fleet.hub_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {bearer}",
            "--checks",
            "not_a_server_error",
            # The event stream never ends by itself (tests/integration/hub/test_stream.py).
            "--exclude-path",
            "/api/v1/stream",
            "--phases",
            phases,
            "--max-examples",
            "10",
            "--generation-deterministic",
            # One worker: two threads of it parsing lambdas' sources at once trip a CPython
            # 3.11 bug ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--no-shrink",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary + result.stderr[-2000:]
    # "Test cases: N generated, N passed": every case passed, and there were hundreds.
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert cases is not None, summary
    generated, passed = int(cases.group(1)), int(cases.group(2))
    assert generated == passed and generated > 300, summary
    logs = (seeded_fleet.workdir / "hub.log").read_text()
    assert "unhandled error" not in logs
