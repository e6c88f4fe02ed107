"""The ``edgefleet`` command.

Each command imports what it runs when it runs: ``edgefleet agent`` loads the agent and not the
hub, its store, the test bed, the client or the tables, so an agent holds only its own code in
memory (``tests/unit/cli/test_imports.py`` keeps it so).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from edgefleet._version import __version__
from edgefleet.cli import loop
from edgefleet.cli.console import err, out
from edgefleet.cli.formats import OutputFormat
from edgefleet.cli.identity import audit, hub_app, site_app, token_app, whoami
from edgefleet.cli.sim import sim
from edgefleet.cli.testbed import testbed_app
from edgefleet.model import MAX_APPLY, MAX_PAGE

if TYPE_CHECKING:
    from edgefleet.client import Client
    from edgefleet.model import App, Applied, Site, Tenant

app = typer.Typer(
    name="edgefleet",
    help="Run applications across thousands of edge sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class Kind(StrEnum):
    """Object kinds on the command line (plural forms accepted)."""

    SITE = "site"
    SITES = "sites"
    APP = "app"
    APPS = "apps"
    TENANT = "tenant"
    TENANTS = "tenants"

    @property
    def singular(self) -> str:
        return self.value.removesuffix("s")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error and exit."""
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def _client() -> Client:
    from edgefleet.client import Client

    try:
        return Client()
    except ValueError as exc:
        fail(str(exc))


@contextlib.contextmanager
def hub_session() -> Iterator[Client]:
    """A client of the current context's hub; a refusal becomes a clear error and exit 1."""
    from edgefleet.client import HubError

    try:
        with _client() as client:
            yield client
    except HubError as exc:
        fail(exc.message)


def _find_app(client: Client, name: str, tenant: str | None) -> App:
    if tenant:
        return client.get_app(tenant, name)
    matches = [a for a in client.list_apps() if a.metadata.name == name]
    if not matches:
        fail(f"app {name!r} not found in any tenant")
    if len(matches) > 1:
        tenants = ", ".join(sorted(a.metadata.tenant or "" for a in matches))
        fail(f"app {name!r} exists in several tenants ({tenants}): give --tenant")
    return matches[0]


TenantOption = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Tenant of the app (default: any).")
]


APPLY_DETAIL = 100
"""Inputs of at most this many objects get a line per object; larger ones a line per kind."""


@app.command()
def apply(
    files: Annotated[
        list[str], typer.Option("--filename", "-f", help="File, directory or '-' for stdin.")
    ],
    chunk_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            min=1,
            max=MAX_APPLY,
            help="Objects per request; each request is applied whole or not at all.",
        ),
    ] = MAX_APPLY,
) -> None:
    """Create or update objects from manifests. Every document is validated before any is sent;
    then they are sent in order, ``--chunk-size`` to a request."""
    # As many to a request as the hub takes: each request sets off a placement pass and a
    # routing rebuild over the whole fleet, which at 10,000 sites cost more than the writes.
    from edgefleet.client import HubError
    from edgefleet.model import apply_summary
    from edgefleet.model.manifests import ManifestError, load_paths

    try:
        manifests = load_paths(files)
    except ManifestError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/] {problem}")
        err.print("nothing was applied")
        raise typer.Exit(1) from None
    objs = [m.obj for m in manifests]
    detailed = len(objs) <= APPLY_DETAIL
    done: list[Applied] = []
    with _client() as client:
        try:
            for batch in client.apply_batches(objs, chunk=chunk_size):
                done.extend(batch)
                if detailed:
                    for applied in batch:
                        scope = f" in tenant {applied.tenant}" if applied.tenant else ""
                        out.print(f"{applied.kind.lower()}/{applied.name}{scope} {applied.outcome}")
                if len(objs) > chunk_size:
                    err.print(f"applied {len(done)} of {len(objs)} objects")
        except HubError as exc:
            where = ""
            if exc.item is not None and exc.item < len(manifests):
                refused = manifests[exc.item]
                where = f"{refused.source}, document {refused.document}: "
            err.print(f"[red]error:[/] {where}{exc.message}")
            err.print(
                f"{len(done)} of {len(objs)} objects were applied (by the requests before); "
                "the rest were not"
                if done
                else "nothing was applied"
            )
            raise typer.Exit(1) from None
    if not detailed:
        for line in apply_summary(done):
            out.print(line)


