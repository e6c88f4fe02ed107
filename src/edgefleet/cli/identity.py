"""``edgefleet hub init``, ``token``, ``whoami``, ``site join-token`` and ``audit``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from edgefleet.cli.formats import OutputFormat

hub_app = typer.Typer(help="The hub: set it up (init) and run it (serve).", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens of people and tools.", no_args_is_help=True)
site_app = typer.Typer(help="Sites: join tokens for their agents.", no_args_is_help=True)


@hub_app.command("init")
def hub_init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the CA, the hub's certificate and key go.")
    ] = Path("edgefleet-hub"),
    db: Annotated[
        str, typer.Option(help="The hub's database: sqlite:///PATH or postgresql://...")
    ] = "sqlite:///edgefleet-hub.db",
    listen: Annotated[str, typer.Option(help="HOST:PORT the hub will serve on.")] = (
        "127.0.0.1:7700"
    ),
    san: Annotated[
        list[str] | None,
        typer.Option(help="Another DNS name or address of the hub's certificate; repeatable."),
    ] = None,
    context: Annotated[
        str, typer.Option(help="Name of the CLI context saved for this hub.")
    ] = "edgefleet",
    admin_token: Annotated[
        bool,
        typer.Option(
            "--admin-token/--no-admin-token",
            help="Make an admin token (shown once) unless the hub has one already.",
        ),
    ] = True,
) -> None:
    """Set up a hub: a CA and the hub's certificate, the database, and the first admin token.

    Safe to run again: the CA stays; the certificate is reissued only for new names.
    """
    from edgefleet.cli.console import err, out
    from edgefleet.cli.main import _split_listen, fail
    from edgefleet.client.config import Context, save_context
    from edgefleet.hub.accounts import Accounts, bootstrap_admin
    from edgefleet.hub.store import Store
    from edgefleet.hub.tls import HubPki, default_names, init_pki

    host, port = _split_listen(listen)
    names = sorted({*default_names(), *(san or ()), *([host] if host != "0.0.0.0" else [])})
    try:
        made = init_pki(directory, names)
    except (ValueError, OSError) as exc:
        fail(f"--dir {directory}: {exc}")
    pki = HubPki(directory)
    for line in made:
        out.print(f"made {line}")
    if not made:
        out.print(f"kept the CA and certificate in {directory}")
    try:
        store = Store(db)
        store.migrate()
        has_admin = Accounts(store.engine).has_admin()
        store.close()
    except Exception as exc:
        fail(f"--db {db}: {exc}")
    shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    url = f"https://{shown}:{port}"
    token = None
    if admin_token and not has_admin:
        token = bootstrap_admin(db)
    saved = save_context(Context(context, url, token, str(pki.ca_cert.resolve())))
    out.print(f"saved CLI context {context!r} in {saved} (hub {url}, CA {pki.ca_cert})")
    if token:
        out.print("admin token (shown once; it is also in the CLI context):")
        out.print(token)
    elif admin_token:
        err.print("the hub has an admin token already: none made (make more: 'token create')")
    out.print(
        f"serve it: edgefleet hub serve --db {db} --listen {listen} --tls-dir {directory}\n"
        f"agents verify it with: --hub-ca {pki.ca_cert}"
    )


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who or what uses the token.")],
    role: Annotated[str, typer.Option(help="admin, operator, developer or viewer.")],
    tenant: Annotated[
        list[str] | None,
        typer.Option("--tenant", "-t", help="Tenant a developer or viewer acts in; repeatable."),
    ] = None,
    ttl: Annotated[
        str, typer.Option(help="Lifetime: seconds or '12h', '30d', '365d'; 'never' for none.")
    ] = "90d",
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TABLE,
) -> None:
    """Make a token. It is printed once: the hub keeps only a hash of it."""
    from edgefleet.cli.console import out
    from edgefleet.cli.main import fail, hub_session
    from edgefleet.cli.output import dump
    from edgefleet.model.objects import parse_duration

    try:
        seconds = None if ttl == "never" else parse_duration(ttl)
    except ValueError as exc:
        fail(f"--ttl: {exc}")
    with hub_session() as client:
        made = client.create_token(name, role, tenants=list(tenant or ()), ttl=seconds)
    if output in (OutputFormat.JSON, OutputFormat.YAML):
        out.print(dump(made.model_dump(mode="json", by_alias=True, exclude_none=True), output))
        return
    expires = made.expires_at.strftime("%Y-%m-%d %H:%M UTC") if made.expires_at else "never"
    tenants = f" in {', '.join(made.tenants)}" if made.tenants else ""
    out.print(f"token {made.id} for {made.name}: {made.role}{tenants}, expires {expires}")
    out.print(made.token)


@token_app.command("list")
def token_list(
    kind: Annotated[
        str | None, typer.Option(help="Only user tokens, join tokens or site credentials.")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Only this site's.")] = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TABLE,
) -> None:
    """Tokens, join tokens and site credentials (never their secrets)."""
    from rich.table import Table

    from edgefleet.cli.console import out
    from edgefleet.cli.main import hub_session
    from edgefleet.cli.output import age, dump

    with hub_session() as client:
        tokens = client.list_tokens(kind=kind, site=site)
    if output in (OutputFormat.JSON, OutputFormat.YAML):
        out.print(dump([t.model_dump(mode="json", by_alias=True) for t in tokens], output))
        return
    table = Table(box=None, header_style="bold")
    for column in ("ID", "KIND", "NAME", "ROLE", "TENANTS", "STATE", "EXPIRES", "AGE", "BY"):
        table.add_column(column, no_wrap=True)
    now = datetime.now(UTC)
    for t in tokens:
        expires = "never" if t.expires_at is None else t.expires_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(
            t.id,
            t.kind,
            t.name,
            t.role,
            ",".join(t.tenants) or "-",
            t.state,
            expires,
            age(t.created_at, now),
            t.created_by,
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see 'token list').")],
) -> None:
    """Revoke a token or site credential: every hub replica refuses it from the next request."""
    from edgefleet.cli.console import out
    from edgefleet.cli.main import hub_session

    with hub_session() as client:
        client.revoke_token(token_id)
    out.print(f"token {token_id} revoked")


def whoami(
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TABLE,
) -> None:
    """Who the hub takes you for: subject, role, tenants."""
    from edgefleet.cli.console import out
    from edgefleet.cli.main import hub_session
    from edgefleet.cli.output import dump

    with hub_session() as client:
        me = client.whoami()
        where = client.hub
    if output in (OutputFormat.JSON, OutputFormat.YAML):
        out.print(dump(me.model_dump(mode="json", by_alias=True, exclude_none=True), output))
        return
    tenants = f" in tenants {', '.join(me.tenants)}" if me.tenants else ""
    site = f" of site {me.site}" if me.site else ""
    expires = me.expires_at.strftime("%Y-%m-%d %H:%M UTC") if me.expires_at else "never"
    out.print(f"{me.subject}: {me.role}{site}{tenants} (by {me.via}, expires {expires}) at {where}")


@site_app.command("join-token")
def site_join_token(
    site: Annotated[str, typer.Argument(help="The site whose agent will join.")],
    ttl: Annotated[str, typer.Option(help="How long it stays good: '30m', '24h'.")] = "1h",
) -> None:
    """A one-time join token for SITE's agent: start the agent with EDGEFLEET_JOIN_TOKEN set to
    it; the agent trades it for the site's credential (and earlier credentials stop working)."""
    from edgefleet.cli.console import out
    from edgefleet.cli.main import fail, hub_session
    from edgefleet.model.objects import parse_duration

    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        fail(f"--ttl: {exc}")
    with hub_session() as client:
        made = client.join_token(site, ttl=seconds)
    expires = made.expires_at.strftime("%Y-%m-%d %H:%M UTC") if made.expires_at else "?"
    out.print(f"join token for site {site}, good once until {expires}:")
    out.print(made.token)


