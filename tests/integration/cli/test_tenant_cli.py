"""Tenants through the ``edgefleet`` command against a real hub: the example manifest applies,
and ``get``, ``describe`` and ``delete`` show and remove a tenant's policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgefleet.localfleet import LocalFleet
from edgefleet.model.manifests import load_paths

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tenant.yaml"


def run(fleet: LocalFleet, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a separate process talking to ``fleet``'s hub."""
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "EDGEFLEET_HUB": fleet.hub_url,
            "EDGEFLEET_TOKEN": fleet.admin_token or "",
            "COLUMNS": "200",
        },
        check=False,
    )


def test_the_example_manifest_is_valid() -> None:
    kinds = [(m.obj.kind, m.obj.metadata.name) for m in load_paths([str(EXAMPLE)])]
    assert kinds == [("Tenant", "acme"), ("App", "shop")]


def test_apply_get_describe_delete_tenants(sqlite_fleet: LocalFleet, tmp_path: Path) -> None:
    fleet = sqlite_fleet
    applied = run(fleet, "apply", "-f", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == ["tenant/acme created", "app/shop in tenant acme created"]

    table = run(fleet, "get", "tenants")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == [
        "NAME", "REGIONS", "APPS", "REPLICAS", "CPU", "MEMORY", "ACCESS", "AGE"
    ]  # fmt: skip
    assert row.split()[:6] == ["acme", "eu-west,eu-north", "1", "0/20", "0/8", "0/16Gi"]
    wide = run(fleet, "get", "tenant", "acme", "-o", "wide")
    assert "10.0.0.0/8" in wide.stdout
    as_json = json.loads(run(fleet, "get", "tenant", "acme", "-o", "json").stdout)
    assert as_json["kind"] == "Tenant" and as_json["spec"]["quota"]["memory"] == 16 * 1024**3
    listed = yaml.safe_load(run(fleet, "get", "tenants", "-o", "yaml").stdout)
    assert listed["kind"] == "TenantList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["acme"]

    described = run(fleet, "describe", "tenant", "acme")
    assert described.returncode == 0, described.stderr
    assert "Apps:" in described.stdout and "shop" in described.stdout
    assert "Events:" in described.stdout and "Created" in described.stdout

    # A bad document names its field and line; nothing is applied.
    broken = tmp_path / "broken.yaml"
    broken.write_text(EXAMPLE.read_text().replace("[10.0.0.0/8]", "[10.0.0.0/33]"))
    refused = run(fleet, "apply", "-f", str(broken))
    assert refused.returncode == 1
    assert "document 1 (line 23): spec.access.networks[0]" in refused.stderr
    assert "nothing was applied" in refused.stderr

    deleted = run(fleet, "delete", "tenant", "acme")
    assert deleted.returncode == 0, deleted.stderr
    assert "tenant/acme deleted" in deleted.stdout
    gone = run(fleet, "get", "tenant", "acme")
    assert gone.returncode == 1 and "tenant 'acme' not found" in gone.stderr
    assert "shop" in run(fleet, "get", "apps").stdout  # its apps stay
