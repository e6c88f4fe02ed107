"""Running a simulated fleet: create its sites on the hub, join them, serve a control API.

The control API answers on loopback only (it can kill sites; nothing else should reach it):

- ``GET /stats``: sites running, killed, joined; replicas and ready ones; memory per site;
- ``GET /sites``: the sites' names;
- ``POST /kill`` ``{"sites": [...]}`` or ``{"fraction": 0.01, "seed": 1}``: stop sites now;
- ``POST /revive`` ``{"sites": [...]}``: start them again;
- ``POST /fail`` ``{"app": "tenant/app", "sites": [...], "failing": true}``: make an app's
  replicas fail at sites (or recover).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from edgefleet.client import Client
from edgefleet.model import Site
from edgefleet.sim.fleet import SimConfig, SimFleet

log = logging.getLogger(__name__)

JOIN_BATCH = 5000
"""Join tokens asked in one call."""


class KillRequest(BaseModel):
    """Which sites to stop: named, or a random fraction of the running ones."""

    sites: list[str] = Field(default_factory=list)
    fraction: float | None = Field(default=None, gt=0, le=1)
    seed: int = 1


class SitesRequest(BaseModel):
    """Sites to act on."""

    sites: list[str]


class FailRequest(BaseModel):
    """An app whose replicas fail (or recover) at some sites."""

    app: str = Field(description="tenant/app")
    sites: list[str]
    failing: bool = True


def control_api(fleet: SimFleet) -> FastAPI:
    """The control API of a running fleet (see the module)."""
    api = FastAPI(title="edgefleet sim")
    # Every endpoint is async: it runs on the fleet's loop, which owns the sites' tasks.

    @api.get("/stats")
    async def stats() -> dict[str, Any]:
        now = fleet.stats()
        return {**asdict(now), "bytesPerSite": now.bytes_per_site}

    @api.get("/sites")
    async def sites() -> list[str]:
        return fleet.names

    @api.post("/kill")
    async def kill(request: KillRequest) -> dict[str, list[str]]:
        names = request.sites
        if request.fraction is not None:
            running = [n for n in fleet.names if n not in fleet.killed]
            count = max(1, round(len(running) * request.fraction))
            names = random.Random(request.seed).sample(running, min(count, len(running)))
        if not names:
            raise HTTPException(422, "name the sites to kill, or give a fraction")
        return {"killed": fleet.kill(names)}

    @api.post("/revive")
    async def revive(request: SitesRequest) -> dict[str, list[str]]:
        return {"revived": fleet.revive(request.sites)}

    @api.post("/fail")
    async def fail(request: FailRequest) -> dict[str, list[str]]:
        return {"sites": fleet.fail(request.app, request.sites, request.failing)}

    return api


def register(
    sites: Sequence[Site], *, hub: str, token: str | None, ca: str | None, create: bool
) -> dict[str, str | None]:
    """Create ``sites`` on the hub (when ``create``) and make each a join token; returns the
    tokens by site (blocking)."""
    names = [s.metadata.name for s in sites]
    with Client(hub, token=token, ca=ca, timeout=300.0) as client:
        if create:
            started = time.monotonic()
            bulk = getattr(client, "apply_many", None)
            if bulk is not None:
                bulk(list(sites))
            else:
                for site in sites:
                    client.apply(site)
            log.info("created %d sites in %.1fs", len(sites), time.monotonic() - started)
        tokens: dict[str, str | None] = {}
        for start in range(0, len(names), JOIN_BATCH):
            batch = names[start : start + JOIN_BATCH]
            for name, made in zip(batch, client.join_tokens(batch), strict=True):
                tokens[name] = made.token
    return tokens


class _Server(uvicorn.Server):
    """uvicorn inside the simulator's loop: the simulator owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    config: SimConfig,
    tokens: dict[str, str | None],
    *,
    control: tuple[str, int] | None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run the fleet (and its control API) until SIGINT or SIGTERM."""
    fleet = SimFleet(config)
    await fleet.start(tokens)
    server: _Server | None = None
    tasks: list[asyncio.Task[Any]] = []
    if control is not None:
        host, port = control
        server = _Server(
            uvicorn.Config(
                control_api(fleet), host=host, port=port, log_level="warning", access_log=False
            )
        )
        tasks.append(asyncio.create_task(server.serve()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    log.info("%d simulated sites talking to %s", len(tokens), config.hub)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        if server is not None:
            server.should_exit = True
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5.0)
        await fleet.stop()
