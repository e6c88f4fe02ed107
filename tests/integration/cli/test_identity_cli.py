"""``edgefleet token``, ``whoami``, ``site join-token`` and ``audit`` against a real hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgefleet.localfleet import LocalFleet
from tests.factories import make_site

pytestmark = pytest.mark.slow


def run(
    fleet: LocalFleet, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "EDGEFLEET_HUB": fleet.hub_url,
            "EDGEFLEET_TOKEN": token or fleet.admin_token or "",
            "EDGEFLEET_CONFIG": os.devnull,
            "COLUMNS": "200",
        },
    )


def test_tokens_whoami_join_tokens_and_audit(sqlite_fleet: LocalFleet) -> None:
    made = run(
        sqlite_fleet,
        "token",
        "create",
        "dana",
        "--role",
        "developer",
        "-t",
        "shop",
        "--ttl",
        "30d",
        "-o",
        "json",
    )
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert token["role"] == "developer" and token["tenants"] == ["shop"]
    me = run(sqlite_fleet, "whoami", token=token["token"])
    assert me.returncode == 0 and me.stdout.startswith("dana: developer in tenants shop"), me.stdout
    listed = run(sqlite_fleet, "token", "list")
    assert token["id"] in listed.stdout and "dana" in listed.stdout
    assert token["token"] not in listed.stdout
    # A developer cannot make tokens; a clear refusal, exit 1.
    refused = run(sqlite_fleet, "token", "create", "x", "--role", "admin", token=token["token"])
    assert refused.returncode == 1 and "role developer may not make tokens" in refused.stderr
    bad = run(sqlite_fleet, "token", "create", "x", "--role", "developer")
    assert bad.returncode == 1 and "name at least one" in bad.stderr
    bad_ttl = run(
        sqlite_fleet, "token", "create", "x", "--role", "viewer", "-t", "a", "--ttl", "soon"
    )
    assert bad_ttl.returncode == 1 and "--ttl" in bad_ttl.stderr
    with sqlite_fleet.client() as admin:
        admin.apply(make_site("paris"))
    join = run(sqlite_fleet, "site", "join-token", "paris", "--ttl", "10m")
    assert join.returncode == 0 and join.stdout.strip().splitlines()[-1].startswith("efj_")
    missing = run(sqlite_fleet, "site", "join-token", "atlantis")
    assert missing.returncode == 1 and "site 'atlantis' not found" in missing.stderr
    revoked = run(sqlite_fleet, "token", "revoke", token["id"])
    assert revoked.returncode == 0
    after = run(sqlite_fleet, "whoami", token=token["token"])
    assert after.returncode == 1 and "revoked" in after.stderr
    audit = run(sqlite_fleet, "audit", "--action", "revoke", "-o", "json")
    entries = json.loads(audit.stdout)
    assert [(e["action"], e["status"], e["path"]) for e in entries] == [
        ("revoke token", 204, f"/api/v1/tokens/{token['id']}")
    ]
    table = run(sqlite_fleet, "audit", "--failed")
    assert "create token" in table.stdout and "403" in table.stdout and "dana" in table.stdout
