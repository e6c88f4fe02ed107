"""``edgefleet demo``, run as ``make demo`` runs it: six sites, the sample app, a real check."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgefleet.localfleet import free_port

pytestmark = pytest.mark.slow


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the demo CLI in its own process with its own contexts file."""
    port, dns_port = free_port(), free_port()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edgefleet",
            "demo",
            "--workdir",
            str(tmp_path / "demo"),
            "--hub-port",
            str(port),
            "--dns-port",
            str(dns_port),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EDGEFLEET_CONFIG": str(tmp_path / "config.yaml"), "COLUMNS": "120"},
        check=False,
    )


def test_demo_check_tours_traffic_placement_and_verifies_every_edge_dns(tmp_path: Path) -> None:
    result = demo(tmp_path, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for site in ("paris", "london", "new-york", "boston", "tokyo", "singapore"):
        assert f"site {site}" in out
    steps = [line.strip() for line in out.splitlines()]
    assert any(s.startswith("ok") and "replicas follow clients to eu-west" in s for s in steps)
    assert any(s.startswith("ok") and "goes to zero, stays placed" in s for s in steps)
    woke = [s for s in steps if "succeeds through the activator" in s]
    assert len(woke) == 1 and woke[0].startswith("ok"), woke
    assert "served by paris" in woke[0] or "served by london" in woke[0]
    assert "3 of 3 tour steps passed" in out
    dns_lines = [line for line in out.splitlines() if "dns at" in line]
    assert len(dns_lines) == 6 and all(line.strip().startswith("ok") for line in dns_lines)
    assert "6 of 6 edge DNS answered as routed" in out
    assert "check passed" in out
    # The demo left a CLI context behind for `edgefleet get sites` in another shell.
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["current-context"] == "demo"
    hub = config["contexts"]["demo"]["hub"]
    assert hub.startswith("http://127.0.0.1:")
    # It printed where its web UI is and where the token to sign in with is kept (never the
    # token itself).
    assert f"web UI: {hub}/ui" in out
    token_file = tmp_path / "demo" / "admin-token"
    assert token_file.read_text().strip() == config["contexts"]["demo"]["token"]
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert config["contexts"]["demo"]["token"] not in out
    # ... and no process: every replica it started (HOST=127.0.1.k) is gone.
    assert demo_replicas() == []


def demo_replicas() -> list[int]:
    """PIDs of sample-app processes bound to the demo's site addresses."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone while we looked
        if b"edgefleet-hello" in cmdline and any(e.startswith(b"HOST=127.0.1.") for e in environ):
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
            if state != "Z":
                found.append(int(proc.name))
    return found


def test_demo_with_simulated_sites_and_a_duration_stops_by_itself(tmp_path: Path) -> None:
    result = demo(tmp_path, "--duration", "2", "--no-tour", "--simulated", "200")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "every edge DNS answers for it" in out, out
    # The simulated sites joined: the hub lists them Ready beside the real ones.
    assert "fleet: 206 sites Ready in the hub's list, 6 real and 200 simulated" in out, out
    assert "applied app telemetry: one replica at every simulated site, 200 ready" in out, out
    # The central DNS locates a client at a simulated site there, and answers with that site
    # first (it runs telemetry), then another simulated one.
    [line] = [line for line in out.splitlines() if line.startswith("central DNS, for a client")]
    asker = re.search(r"client at (sim-\d+) ", line)
    answer = line.rsplit(" -> ", 1)[1].split(", ")
    assert asker and answer[0] == asker[1] and all(a.startswith("sim-") for a in answer), line
    # hello stays at the real sites, whose edge DNS all still answer for it.
    assert "hello still placed at real sites only, every edge DNS answers for it with 206" in out
    assert "stopping the fleet" in out, out
    # ... and the simulated sites' process is gone with the demo.
    pid = re.search(r"edgefleet sim: pid (\d+)", out)
    assert pid and not Path(f"/proc/{pid[1]}").exists(), out


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "precious.txt").write_text("keep me")
    result = demo(tmp_path, "--check")
    assert result.returncode == 1
    assert "was not made by a demo" in result.stdout
    assert (tmp_path / "demo" / "precious.txt").exists()
