"""``edgefleet demo``: a hub and six sites on this machine, running the sample app.

The sample app ``hello`` is placed by traffic. The demo tours what that means: clients near
Paris send load and replicas appear in Europe; the clients move to New York, replicas follow and
Europe goes to zero (still placed); then one request from Paris wakes Europe again through the
activator. ``--check`` checks each step and every edge DNS, and exits. ``--simulated N`` adds N
simulated sites around the real ones (``edgefleet.cli.demo_fleet``).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgefleet.cli import demo_fleet
from edgefleet.cli.load import spec_for_site, tick_line
from edgefleet.cli.output import apps_table, sites_table
from edgefleet.cli.sim import raise_file_limit
from edgefleet.client import Client, Context, save_context
from edgefleet.hub.health import GRACE_BEATS
from edgefleet.loadgen import LoadSummary, Tick, run_load
from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import MAX_APPLY, App, Site, SitePhase
from edgefleet.model.manifests import load_text
from edgefleet.sim import SimConfig

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def sample_manifests() -> tuple[list[Site], App]:
    """The bundled demo sites and the ``hello`` app."""
    folder = resources.files("edgefleet.samples") / "manifests"
    sites = [m.obj for m in load_text((folder / "sites.yaml").read_text(), "sites.yaml")]
    hello = load_text((folder / "hello.yaml").read_text(), "hello.yaml")[0].obj
    assert isinstance(hello, App)
    return [s for s in sites if isinstance(s, Site)], hello


def ask_dns(ip: str, port: int, fqdn: str, *, subnet: str | None = None) -> list[str]:
    """The A records a DNS server answers for ``fqdn`` (empty on NODATA or no answer), asked
    for clients in ``subnet`` (EDNS Client Subnet) if given."""
    if subnet is None:
        query = dns.message.make_query(fqdn, dns.rdatatype.A)
    else:
        address, _, length = subnet.partition("/")
        ecs = dns.edns.ECSOption(address, int(length or 32))
        query = dns.message.make_query(fqdn, dns.rdatatype.A, use_edns=0, options=[ecs])
    try:
        reply = dns.query.udp(query, ip, port=port, timeout=1.0)
    except (OSError, dns.exception.DNSException):
        return []
    return [r.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for r in rrset]


def dns_rows(sites: list[Site], fqdn: str, central: tuple[str, int]) -> list[tuple[str, list[str]]]:
    """(asker, answered site names) for every site's edge DNS and the central DNS."""
    by_ip = {s.spec.addresses.ip: s.metadata.name for s in sites}
    rows = []
    for site in sites:
        answer = ask_dns(site.spec.addresses.ip, site.spec.addresses.dns_port, fqdn)
        rows.append((site.metadata.name, [by_ip.get(ip, ip) for ip in answer]))
    answer = ask_dns(*central, fqdn)
    rows.append(("central", [by_ip.get(ip, ip) for ip in answer]))
    return rows


def dns_table(rows: list[tuple[str, list[str]]], fqdn: str) -> Table:
    """Who answers what for the sample app."""
    table = Table(box=None, header_style="bold")
    table.add_column("DNS AT", no_wrap=True)
    table.add_column(f"ANSWERS {fqdn} WITH", no_wrap=True)
    for asker, answer in rows:
        table.add_row(asker, ", ".join(answer) or "-")
    return table


def check_dns(
    client: Client, sites: list[Site], fqdn: str, central: tuple[str, int]
) -> list[tuple[str, list[str], str, bool]]:
    """Every site's edge DNS answers first what the hub's routing says it should.

    Returns (site, answered sites, expected first site, ok) per site.
    """
    expected = {
        s.metadata.name: client.explain_dns(fqdn, site=s.metadata.name)["answer"][0]["site"]
        for s in sites
    }
    answers = dict(dns_rows(sites, fqdn, central))
    return [
        (site, answers[site], want, bool(answers[site]) and answers[site][0] == want)
        for site, want in expected.items()
    ]


@dataclass(frozen=True)
class Step:
    """One step of the tour, checked."""

    what: str
    ok: bool
    detail: str


def region_of(sites: list[Site], name: str) -> str:
    """The region of the site called ``name``."""
    return next(s.spec.region for s in sites if s.metadata.name == name)


def replicas_by_region(client: Client, sites: list[Site], tenant: str, name: str) -> dict[str, int]:
    """Ready replicas of the app per region."""
    out: dict[str, int] = {}
    for placed in client.get_app(tenant, name).status.sites:
        region = region_of(sites, placed.site)
        out[region] = out.get(region, 0) + placed.ready
    return out


def asleep_in(client: Client, sites: list[Site], tenant: str, name: str, region: str) -> bool:
    """True when the app is placed in ``region`` at zero replicas only (wakeable)."""
    placed = [
        s for s in client.get_app(tenant, name).status.sites if region_of(sites, s.site) == region
    ]
    return bool(placed) and all(
        s.wakeable and s.desired == 0 and s.ready == 0 and s.running == 0 for s in placed
    )


