"""``edgefleet testbed``: a fleet with real network distance on this machine, and its faults.

The test bed (and the hub's store under it) is imported by the commands that use it, not when
the ``edgefleet`` command starts: every other command, the agent's above all, goes without."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from edgefleet.cli.console import err, out

if TYPE_CHECKING:
    from edgefleet.testbed.bed import Testbed

testbed_app = typer.Typer(
    help="A fleet in network namespaces over an emulated WAN (root; Linux), and faults to inject.",
    no_args_is_help=True,
)
fault_app = typer.Typer(help="Inject a fault into the running test bed.", no_args_is_help=True)
testbed_app.add_typer(fault_app, name="fault")


WorkdirOption = Annotated[
    Path, typer.Option(help="Where the test bed keeps its record, logs and state.")
]
DEFAULT_WORKDIR = Path(".cache/testbed")


def fail(message: str) -> NoReturn:
    """Print an error and exit 1."""
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(1)


def _bed(workdir: Path) -> Testbed:
    from edgefleet.testbed.bed import Testbed, TestbedError

    try:
        return Testbed.load(workdir)
    except TestbedError as exc:
        fail(str(exc))


@testbed_app.command("up")
def up(
    sites: Annotated[
        int, typer.Option(help="Number of built-in sites (the demo's six first).", min=1)
    ] = 6,
    topology: Annotated[
        Path | None, typer.Option(help="Topology file (YAML) instead of --sites.")
    ] = None,
    workdir: WorkdirOption = DEFAULT_WORKDIR,
    db: Annotated[str | None, typer.Option(help="Hub database URL (default SQLite).")] = None,
) -> None:
    """Build the namespaces and the WAN, start the hub and every agent (safe to run again)."""
    from edgefleet.testbed.bed import ADMIN_TOKEN_FILE, Testbed, TestbedError
    from edgefleet.testbed.topology import default_topology, load_topology

    try:
        plan = load_topology(topology) if topology else default_topology(sites)
    except ValueError as exc:
        fail(str(exc))
    bed = Testbed(workdir=workdir.resolve(), topology=plan, db=db)
    try:
        bed.up()
    except TestbedError as exc:
        fail(f"{exc}; `edgefleet testbed down --workdir {workdir}` removes what was made")
    _print_status(bed)
    out.print(f"hub: {bed.hub_url}; to use it from this shell:")
    out.print(
        f"  export EDGEFLEET_HUB={bed.hub_url} EDGEFLEET_CA={bed.pki.ca_cert} "
        f"EDGEFLEET_TOKEN=$(cat {bed.workdir / ADMIN_TOKEN_FILE})"
    )


@testbed_app.command("down")
def down(workdir: WorkdirOption = DEFAULT_WORKDIR) -> None:
    """Stop everything and remove every namespace and link of the test bed."""
    bed = _bed(workdir.resolve())
    bed.down()
    out.print("test bed removed")


@testbed_app.command("status")
def status(
    workdir: WorkdirOption = DEFAULT_WORKDIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What runs, and the emulator's counters."""
    bed = _bed(workdir.resolve())
    if as_json:
        out.print_json(json.dumps(bed.status()))
        return
    _print_status(bed)


def _print_status(bed: Testbed) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("NODE", "NAMESPACE", "ADDRESS", "PROCESS"):
        table.add_column(column, no_wrap=True)
    table.add_row("hub", bed.hub_netns, "10.77.0.1", _state(bed, "hub"))
    for s in bed.topology.sites:
        table.add_row(s.name, bed.prefix + s.netns, s.address, _state(bed, f"agent:{s.name}"))
    for c in bed.topology.clients:
        table.add_row(c.node, bed.prefix + c.netns, c.address, "")
    out.print(table)
    stats = bed.status()["wan"]
    if stats:
        out.print(f"wan: {json.dumps(stats, separators=(',', ':'))}")
    else:
        out.print("wan: not running")


def _state(bed: Testbed, role: str) -> str:
    pid = bed.pids.get(role)
    if pid is None:
        return "stopped"
    return f"pid {pid}" if bed.alive(role) else f"dead (pid {pid})"


@testbed_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def exec_in(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="hub, a site, or clients-<region>.")],
    workdir: WorkdirOption = DEFAULT_WORKDIR,
) -> None:
    """Run a command inside a node's namespace: `edgefleet testbed exec paris -- ping ...`."""
    bed = _bed(workdir.resolve())
    if not ctx.args:
        fail("give the command after --, e.g. `edgefleet testbed exec paris -- ip addr`")
    try:
        namespace = bed.node_netns(node)
    except KeyError as exc:
        fail(str(exc.args[0]))
    os.execvp("ip", ["ip", "netns", "exec", namespace, *ctx.args])


@testbed_app.command("load")
def load(
    region: Annotated[str, typer.Argument(help="Client region to send from, e.g. eu-west.")],
    app: Annotated[str, typer.Option(help="App to send to.")],
    rps: Annotated[float, typer.Option(help="Requests started per second.", min=0.001)],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant of the app.")] = "demo",
    duration: Annotated[float, typer.Option(help="Seconds to send for.", min=0.1)] = 10.0,
    workdir: WorkdirOption = DEFAULT_WORKDIR,
) -> None:
    """Send load from a client region through the anycast DNS; print who served it."""
    from edgefleet.testbed.bed import TestbedError

    bed = _bed(workdir.resolve())
    try:
        run = bed.start_load(region, app=app, tenant=tenant, rps=rps, duration=duration)
    except KeyError as exc:
        fail(str(exc.args[0]))
    try:
        summary = run.wait(timeout=duration + 60)
    except TestbedError as exc:
        fail(str(exc))
    latency = summary["latencyMs"]
    out.print(
        f"{region} -> {summary['name']}: {summary['ok']} ok, {summary['failedTotal']} failed "
        f"{summary['failed'] or ''}; p50 {latency['p50']} ms, p99 {latency['p99']} ms; "
        f"served by {summary['servedBy']}"
    )
    for note in summary["notes"]:
        out.print(f"  note: {note}")


