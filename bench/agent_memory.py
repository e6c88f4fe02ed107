"""A site agent's memory: its resident set with one app running, next to the 60 MiB target.

Starts a fleet of one site on its own loopback address (``LocalFleet``: a hub process, then the
site's agent as ``edgefleet agent`` with the process driver), applies the sample app ``hello``
with one replica there, waits until the hub sees it ready, lets the agent settle for
``--settle`` seconds (heartbeats, reports, probes) and reads the agent's ``VmRSS`` and its peak
(``VmHWM``) from ``/proc``. The replica is a process of its own, not counted.

The agent's modules are byte-compiled first, as installing the package does; ``--no-compile``
runs them as they are (in a checkout with ``PYTHONDONTWRITEBYTECODE`` set, compiled from source
at start, which leaves its peak behind).

    .venv/bin/python bench/agent_memory.py [--settle 5] [--no-compile]

For reference, the agents of comparable systems: KubeEdge's EdgeCore about 70 MB, Open Cluster
Management's klusterlet 71 MB.
"""

from __future__ import annotations

import argparse
import compileall
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgefleet
from bench.kube_cluster import rss_mib
from edgefleet.localfleet import LocalFleet, free_port, wait_for
from tests.factories import make_app, make_site

TARGET_MIB = 60.0
"""What an agent may hold, with an app running."""
SITE_IP = "127.0.97.1"


@dataclass(frozen=True)
class AgentMemory:
    """One agent's memory, read from ``/proc/PID/status``."""

    rss: float
    """Resident set (``VmRSS``) once settled, MiB."""
    peak: float
    """Largest resident set so far (``VmHWM``), MiB."""


def peak_mib(pid: int) -> float:
    """The largest resident set a process has had, MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_agent(*, settle: float = 5.0, compile_bytecode: bool = True) -> AgentMemory:
    """Run a hub and one agent with ``hello`` ready at its site; the agent's memory after
    ``settle`` seconds. ``compile_bytecode``: byte-compile edgefleet first (as installed)."""
    if compile_bytecode:
        compileall.compile_dir(Path(edgefleet.__file__).parent, quiet=1)
    with tempfile.TemporaryDirectory(prefix="edgefleet-agent-memory-") as tmp:
        fleet = LocalFleet(workdir=Path(tmp), hub_port=free_port(), dns_port=free_port())
        site = make_site("paris", ip=SITE_IP, port=free_port(SITE_IP))
        with fleet.running():
            fleet.start_hub()
            with fleet.client() as client:
                client.apply(site)
                fleet.start_agent(site)
                client.apply(make_app())

            def ready() -> bool:
                with fleet.client() as client:
                    return client.get_app("demo", "hello").status.ready_replicas >= 1

            wait_for(ready, timeout=60, interval=0.2, what="hello ready at paris")
            time.sleep(settle)
            pid = fleet.agents["paris"].pid
            return AgentMemory(rss=rss_mib(pid), peak=peak_mib(pid))


def measure_agent_rss(*, settle: float = 5.0, compile_bytecode: bool = True) -> float:
    """The agent's resident set, MiB, with one app running (see ``measure_agent``)."""
    return measure_agent(settle=settle, compile_bytecode=compile_bytecode).rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after ready")
    parser.add_argument(
        "--no-compile", action="store_true", help="do not byte-compile edgefleet first"
    )
    args = parser.parse_args()

    memory = measure_agent(settle=args.settle, compile_bytecode=not args.no_compile)
    how = "as they are" if args.no_compile else "byte-compiled"
    print(f"agent with one app running (process driver, loopback; its modules {how}), MiB:")
    print(f"  RSS       {memory.rss:6.1f}   (target {TARGET_MIB:.0f})")
    print(f"  peak RSS  {memory.peak:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