def send_load(site: Site, app: App, *, rps: float, seconds: float, work_ms: int) -> LoadSummary:
    """What ``edgefleet load --from SITE`` does, printing a line a second."""
    spec = spec_for_site(
        site,
        app=app.metadata.name,
        tenant=app.metadata.tenant or "",
        rps=rps,
        duration=seconds,
        work_ms=work_ms,
        timeout=40,
    )

    def every_five(tick: Tick) -> None:
        if tick.second % 5 == 0 or tick.failed:
            console.print("   " + tick_line(tick))

    return asyncio.run(run_load(spec, on_second=every_five))


def shown_apps(client: Client) -> list[App]:
    """The apps of the demo's tables: all but ``telemetry``, whose thousands of sites would not
    fit a row (the simulated sites' own line counts its replicas)."""
    return [a for a in client.list_apps() if a.metadata.name != demo_fleet.APP]


def add_simulated(
    fleet: LocalFleet, client: Client, real: list[Site], count: int, *, tenant: str
) -> str:
    """Create ``count`` simulated sites around ``real`` and run them; wait until the hub lists
    them all Ready beside the real ones; run ``telemetry`` at each of them, and show what the
    central DNS answers a client at one. Returns the simulated sites' control API."""
    made = demo_fleet.simulated_sites(real, count)
    started = time.monotonic()
    console.print(
        f"adding {count} simulated sites around the real ones ({made[0].metadata.name} to "
        f"{made[-1].metadata.name}), run by edgefleet sim in a process of its own"
    )
    client.apply_many(made, chunk=MAX_APPLY)
    sim = fleet.start_sim(
        count, prefix=demo_fleet.PREFIX, start_over=count / demo_fleet.JOINS_PER_SECOND
    )
    url = sim.control
    console.print(
        f"  edgefleet sim: pid {sim.process.pid}, control API on {url} "
        f'(GET /stats; POST /kill {{"sites": [...]}})'
    )
    total = count + len(real)

    late: list[Site] = []

    def all_ready() -> bool:
        late[:] = [s for s in client.iter_sites() if s.status.phase != SitePhase.READY]
        return not late

    try:
        wait_for(
            all_ready,
            timeout=60 + 2 * count / demo_fleet.JOINS_PER_SECOND,
            interval=1.0,
            what=f"{total} sites to be Ready",
        )
    except TimeoutError as exc:
        named = ", ".join(f"{s.metadata.name} {s.status.phase.value}" for s in late[:6])
        more = f" and {len(late) - 6} more" if len(late) > 6 else ""
        raise TimeoutError(f"{exc}; not Ready: {named}{more}") from None
    regions = sorted({s.spec.region for s in real})
    console.print(
        f"[green]fleet: {total} sites Ready in the hub's list[/], {len(real)} real and {count} "
        f"simulated, in {', '.join(regions)} ({time.monotonic() - started:.1f}s); "
        f"[bold]the map at {fleet.hub_url}/ui[/] shows them all"
    )
    started = time.monotonic()
    client.apply(demo_fleet.fleet_app(tenant, count))
    wait_for(
        lambda: client.get_app(tenant, demo_fleet.APP).status.ready_replicas >= count,
        timeout=60 + count / 100,
        interval=1.0,
        what=f"{demo_fleet.APP} to be ready at {count} simulated sites",
    )
    console.print(
        f"[green]applied app {demo_fleet.APP}[/]: one replica at every simulated site, "
        f"{count} ready {time.monotonic() - started:.1f}s later"
    )
    site, near, km = demo_fleet.farthest(made, real)
    ip = site.spec.addresses.ip
    fqdn = f"{demo_fleet.APP}.{tenant}.edge.internal"
    by_ip = {s.spec.addresses.ip: s.metadata.name for s in (*real, *made)}

    def answered() -> list[str] | None:
        want = client.explain_dns(fqdn, client_ip=ip)["answer"]
        answer = [
            by_ip.get(a, a)
            for a in ask_dns(fleet.hub_host, fleet.dns_port, fqdn, subnet=f"{ip}/32")
        ]
        return answer if answer and want and answer[0] == want[0]["site"] else None

    answer = wait_for(answered, timeout=20, what=f"the central DNS to answer for {fqdn}")
    console.print(
        f"[green]central DNS[/], for a client at {site.metadata.name} ({site.spec.region}, "
        f"{km:.0f} km from {near.metadata.name}): {fqdn} -> {', '.join(answer)}"
    )
    console.print(f"  try: dig @{fleet.hub_host} -p {fleet.dns_port} {fqdn} +subnet={ip}/32 +short")
    return url