@app.command()
def get(
    kind: Annotated[Kind, typer.Argument(help="sites, apps or tenants")],
    name: Annotated[str | None, typer.Argument(help="One object by name.")] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="table, wide, json or yaml.")
    ] = OutputFormat.TABLE,
    tenant: TenantOption = None,
    chunk_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            min=0,
            max=MAX_PAGE,
            help="Objects per request when listing; 0: the whole list in one request.",
        ),
    ] = 500,
) -> None:
    """List objects (shown as they arrive, a page at a time), or show one."""
    from edgefleet.cli.output import dump, list_stream, wire

    with hub_session() as client:
        if name is not None:
            found: Site | App | Tenant
            if kind.singular == "site":
                found = client.get_site(name)
            elif kind.singular == "tenant":
                found = client.get_tenant(name)
            else:
                found = _find_app(client, name, tenant)
            if output in (OutputFormat.JSON, OutputFormat.YAML):
                out.print(dump(wire([found], True), output), markup=False)
            else:
                _print_table(kind, [[found]], wide=output == OutputFormat.WIDE)
            return
        pages: Iterator[Sequence[Site | App | Tenant]]
        if kind.singular == "site":
            pages, list_kind = client.site_pages(chunk_size), "SiteList"
        elif kind.singular == "tenant":
            pages, list_kind = client.tenant_pages(chunk_size), "TenantList"
        else:
            pages, list_kind = client.app_pages(tenant, chunk_size), "AppList"
        if output in (OutputFormat.JSON, OutputFormat.YAML):
            for text in list_stream(list_kind, pages, output):
                sys.stdout.write(text)
                sys.stdout.flush()
            sys.stdout.write("\n")
            return
        _print_table(kind, pages, wide=output == OutputFormat.WIDE)


def _print_table(kind: Kind, pages: Iterable[Sequence[Site | App | Tenant]], *, wide: bool) -> None:
    """A table of objects, printed a page at a time as the pages arrive."""
    from edgefleet.cli.output import TableStream, cells_of, columns_of

    table = TableStream(columns_of(kind.singular, wide=wide))
    shown = False
    for page in pages:
        if page or not shown:
            out.print(table.page([cells_of(obj, wide=wide) for obj in page]))
            shown = True


@app.command()
def describe(
    kind: Annotated[Kind, typer.Argument(help="site, app or tenant")],
    name: Annotated[str, typer.Argument(help="Object name.")],
    tenant: TenantOption = None,
) -> None:
    """Show one object in full, with its replicas and recent events."""
    from edgefleet.cli.output import apps_table, dump, events_table, replicas_table, wire

    with hub_session() as client:
        if kind.singular == "site":
            site = client.get_site(name)
            out.print(dump(wire([site], True), OutputFormat.YAML), markup=False)
            out.print("[bold]Replicas:[/]")
            out.print(replicas_table(client.site_replicas(name)))
            events = client.events(kind="Site", name=name, limit=20)
        elif kind.singular == "tenant":
            policy = client.get_tenant(name)
            out.print(dump(wire([policy], True), OutputFormat.YAML), markup=False)
            out.print("[bold]Apps:[/]")
            out.print(apps_table(client.list_apps(name)))
            events = client.events(kind="Tenant", name=name, limit=20)
        else:
            found = _find_app(client, name, tenant)
            out.print(dump(wire([found], True), OutputFormat.YAML), markup=False)
            events = client.events(kind="App", tenant=found.metadata.tenant, name=name, limit=20)
    out.print("[bold]Events:[/]")
    out.print(events_table(events) if events else "  <none>")


@app.command()
def delete(
    kind: Annotated[Kind, typer.Argument(help="app, site or tenant")],
    name: Annotated[str, typer.Argument(help="Object name.")],
    tenant: TenantOption = None,
) -> None:
    """Delete an app (its replicas stop everywhere), a site, or a tenant's policy (its apps
    stay)."""
    with hub_session() as client:
        if kind.singular == "site":
            client.delete_site(name)
            out.print(f"site/{name} deleted")
        elif kind.singular == "tenant":
            client.delete_tenant(name)
            out.print(f"tenant/{name} deleted (its apps stay, without its policy)")
        else:
            found = _find_app(client, name, tenant)
            client.delete_app(found.metadata.tenant or "", name)
            out.print(f"app/{name} in tenant {found.metadata.tenant} deleted")


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="App name.")],
    site: Annotated[str | None, typer.Option("--site", "-s", help="Only this site.")] = None,
    tail: Annotated[int, typer.Option("--tail", help="Lines per replica.", min=1)] = 100,
    tenant: TenantOption = None,
) -> None:
    """Print an app's replica logs, fetched through the hub from the sites' agents."""
    with hub_session() as client:
        found = _find_app(client, name, tenant)
        text = client.logs(found.metadata.tenant or "", name, site=site, tail=tail)
    sys.stdout.write(text)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per heartbeat and long-poll drowns what matters; keep httpx's warnings only.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        fail(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:7700")
    return host.strip("[]"), int(port)


