"""``edgefleet testbed``: what it says when it cannot do what is asked (it changes nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgefleet.testbed import netns


def run_testbed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", "testbed", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def test_commands_without_a_test_bed_say_how_to_make_one(tmp_path: Path) -> None:
    for args in (["status"], ["down"], ["fault", "kill-hub"], ["exec", "paris", "--", "true"]):
        done = run_testbed(*args, "--workdir", str(tmp_path / "none"))
        assert done.returncode == 1, done
        assert "no test bed in" in done.stderr and "edgefleet testbed up" in done.stderr


def test_a_bad_topology_file_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    topology = tmp_path / "bed.yaml"
    topology.write_text("sites:\n  - {name: a, region: r, lat: 100, lon: 0}\n")
    done = run_testbed("up", "--topology", str(topology), "--workdir", str(tmp_path / "bed"))
    assert done.returncode == 1
    assert "sites[0].lat: expected -90 to 90 degrees" in done.stderr
    assert not netns.exists("ef-s-a") and not (tmp_path / "bed").exists()