# -- faults --------------------------------------------------------------------------------------


def _fault(what: str, action: Callable[[], object]) -> None:
    from edgefleet.testbed.bed import TestbedError
    from edgefleet.testbed.wan import WanControlError

    try:
        action()
    except (TestbedError, WanControlError, KeyError, OSError, ValueError) as exc:
        fail(f"{what}: {exc.args[0] if isinstance(exc, KeyError) else exc}")
    out.print(what)


@fault_app.command("kill-site")
def kill_site(site: str, workdir: WorkdirOption = DEFAULT_WORKDIR) -> None:
    """Kill the site's agent and replicas (SIGKILL, all at once)."""
    bed = _bed(workdir.resolve())
    _fault(f"killed site {site}", lambda: bed.kill_site(site))


@fault_app.command("start-site")
def start_site(site: str, workdir: WorkdirOption = DEFAULT_WORKDIR) -> None:
    """Start the site's agent again (after kill-site)."""
    bed = _bed(workdir.resolve())
    _fault(f"started site {site}", lambda: bed.start_agent(site))


@fault_app.command("kill-hub")
def kill_hub(workdir: WorkdirOption = DEFAULT_WORKDIR) -> None:
    """Kill the hub (SIGKILL)."""
    bed = _bed(workdir.resolve())
    _fault("killed the hub", bed.kill_hub)


@fault_app.command("start-hub")
def start_hub(workdir: WorkdirOption = DEFAULT_WORKDIR) -> None:
    """Start the hub again."""
    bed = _bed(workdir.resolve())
    _fault("started the hub", bed.start_hub)


@fault_app.command("cut")
def cut(
    node: Annotated[str, typer.Argument(help="A site (or hub, or clients-<region>).")],
    other: Annotated[
        str | None, typer.Argument(help="Cut only from this node (e.g. hub); default: everything.")
    ] = None,
    workdir: WorkdirOption = DEFAULT_WORKDIR,
) -> None:
    """Drop every packet between NODE and OTHER, or between NODE and everything."""
    bed = _bed(workdir.resolve())
    what = f"cut {node} from {other or 'everything'}"
    _fault(what, lambda: bed.wan().cut(node, other))


@fault_app.command("heal")
def heal(
    node: Annotated[str | None, typer.Argument(help="Heal only this node's cuts.")] = None,
    other: Annotated[str | None, typer.Argument(help="Heal only the cut from this node.")] = None,
    workdir: WorkdirOption = DEFAULT_WORKDIR,
) -> None:
    """Undo cuts (all of them by default)."""
    bed = _bed(workdir.resolve())
    what = f"healed {node or 'every cut'}{f' from {other}' if other else ''}"
    _fault(what, lambda: bed.wan().heal(node, other))


@fault_app.command("link")
def link(
    node: str,
    other: str,
    delay: Annotated[
        float | None, typer.Option(help="One-way delay, ms, instead of the distance's.")
    ] = None,
    extra: Annotated[float | None, typer.Option(help="One-way ms added to the delay.")] = None,
    jitter: Annotated[float | None, typer.Option(help="± ms of uniform jitter.")] = None,
    loss: Annotated[float | None, typer.Option(help="Share of packets lost, 0..1.")] = None,
    oneway: Annotated[bool, typer.Option(help="Only from NODE to OTHER.")] = False,
    workdir: WorkdirOption = DEFAULT_WORKDIR,
) -> None:
    """Change the delay, jitter or loss of the link between two nodes."""
    bed = _bed(workdir.resolve())
    _fault(
        f"link {node} {'->' if oneway else '<->'} {other} changed",
        lambda: bed.wan().link(
            node, other, delay_ms=delay, extra_ms=extra, jitter_ms=jitter, loss=loss, oneway=oneway
        ),
    )


@fault_app.command("unlink")
def unlink(node: str, other: str, workdir: WorkdirOption = DEFAULT_WORKDIR) -> None:
    """Put the link between two nodes back to its distance's delay, no loss."""
    bed = _bed(workdir.resolve())
    _fault(f"link {node} <-> {other} restored", lambda: bed.wan().unlink(node, other))


@fault_app.command("restart-agent")
def restart_agent(site: str, workdir: WorkdirOption = DEFAULT_WORKDIR) -> None:
    """Stop the site's agent (its replicas keep running) and start it again."""
    bed = _bed(workdir.resolve())
    _fault(f"restarted the agent of {site}", lambda: bed.restart_agent(site))


@fault_app.command("reboot")
def reboot(
    site: str,
    hub_unreachable: Annotated[
        bool, typer.Option(help="Cut the site from the hub before it comes back.")
    ] = False,
    workdir: WorkdirOption = DEFAULT_WORKDIR,
) -> None:
    """Everything at the site dies, then its agent starts again."""
    bed = _bed(workdir.resolve())
    _fault(
        f"rebooted {site}{' (hub unreachable)' if hub_unreachable else ''}",
        lambda: bed.reboot_site(site, cut_hub=hub_unreachable),
    )