@hub_app.command("serve")
def hub(
    db: Annotated[
        str, typer.Option(help="sqlite:///PATH (default) or postgresql://USER@HOST:PORT/DB.")
    ] = "sqlite:///edgefleet-hub.db",
    listen: Annotated[str, typer.Option(help="HOST:PORT of the API.")] = "127.0.0.1:7700",
    heartbeat_grace: Annotated[
        float, typer.Option(help="Seconds without heartbeat before a site is Unreachable.")
    ] = 6.0,
    dns_listen: Annotated[
        str, typer.Option(help="HOST:PORT of the central DNS (UDP and TCP); 'off' for none.")
    ] = "127.0.0.1:5353",
    dns_ttl: Annotated[int, typer.Option(help="TTL of DNS answers, seconds.", min=0)] = 5,
    dns_answers: Annotated[
        int, typer.Option(help="Most addresses in one DNS answer, nearest first.", min=1)
    ] = 2,
    placement_resync: Annotated[
        float, typer.Option(help="Seconds between placement passes (traffic follows demand).")
    ] = 10.0,
    demand_tau: Annotated[
        float, typer.Option(help="Time constant of the decayed demand rates, seconds.")
    ] = 60.0,
    tls_dir: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with server.crt/server.key of 'edgefleet hub init --dir'."),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http", help="Serve plain HTTP instead (only on a loopback address)."
        ),
    ] = False,
    oidc_config: Annotated[
        Path | None,
        typer.Option(help="YAML of the OIDC provider whose JWTs the hub accepts (issuer, ...)."),
    ] = None,
    auth_failure_burst: Annotated[
        float,
        typer.Option(help="Failed authentications a source may make before it gets 429.", min=1),
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning.")] = "info",
) -> None:
    """Run the hub: API, store, placement, site health and the central DNS."""
    from edgefleet.hub.runtime import HubConfig
    from edgefleet.hub.server import serve
    from edgefleet.hub.tls import HubPki, is_loopback

    _setup_logging(log_level)
    host, port = _split_listen(listen)
    tls_cert = tls_key = None
    if tls_dir is not None and insecure_http:
        fail("--tls-dir and --insecure-http: choose one")
    if tls_dir is not None:
        pki = HubPki(tls_dir)
        for path in (pki.server_cert, pki.server_key):
            if not path.is_file():
                fail(
                    f"--tls-dir {tls_dir}: no {path.name}; run 'edgefleet hub init --dir {tls_dir}'"
                )
        tls_cert, tls_key = str(pki.server_cert), str(pki.server_key)
    elif not insecure_http:
        fail(
            "the hub serves HTTPS: run 'edgefleet hub init' and pass --tls-dir DIR, or pass "
            "--insecure-http to serve plain HTTP on a loopback address"
        )
    elif not is_loopback(host):
        fail(
            f"--listen {listen}: plain HTTP is only served on loopback (127.0.0.1, ::1); "
            "anyone who can reach it could read tokens: use --tls-dir"
        )
    oidc = None
    if oidc_config is not None:
        from edgefleet.hub.oidc import OidcConfig

        try:
            oidc = OidcConfig.from_file(oidc_config)
        except (ValueError, OSError) as exc:
            fail(str(exc))
    dns_host, dns_port = ("127.0.0.1", -1) if dns_listen == "off" else _split_listen(dns_listen)
    config = HubConfig(
        db=db,
        host=host,
        port=port,
        heartbeat_grace=heartbeat_grace,
        dns_host=dns_host,
        dns_port=dns_port,
        dns_ttl=dns_ttl,
        dns_answers=dns_answers,
        placement_resync=placement_resync,
        demand_tau=demand_tau,
        tls_cert=tls_cert,
        tls_key=tls_key,
        oidc=oidc,
        auth_failure_burst=auth_failure_burst,
    )
    serve(config, log_level=log_level)