def audit(
    subject: Annotated[str | None, typer.Option("--user", "-u", help="Only this caller's.")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only in tenant.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only actions starting so: 'delete', 'apply app'.")
    ] = None,
    failed: Annotated[
        bool | None, typer.Option("--failed/--succeeded", help="Only refused / done changes.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Only this recent: '15m', '24h', '7d'.")] = None,
    limit: Annotated[int, typer.Option(help="Most entries.", min=1, max=10_000)] = 100,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.TABLE,
) -> None:
    """Every change asked of the hub: who, when, what, and the result."""
    from rich.table import Table

    from edgefleet.cli.console import out
    from edgefleet.cli.main import fail, hub_session
    from edgefleet.cli.output import dump
    from edgefleet.model.objects import parse_duration

    try:
        back = None if since is None else parse_duration(since)
    except ValueError as exc:
        fail(f"--since: {exc}")
    with hub_session() as client:
        entries = client.audit(
            subject=subject, tenant=tenant, action=action, failed=failed, since=back, limit=limit
        )
    if output in (OutputFormat.JSON, OutputFormat.YAML):
        out.print(dump([e.model_dump(mode="json", by_alias=True) for e in entries], output))
        return
    table = Table(box=None, header_style="bold")
    for column in ("TIME", "WHO", "ROLE", "FROM", "ACTION", "TENANT", "PATH", "STATUS", "RESULT"):
        table.add_column(column, no_wrap=column != "RESULT")
    for e in entries:
        table.add_row(
            e.time.strftime("%Y-%m-%d %H:%M:%S"),
            e.subject,
            e.role,
            e.source,
            e.action,
            e.tenant or "-",
            e.path,
            str(e.status),
            e.result,
        )
    out.print(table)
