"""What ``edgefleet agent`` loads: the agent's own code, and none of what only the hub, the
other commands or the other drivers need (memory every site would pay for nothing).

Checked in a fresh interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

AGENT_START = """
import json, sys
import typer.main
from edgefleet.cli.main import app
typer.main.get_command(app)  # every command declared, as when `edgefleet` starts
import edgefleet.agent.service  # what `edgefleet agent` imports
import edgefleet.agent.drivers.process  # its default driver
print(json.dumps(sorted(sys.modules)))
"""

NOT_IN_AN_AGENT = {
    "alembic": "the hub's migrations",
    "sqlalchemy": "the hub's store",
    "edgefleet.hub": "the hub",
    "edgefleet.testbed": "the test bed",
    "edgefleet.localfleet": "the local fleet (demo, tests)",
    "edgefleet.client": "the client library",
    "edgefleet.placement": "placement (the hub's)",
    "numpy": "placement's arithmetic",
    "fastapi": "the hub's API framework",
    "httpx": "an HTTP client the agent does without",
    "jwt": "a JWT library the agent does without",
    "rich": "the CLI's tables",
    "yaml": "manifest reading",
    "kubernetes": "the kubernetes driver's client",
    "edgefleet.agent.drivers.kubernetes": "the kubernetes driver",
}
"""Packages an agent with the process driver must not load, and what they are for."""


@pytest.fixture(scope="module")
def agent_modules() -> set[str]:
    """The modules loaded once ``edgefleet agent`` is ready to run its agent."""
    done = subprocess.run(
        [sys.executable, "-c", AGENT_START], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("package", sorted(NOT_IN_AN_AGENT))
def test_the_agent_does_not_load(agent_modules: set[str], package: str) -> None:
    loaded = sorted(m for m in agent_modules if m == package or m.startswith(package + "."))
    assert not loaded, f"an agent loads {NOT_IN_AN_AGENT[package]}: {', '.join(loaded[:5])}"


def test_the_check_sees_the_agent(agent_modules: set[str]) -> None:
    # The subprocess did import the agent: an empty list would pass every test above.
    assert {"edgefleet.agent.service", "edgefleet.agent.local_api", "uvicorn"} <= agent_modules