@app.command()
def agent(
    site: Annotated[str, typer.Option(help="Name of this site (a Site on the hub).")],
    hub: Annotated[str, typer.Option(help="Hub URL.")] = "http://127.0.0.1:7700",
    address: Annotated[str, typer.Option(help="Site address for replicas and the API.")] = (
        "127.0.0.1"
    ),
    api_port: Annotated[int, typer.Option(help="Port of the agent's local API.")] = 8080,
    state_dir: Annotated[Path, typer.Option(help="Cache, replica records and logs.")] = Path(
        "edgefleet-agent"
    ),
    driver: Annotated[
        str, typer.Option(help="Replica driver: process, kubernetes or simulated.")
    ] = "process",
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="Kubernetes driver: kubeconfig of the site's cluster (default: in-cluster "
            "service account)."
        ),
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="Kubernetes driver: kubeconfig context (default: current).")
    ] = None,
    namespace_prefix: Annotated[
        str, typer.Option(help="Kubernetes driver: tenants' namespaces are <prefix><tenant>.")
    ] = "ef-",
    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 2.0,
    stop_replicas_on_exit: Annotated[
        bool, typer.Option(help="Stop replicas when the agent exits (default: keep them).")
    ] = False,
    dns_port: Annotated[
        int, typer.Option(help="Edge DNS port on the site address; -1 for none.")
    ] = 5353,
    dns_anycast: Annotated[
        list[str] | None,
        typer.Option(help="Also answer DNS on this (anycast) address, at --dns-port; repeatable."),
    ] = None,
    dns_ttl: Annotated[int, typer.Option(help="TTL of DNS answers, seconds.", min=0)] = 5,
    dns_answers: Annotated[
        int, typer.Option(help="Most addresses in one DNS answer, nearest first.", min=1)
    ] = 2,
    probe_interval: Annotated[
        float, typer.Option(help="Seconds between probes of each neighbour.")
    ] = 0.5,
    demand_window: Annotated[
        float, typer.Option(help="Seconds of demand counted per report to the hub.")
    ] = 10.0,
    hold_timeout: Annotated[
        float, typer.Option(help="Seconds a request waits for a replica to start.")
    ] = 30.0,
    join_token: Annotated[
        str | None,
        typer.Option(
            envvar="EDGEFLEET_JOIN_TOKEN",
            show_default=False,
            help="One-time token from `edgefleet site join-token SITE`, traded for the site's "
            "credential (kept in --state-dir). Prefer the environment variable: a command "
            "line is visible to every user of the machine.",
        ),
    ] = None,
    hub_ca: Annotated[
        Path | None,
        typer.Option(help="CA bundle (PEM) to check an https hub's certificate with."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning.")] = "info",
) -> None:
    """Run a site's agent: watch the hub, run replicas, report status.

    The first start of a site needs a join token (EDGEFLEET_JOIN_TOKEN); the agent keeps the
    credential it gets for it in its state dir and uses it from then on.
    """
    import os

    from edgefleet.agent.service import Agent, AgentConfig, JoinRefused, make_driver

    _setup_logging(log_level)
    config = AgentConfig(
        site=site,
        hub=hub,
        state_dir=state_dir,
        address=address,
        api_port=api_port,
        token=os.environ.get("EDGEFLEET_TOKEN"),
        join_token=join_token or None,
        hub_ca=hub_ca,
        heartbeat_interval=heartbeat_interval,
        stop_replicas_on_exit=stop_replicas_on_exit,
        dns_port=dns_port,
        dns_anycast=tuple(dns_anycast or ()),
        dns_ttl=dns_ttl,
        dns_answers=dns_answers,
        probe_interval=probe_interval,
        demand_window=demand_window,
        hold_timeout=hold_timeout,
        kubeconfig=kubeconfig,
        kube_context=context,
        kube_namespace_prefix=namespace_prefix,
    )
    try:
        instance = Agent(config, make_driver(driver, config))
    except ValueError as exc:
        fail(str(exc))
    try:
        loop.run(instance.run())
    except JoinRefused as exc:
        fail(str(exc))


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Check every step of the tour and every edge DNS, then exit."),
    ] = False,
    tour: Annotated[
        bool,
        typer.Option(
            help="Move the sample app's clients between regions and show replicas follow."
        ),
    ] = True,
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps state and logs.")] = Path(
        ".edgefleet-demo"
    ),
    hub_port: Annotated[int, typer.Option(help="Hub API port.")] = 7700,
    dns_port: Annotated[int, typer.Option(help="Central DNS port on 127.0.0.1.")] = 5353,
    simulated: Annotated[
        int,
        typer.Option(
            min=0,
            max=10_000,
            help="Add this many simulated sites around the six (edgefleet sim), and an app "
            "at each of them.",
        ),
    ] = 0,
) -> None:
    """A hub and six sites in three regions on this machine, running the sample app."""
    from edgefleet.cli.demo import run_demo

    raise typer.Exit(
        run_demo(
            workdir=workdir,
            duration=duration,
            check=check,
            hub_port=hub_port,
            dns_port=dns_port,
            tour=tour,
            simulated=simulated,
        )
    )


