"""``edgefleet demo``: a hub and six sites on this machine, running the sample app."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from importlib import resources
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edgefleet.cli.output import apps_table, sites_table
from edgefleet.client import Client, Context, save_context
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


def all_ready(client: Client, tenant: str, name: str) -> bool:
    """True when the app has all its desired replicas and all are ready."""
    app = client.get_app(tenant, name)
    return (
        app.status.desired_replicas > 0
        and app.status.ready_replicas >= sum(s.desired for s in app.status.sites)
        and all(s.ready == s.desired for s in app.status.sites)
    )


def check_serving(client: Client, tenant: str, name: str) -> list[tuple[str, str, bool, str]]:
    """Call every ready replica of the app at every site that should serve it.

    Returns (site, url, ok, detail) per replica and per serving site without one.
    """
    app = client.get_app(tenant, name)
    results = []
    for placed in app.status.sites:
        if placed.desired == 0:
            continue
        site = client.get_site(placed.site)
        replicas = client.site_replicas(placed.site).get(f"{tenant}/{name}", [])
        ready = [r for r in replicas if r.ready and r.port]
        if not ready:
            results.append((placed.site, "-", False, "no ready replica"))
        for replica in ready:
            url = f"http://{site.spec.addresses.ip}:{replica.port}/"
            try:
                reply = httpx.get(url, timeout=3.0)
                body = reply.json()
                ok = reply.status_code == 200 and body.get("site") == placed.site
                detail = f"{reply.status_code} {body.get('message', '')}"
            except (httpx.HTTPError, ValueError) as exc:
                ok, detail = False, str(exc) or type(exc).__name__
            results.append((placed.site, url, ok, detail))
    return results


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


def run_demo(
    *,
    workdir: Path,
    duration: float | None,
    check: bool,
    hub_port: int = 7700,
    dns_port: int = 5353,
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
    fleet = LocalFleet(workdir=workdir.resolve(), hub_port=hub_port, dns_port=dns_port)
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
            path = save_context(Context("demo", fleet.hub_url))
            console.print(f"CLI context 'demo' written to {path}: try 'edgefleet get sites'")
            wait_for(lambda: all_ready(client, tenant, name), timeout=60, what="hello ready")
            console.print(
                f"[green]all replicas of {name} ready[/] "
                f"{time.monotonic() - started:.1f}s after start"
            )
            if check:
                results = check_serving(client, tenant, name)
                for site_name, url, ok, detail in results:
                    mark = "[green]ok[/]  " if ok else "[red]FAIL[/]"
                    console.print(f"  {mark} {site_name:<10} {url:<28} {detail}")
                served = bool(results) and all(ok for *_, ok, _ in results)
                console.print(
                    f"{sum(r[2] for r in results)} of {len(results)} replicas answered HTTP"
                )
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