def simulated_line(url: str) -> Text:
    """The simulated sites' line of the live view, as their process says."""
    try:
        return Text(demo_fleet.SimulatedStatus.read(url).line())
    except httpx.HTTPError as exc:
        return Text(f"+ simulated sites: edgefleet sim not answering ({exc})", style="red")


def traffic_tour(client: Client, sites: list[Site], app: App) -> list[Step]:
    """Move the sample app's clients from Europe to America and back; check what follows."""
    tenant, name = app.metadata.tenant or "", app.metadata.name
    by_name = {s.metadata.name: s for s in sites}
    paris, new_york = by_name["paris"], by_name["new-york"]
    europe, america = paris.spec.region, new_york.spec.region
    idle = app.spec.scaling.idle_timeout
    steps: list[Step] = []

    def show() -> None:
        console.print(apps_table(shown_apps(client)))

    console.print(
        f"\n[bold]1.[/] clients near paris: `edgefleet load --from paris --app {name} --rps 20 "
        "--work 50` for 20 s"
    )
    first = send_load(paris, app, rps=20, seconds=20, work_ms=50)
    by_region = {}
    try:
        wait_for(
            lambda: replicas_by_region(client, sites, tenant, name).get(europe, 0) > 0,
            timeout=30,
            what=f"replicas in {europe}",
        )
        here = True
    except TimeoutError:
        here = False
    by_region = replicas_by_region(client, sites, tenant, name)
    show()
    steps.append(
        Step(
            f"replicas follow clients to {europe}",
            here and first.failed_total == 0,
            f"{first.ok} of {first.sent} requests ok, served by "
            f"{dict(first.served_by)}; ready by region {by_region}",
        )
    )

    console.print(
        f"\n[bold]2.[/] the clients move to new-york: 20 requests/s for {idle + 15:g} s; "
        f"{europe} gets none, and after {idle:g} s idle goes to zero"
    )
    second = send_load(new_york, app, rps=20, seconds=idle + 15, work_ms=50)
    try:
        wait_for(
            lambda: (
                replicas_by_region(client, sites, tenant, name).get(america, 0) > 0
                and asleep_in(client, sites, tenant, name, europe)
            ),
            timeout=60,
            what=f"replicas in {america}, {europe} asleep",
        )
        moved = True
    except TimeoutError:
        moved = False
    show()
    steps.append(
        Step(
            f"replicas follow clients to {america}; {europe} goes to zero, stays placed",
            moved and second.failed_total == 0,
            f"{second.ok} of {second.sent} requests ok, served by {dict(second.served_by)}",
        )
    )

    console.print(
        f"\n[bold]3.[/] one request from paris, where {name} sleeps: the activator wakes it"
    )
    third = send_load(paris, app, rps=1, seconds=1, work_ms=0)
    latency = third.latency.p50_ms
    served = next(iter(third.served_by), "-")
    woke = third.ok == 1 and served in by_name and by_name[served].spec.region == europe
    steps.append(
        Step(
            "the first request in a sleeping region succeeds through the activator",
            woke,
            f"served by {served} in "
            + (f"{latency:.0f} ms (cold start included)" if latency is not None else "-"),
        )
    )
    show()
    return steps


