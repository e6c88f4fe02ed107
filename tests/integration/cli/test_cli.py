"""The ``edgefleet`` command against a real hub and agent, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgefleet.localfleet import LocalFleet, wait_for
from tests.factories import make_site

pytestmark = pytest.mark.slow

APP = """\
apiVersion: edgefleet.io/v1alpha1
kind: App
metadata:
  name: hello
  tenant: demo
spec:
  workload:
    type: process
    command: edgefleet-hello
  placement:
    replicas: {replicas}
"""

SITE = """\
apiVersion: edgefleet.io/v1alpha1
kind: Site
metadata:
  name: {name}
spec:
  region: eu-west
  zone: eu-west-a
  location: {{lat: 48.85, lon: 2.35}}
  addresses: {{ip: {ip}}}
"""


def run(
    fleet: LocalFleet, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a separate process talking to ``fleet``'s hub."""
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "EDGEFLEET_HUB": fleet.hub_url,
            "EDGEFLEET_TOKEN": fleet.admin_token or "",
            "COLUMNS": "200",
            **(env or {}),
        },
        check=False,
    )


@pytest.fixture
def cli_fleet(sqlite_fleet: LocalFleet, tmp_path: Path) -> Iterator[LocalFleet]:
    """A hub with one site, registered through the CLI, and its agent running."""
    (tmp_path / "site.yaml").write_text(SITE.format(name="paris", ip="127.0.40.1"))
    result = run(sqlite_fleet, "apply", "-f", str(tmp_path / "site.yaml"))
    assert result.returncode == 0, result.stderr
    assert "site/paris created" in result.stdout
    sqlite_fleet.start_agent(make_site("paris", ip="127.0.40.1"))
    yield sqlite_fleet


def test_apply_get_describe_logs_delete(cli_fleet: LocalFleet, tmp_path: Path) -> None:
    fleet = cli_fleet
    manifest = tmp_path / "hello.yaml"
    manifest.write_text(APP.format(replicas=2))
    applied = run(fleet, "apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    assert "app/hello in tenant demo created" in applied.stdout
    assert "unchanged" in run(fleet, "apply", "-f", str(manifest)).stdout

    with fleet.client() as client:
        wait_for(
            lambda: client.get_app("demo", "hello").status.ready_replicas == 2,
            timeout=30,
            what="2 ready replicas",
        )

    table = run(fleet, "get", "apps")
    assert table.returncode == 0
    assert "hello" in table.stdout and "2/2" in table.stdout and "paris(2/2)" in table.stdout
    wide = run(fleet, "get", "sites", "-o", "wide")
    assert "127.0.40.1:8080" in wide.stdout and "Ready" in wide.stdout
    as_json = json.loads(run(fleet, "get", "app", "hello", "-o", "json").stdout)
    assert as_json["kind"] == "App" and as_json["status"]["readyReplicas"] == 2
    as_yaml = yaml.safe_load(run(fleet, "get", "sites", "-o", "yaml").stdout)
    assert as_yaml["kind"] == "SiteList"
    assert [i["metadata"]["name"] for i in as_yaml["items"]] == ["paris"]

    described = run(fleet, "describe", "app", "hello")
    assert described.returncode == 0
    assert "Events:" in described.stdout and "Placed" in described.stdout
    site_page = run(fleet, "describe", "site", "paris")
    assert "demo-hello-0" in site_page.stdout and "demo-hello-1" in site_page.stdout

    # The replicas log every request; fetch one, then read it back through hub and agent.
    with fleet.client() as client:
        replica = client.site_replicas("paris")["demo/hello"][0]
    import httpx

    httpx.get(f"http://127.0.40.1:{replica.port}/", timeout=3)
    logs = run(fleet, "logs", "hello", "--site", "paris")
    assert logs.returncode == 0, logs.stderr
    assert "==> demo-hello-0 <==" in logs.stdout
    assert '"GET / HTTP/1.1" 200' in logs.stdout or "GET /" in logs.stdout

    deleted = run(fleet, "delete", "app", "hello")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    missing = run(fleet, "get", "app", "hello")
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_bad_manifest_is_refused_whole(cli_fleet: LocalFleet, tmp_path: Path) -> None:
    fleet = cli_fleet
    good = APP.format(replicas=1)
    bad = APP.format(replicas=-3).replace("name: hello", "name: second")
    path = tmp_path / "apps.yaml"
    path.write_text(good + "---\n" + bad)
    result = run(fleet, "apply", "-f", str(path))
    assert result.returncode == 1
    assert f"{path}, document 2 (line 23): spec.placement.replicas:" in result.stderr
    assert "greater than or equal to 0" in result.stderr
    assert "nothing was applied" in result.stderr
    # The good first document was not stored either.
    assert json.loads(run(fleet, "get", "apps", "-o", "json").stdout)["items"] == []


def test_apply_from_stdin_and_directory(cli_fleet: LocalFleet, tmp_path: Path) -> None:
    fleet = cli_fleet
    piped = run(fleet, "apply", "-f", "-", stdin=APP.format(replicas=1))
    assert piped.returncode == 0 and "app/hello in tenant demo created" in piped.stdout
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.yaml").write_text(APP.format(replicas=2))
    from_dir = run(fleet, "apply", "-f", str(tmp_path / "dir"))
    assert "configured" in from_dir.stdout


def test_errors_are_clear(sqlite_fleet: LocalFleet, tmp_path: Path) -> None:
    missing = run(sqlite_fleet, "apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    unknown = run(sqlite_fleet, "describe", "site", "atlantis")
    assert unknown.returncode == 1 and "site 'atlantis' not found" in unknown.stderr
    away = run(sqlite_fleet, "get", "sites", env={"EDGEFLEET_HUB": "http://127.0.0.1:9"})
    assert away.returncode == 1 and "cannot reach the hub at http://127.0.0.1:9" in away.stderr


def test_contexts_file(sqlite_fleet: LocalFleet, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"current-context": "lab", "contexts": {"lab": {"hub": sqlite_fleet.hub_url}}}
        )
    )
    env = {"EDGEFLEET_CONFIG": str(config), "EDGEFLEET_HUB": ""}
    result = run(sqlite_fleet, "version", env=env)
    assert result.returncode == 0
    assert f"at {sqlite_fleet.hub_url}" in result.stdout
