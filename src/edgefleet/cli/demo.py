"""``edgefleet demo``: a hub and six sites on this machine, running the sample app.

The sample app ``hello`` is placed by traffic. The demo tours what that means: clients near
Paris send load and replicas appear in Europe; the clients move to New York, replicas follow and
Europe goes to zero (still placed); then one request from Paris wakes Europe again through the
activator. ``--check`` checks each step and every edge DNS, and exits.
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

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgefleet.cli.load import spec_for_site, tick_line
from edgefleet.cli.output import apps_table, sites_table
from edgefleet.client import Client, Context, save_context
from edgefleet.loadgen import LoadSummary, Tick, run_load
from edgefleet.localfleet import LocalFleet, wait_for
from edgefleet.model import App, Site
from edgefleet.model.manifests import load_text

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def sample_manifests() -> tuple[list[Site], App]:
    """The bundled demo sites and the ``hello`` app."""
    folder = resources.files("edgefleet.samples") / "manifests"
    sites = [m.obj for m in load_text((folder / "sites.yaml").read_text(), "sites.yaml")]
    hello = load_text((folder / "hello.yaml").read_text(), "hello.yaml")[0].obj
    assert isinstance(hello, App)
    return [s for s in sites if isinstance(s, Site)], hello


def ask_dns(ip: str, port: int, fqdn: str) -> list[str]:
    """The A records a DNS server answers for ``fqdn`` (empty on NODATA or no answer)."""
    query = dns.message.make_query(fqdn, dns.rdatatype.A)
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


def traffic_tour(client: Client, sites: list[Site], app: App) -> list[Step]:
    """Move the sample app's clients from Europe to America and back; check what follows."""
    tenant, name = app.metadata.tenant or "", app.metadata.name
    by_name = {s.metadata.name: s for s in sites}
    paris, new_york = by_name["paris"], by_name["new-york"]
    europe, america = paris.spec.region, new_york.spec.region
    idle = app.spec.scaling.idle_timeout
    steps: list[Step] = []

    def show() -> None:
        console.print(apps_table(client.list_apps()))

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
) -> int:
    """Bring the demo fleet up, deploy ``hello``, then watch, wait or check; 0 on success."""
    sites, hello = sample_manifests()
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
            wait_for(
                lambda: all(
                    ask_dns(s.spec.addresses.ip, s.spec.addresses.dns_port, fqdn) for s in sites
                ),
                timeout=60,
                what=f"every edge DNS to answer for {name}",
            )
            console.print(
                f"[green]{name} placed, every edge DNS answers for it[/] "
                f"{time.monotonic() - started:.1f}s after start"
            )
            steps = traffic_tour(client, sites, hello) if tour else []
            for step in steps:
                mark = "[green]ok[/]  " if step.ok else "[red]FAIL[/]"
                console.print(f"  {mark} {step.what}: {step.detail}")
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
                            sites_table(client.list_sites()),
                            Text(""),
                            apps_table(client.list_apps()),
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