def run_demo(
    *,
    workdir: Path,
    duration: float | None,
    check: bool,
    hub_port: int = 7700,
    dns_port: int = 5353,
    tour: bool = True,
    simulated: int = 0,
) -> int:
    """Bring the demo fleet up, deploy ``hello``, add ``simulated`` sites, then watch, wait or
    check; 0 on success."""
    sites, hello = sample_manifests()
    if simulated:
        # Only the real sites run processes (the tour sends them requests).
        hello = demo_fleet.kept_to(hello, sites)
        # The hub holds a connection per site; it inherits this process's limit.
        raise_file_limit(simulated + len(sites))
    marker = workdir / ".edgefleet-demo"
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.exists():
            console.print(
                f"[red]error:[/] {workdir} exists and was not made by a demo: "
                "choose another --workdir"
            )
            return 1
        shutil.rmtree(workdir)  # a demo starts clean; its state is disposable
    workdir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    fleet = LocalFleet(
        workdir=workdir.resolve(),
        hub_port=hub_port,
        dns_port=dns_port,
        # Demo timings: placement follows demand within seconds.
        placement_resync=2.0,
        demand_tau=5.0,
        demand_window=2.0,
        # Simulated sites beat at their own pace, all from one process: a few late beats on a
        # busy machine must not make them Unreachable (one beat more than the hub's own rule).
        heartbeat_grace=(
            max(LocalFleet.heartbeat_grace, (GRACE_BEATS + 1) * SimConfig().heartbeat_interval)
            if simulated
            else LocalFleet.heartbeat_grace
        ),
    )
    central = (fleet.hub_host, dns_port)
    started = time.monotonic()
    interrupted = False

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        with fleet.running():
            console.print(
                f"starting hub at {fleet.hub_url}, central DNS at {central[0]}:{central[1]} "
                f"(state in {workdir})"
            )
            fleet.start_hub()
            client = fleet.client()
            for site in sites:
                client.apply(site)
            fleet.start_agents(sites)
            for site in sites:
                addresses = site.spec.addresses
                console.print(
                    f"  site {site.metadata.name:<10} {site.spec.region:<8} agent on "
                    f"{addresses.ip}:{addresses.ingress_port}, edge DNS on "
                    f"{addresses.ip}:{addresses.dns_port}"
                )
            client.apply(hello)
            tenant, name = hello.metadata.tenant or "", hello.metadata.name
            fqdn = f"{name}.{tenant}.edge.internal"
            console.print(f"applied app {name} (tenant {tenant})")
            path = save_context(Context("demo", fleet.hub_url, fleet.admin_token))
            console.print(f"CLI context 'demo' written to {path}: try 'edgefleet get sites'")
            token_file = workdir / "admin-token"
            token_file.touch(mode=0o600)
            token_file.write_text(f"{fleet.admin_token}\n")
            console.print(
                f"[bold]web UI: {fleet.hub_url}/ui[/] (sign in with the admin token in "
                f"{token_file})"
            )

            real_ips = {s.spec.addresses.ip for s in sites}

            def every_edge_dns() -> bool:
                """Every edge DNS answers for the app, with real sites only."""
                answers = [
                    ask_dns(s.spec.addresses.ip, s.spec.addresses.dns_port, fqdn) for s in sites
                ]
                return all(answers) and all(set(a) <= real_ips for a in answers)

            wait_for(every_edge_dns, timeout=60, what=f"every edge DNS to answer for {name}")
            console.print(
                f"[green]{name} placed, every edge DNS answers for it[/] "
                f"{time.monotonic() - started:.1f}s after start"
            )
            steps = traffic_tour(client, sites, hello) if tour else []
            for step in steps:
                mark = "[green]ok[/]  " if step.ok else "[red]FAIL[/]"
                console.print(f"  {mark} {step.what}: {step.detail}")
            sim_url = None
            if simulated:
                # After the tour, which measures latencies on a hub not busy joining thousands.
                sim_url = add_simulated(fleet, client, sites, simulated, tenant=tenant)
                wait_for(every_edge_dns, timeout=60, what=f"every edge DNS to answer for {name}")
                console.print(
                    f"[green]{name} still placed at real sites only, every edge DNS answers for "
                    f"it[/] with {len(sites) + simulated} sites in the fleet"
                )
            if check:
                served = all(step.ok for step in steps)
                console.print(f"{sum(s.ok for s in steps)} of {len(steps)} tour steps passed")
                try:
                    dns_results = wait_for(
                        lambda: (
                            (r := check_dns(client, sites, fqdn, central))
                            and all(ok for *_, ok in r)
                            and r
                        ),
                        timeout=20,
                        what="every edge DNS to answer",
                    )
                except TimeoutError:
                    dns_results = check_dns(client, sites, fqdn, central)
                for asker, answer, want, ok in dns_results:
                    mark = "[green]ok[/]  " if ok else "[red]FAIL[/]"
                    console.print(
                        f"  {mark} dns at {asker:<10} {fqdn} -> {', '.join(answer) or '-'} "
                        f"(nearest serving: {want})"
                    )
                answered = sum(ok for *_, ok in dns_results)
                console.print(f"{answered} of {len(dns_results)} edge DNS answered as routed")
                passed = served and answered == len(dns_results)
                console.print(f"check {'passed' if passed else 'FAILED'}")
                return 0 if passed else 1
            deadline = None if duration is None else time.monotonic() + duration
            with Live(console=console, refresh_per_second=2) as live:
                while deadline is None or time.monotonic() < deadline:
                    try:
                        view = Group(
                            Text(
                                f"edgefleet demo: hub {fleet.hub_url} (Ctrl-C to stop)",
                                style="bold",
                            ),
                            sites_table([client.get_site(s.metadata.name) for s in sites]),
                            *([simulated_line(sim_url)] if sim_url else []),
                            Text(""),
                            apps_table(shown_apps(client)),
                            Text(""),
                            dns_table(dns_rows(sites, fqdn, central), fqdn),
                        )
                    except Exception as exc:
                        view = Group(Text(f"hub not answering: {exc}", style="red"))
                    live.update(view)
                    time.sleep(1.0)
            return 0
    except KeyboardInterrupt:
        interrupted = True
        return 0
    except (TimeoutError, RuntimeError) as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        console.print(f"logs are in {workdir}")
        return 1
    finally:
        console.print("stopping the fleet" + (" (interrupted)" if interrupted else ""))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
