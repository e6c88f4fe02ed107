"""``edgefleet sim``: thousands of simulated sites speaking the real agent protocol."""

from __future__ import annotations

import logging
import resource
import sys
from typing import Annotated

import typer

from edgefleet.cli import loop
from edgefleet.sim import SimConfig

log = logging.getLogger(__name__)

DEFAULTS = SimConfig()


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:7790")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise typer.BadParameter(f"{value!r}: the control API serves loopback only")
    return host, int(port)


def raise_file_limit(sites: int, connections: int = DEFAULTS.connections) -> None:
    """Each site keeps two or three connections open (here, and at the hub: one started from
    this process inherits the limit): ask for enough file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, sites * 3 + 2 * connections + 1024))
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < sites * 3:
        log.warning(
            "only %d file descriptors for %d sites: raise the hard limit (ulimit -Hn)",
            wanted,
            sites,
        )


def sim(
    sites: Annotated[int, typer.Option(min=1, max=1 << 22, help="How many sites.")] = 100,
    prefix: Annotated[str, typer.Option(help="Sites are named <prefix>00001...")] = "sim-",
    create: Annotated[
        bool, typer.Option(help="Create the sites on the hub (else they must exist).")
    ] = True,
    ready_delay: Annotated[
        float, typer.Option(help="Seconds from a replica's start to its readiness.")
    ] = DEFAULTS.ready_delay,
    heartbeat_interval: Annotated[
        float, typer.Option(help="Seconds between heartbeats (the hub may ask for longer).")
    ] = DEFAULTS.heartbeat_interval,
    watch_timeout: Annotated[
        float, typer.Option(help="Seconds each long-poll waits at the hub.")
    ] = DEFAULTS.watch_timeout,
    demand_rps: Annotated[
        float, typer.Option(help="Requests a second each site reports per app it runs.")
    ] = DEFAULTS.demand_rps,
    start_over: Annotated[
        float, typer.Option(help="Seconds over which the sites' first calls are spread.")
    ] = DEFAULTS.start_over,
    control: Annotated[
        str, typer.Option(help="HOST:PORT of the control API (loopback; 'off' for none).")
    ] = "127.0.0.1:7790",
    connections: Annotated[
        int,
        typer.Option(min=1, help="Connections the sites' reports share (and their heartbeats)."),
    ] = DEFAULTS.connections,
    seed: Annotated[int, typer.Option(help="Seed of the sites' places.")] = 7,
    log_level: Annotated[str, typer.Option(help="debug, info, warning.")] = "warning",
) -> None:
    """Run simulated sites against the hub of the current context (EDGEFLEET_HUB,
    EDGEFLEET_TOKEN: an admin's or operator's token, to create the sites and their join tokens),
    until interrupted."""
    from edgefleet import pauses
    from edgefleet.client import HubError
    from edgefleet.client.config import load_context
    from edgefleet.sim import world_sites
    from edgefleet.sim.control import register, serve

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    listen = None if control == "off" else _listen(control)
    # This process is the simulator's alone: its sites stay out of full collections.
    pauses.watch(freeze=True)
    context = load_context()
    raise_file_limit(sites, connections)
    made = world_sites(sites, prefix=prefix, seed=seed)
    try:
        tokens = register(made, hub=context.hub, token=context.token, ca=context.ca, create=create)
    except HubError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    config = SimConfig(
        hub=context.hub,
        ca=context.ca,
        ready_delay=ready_delay,
        heartbeat_interval=heartbeat_interval,
        watch_timeout=watch_timeout,
        demand_rps=demand_rps,
        start_over=start_over,
        connections=connections,
    )
    where = f"; control API on http://{listen[0]}:{listen[1]}" if listen else ""
    typer.echo(f"{sites} simulated sites ({prefix}...) joining {context.hub}{where}")
    loop.run(serve(config, tokens, control=listen))