app.add_typer(testbed_app, name="testbed")
app.command()(sim)
app.add_typer(hub_app, name="hub")
app.add_typer(token_app, name="token")
app.add_typer(site_app, name="site")
app.command("whoami")(whoami)
app.command("audit")(audit)

dns_app = typer.Typer(help="The fleet's DNS: ask it, and see why it answers what it does.")
app.add_typer(dns_app, name="dns")


@dns_app.command("query")
def dns_query(
    name: Annotated[str, typer.Argument(help="<app>.<tenant>.edge.internal")],
    site: Annotated[
        str | None, typer.Option("--site", "-s", help="Ask as this site's edge DNS.")
    ] = None,
    client_ip: Annotated[
        str | None, typer.Option("--client-ip", help="Ask as a client at this address.")
    ] = None,
) -> None:
    """Print the answer for NAME and why: which sites were considered, which skipped and why.

    With --site, the site's edge DNS is also asked for real over UDP.
    """
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype
    from rich.table import Table

    with hub_session() as client:
        why = client.explain_dns(name, site=site, client_ip=client_ip)
        server = client.get_site(site).spec.addresses if site else None
    asker = f"site {site}" if site else (f"client {client_ip}" if client_ip else "anywhere")
    located = why["origin"]["site"]
    if client_ip:
        asker += f" (located at {located}/{why['origin']['prefix']})" if located else " (unlocated)"
    chosen = ", ".join(f"{a['site']} {a['ip']}" for a in why["answer"]) or "nothing (NODATA)"
    out.print(f"{why['name']} asked from {asker}: {chosen}")
    table = Table(box=None, header_style="bold")
    for column in ("SITE", "RTT MS", "READY", "HEADROOM", "ANSWER", "WHY NOT"):
        table.add_column(column, no_wrap=True)
    for c in why["considered"]:
        rtt = "-" if c["rttMs"] is None else f"{c['rttMs']}{'' if c['measured'] else ' (est)'}"
        table.add_row(
            c["site"],
            rtt,
            str(c["ready"]) + (" (wakes)" if c.get("wakeable") and not c["ready"] else ""),
            f"{c['headroom']:.2f}",
            "yes" if c["chosen"] else "",
            c["reason"] or "",
        )
    out.print(table)
    if server is not None:
        query = dns.message.make_query(why["name"], dns.rdatatype.A)
        where = f"{server.ip}:{server.dns_port}"
        try:
            reply = dns.query.udp(query, server.ip, port=server.dns_port, timeout=2.0)
        except (OSError, dns.exception.DNSException) as exc:
            out.print(f"edge DNS {where} did not answer: {exc}")
            return
        addresses = [r.address for rrset in reply.answer for r in rrset]
        shown = ", ".join(addresses) or dns.rcode.to_text(reply.rcode())
        out.print(f"edge DNS {where} answers: {shown}")


@app.command()
def load(
    from_site: Annotated[
        str, typer.Option("--from", help="Send as clients of this site (its DNS, its networks).")
    ],
    app_name: Annotated[str, typer.Option("--app", help="App to send to.")],
    rps: Annotated[float, typer.Option(help="Requests started per second.", min=0.001)],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant of the app.")] = "demo",
    duration: Annotated[
        str, typer.Option(help="Seconds to send for, or 'forever' (until Ctrl-C).")
    ] = "10",
    path: Annotated[str, typer.Option(help="Path (and query) of every request.")] = "/",
    work: Annotated[
        int | None, typer.Option(help="Service time to ask of the app, ms (?work=MS).", min=0)
    ] = None,
    concurrency_limit: Annotated[
        int, typer.Option(help="Most requests in flight; more due are dropped.", min=1)
    ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Send open-loop HTTP load to an app as clients near one site do, and show who serves it."""
    from edgefleet.cli.load import load_command

    load_command(
        from_site=from_site,
        app=app_name,
        tenant=tenant,
        rps=rps,
        duration=duration,
        path=path,
        work=work,
        concurrency_limit=concurrency_limit,
        as_json=as_json,
    )


@app.command()
def version() -> None:
    """Print the CLI's version (and the hub's, if one answers)."""
    from edgefleet.client import HubError

    out.print(f"client: {__version__}")
    try:
        with _client() as client:
            out.print(f"hub:    {client.version()} at {client.hub}")
    except HubError as exc:
        out.print(f"hub:    unreachable ({exc.message})")


def main() -> None:
    """Console-script entry point."""
    app()
