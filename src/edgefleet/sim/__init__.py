"""Simulated sites: thousands of them in one process, speaking the real agent protocol.

``edgefleet sim --sites N`` creates N sites on the hub (``world.world_sites``: nine regions),
makes them join tokens in bulk, and runs them (``fleet.SimFleet``) until interrupted. A control
API on loopback (``control``) tells what they do and makes them die, come back or fail.
"""

from __future__ import annotations

from edgefleet.sim.fleet import SimConfig, SimFleet, SimSite, SimStats, rss_bytes, wait_joined
from edgefleet.sim.world import REGIONS, address, world_sites

__all__ = [
    "REGIONS",
    "SimConfig",
    "SimFleet",
    "SimSite",
    "SimStats",
    "address",
    "rss_bytes",
    "wait_joined",
    "world_sites",
]
