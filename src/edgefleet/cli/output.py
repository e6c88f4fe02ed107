"""How the CLI shows objects: tables (plain and wide), JSON and YAML, and describe pages.

Lists are shown as they arrive, a page at a time (``TableStream``, ``list_stream``), so the
first rows of a fleet of 10,000 sites show after one page and nothing holds the whole list."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.markup import escape
from rich.table import Table

from edgefleet.cli.formats import OutputFormat
from edgefleet.model import API_VERSION, App, Event, PlacementMode, ReplicaState, Site, Tenant
from edgefleet.placement.policy import format_cpu, format_memory


def age(since: datetime | None, now: datetime | None = None) -> str:
    """Kubernetes-style age: 5s, 3m, 2h, 4d."""
    if since is None:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - since).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def wire(objs: Sequence[Site | App | Tenant], single: bool) -> Any:
    """Objects as JSON-ready data: one object, or a List like kubectl."""
    items = [o.to_wire() for o in objs]
    if single:
        return items[0]
    kind = objs[0].kind if objs else "Object"
    return {"apiVersion": API_VERSION, "kind": f"{kind}List", "items": items}


def dump(data: Any, fmt: OutputFormat) -> str:
    """JSON or YAML text."""
    if fmt == OutputFormat.JSON:
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False)


def list_stream(
    kind: str, pages: Iterable[Sequence[Site | App | Tenant]], fmt: OutputFormat
) -> Iterator[str]:
    """A list of ``kind`` (SiteList...) as one JSON or YAML document, written a page at a time:
    the text ``dump(wire(...))`` gives for the whole list, without holding it."""
    if fmt == OutputFormat.JSON:
        yield f'{{\n  "apiVersion": "{API_VERSION}",\n  "kind": "{kind}",\n  "items": ['
        first = True
        for page in pages:
            chunk = []
            for obj in page:
                text = json.dumps(obj.to_wire(), indent=2)
                chunk.append(("\n" if first else ",\n") + textwrap.indent(text, "    "))
                first = False
            yield "".join(chunk)
        yield "]\n}" if first else "\n  ]\n}"
        return
    yield f"apiVersion: {API_VERSION}\nkind: {kind}\n"
    first = True
    for page in pages:
        if page:
            yield ("items:\n" if first else "") + yaml.safe_dump(
                [obj.to_wire() for obj in page], sort_keys=False
            )
            first = False
    if first:
        yield "items: []\n"


Cell = tuple[str, str]
"""A table cell: its text and its rich style ('' for none)."""


def _table(columns: Sequence[str], rows: Iterable[Sequence[Cell]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*(f"[{style}]{escape(text)}[/]" if style else text for text, style in row))
    return table


class TableStream:
    """A table printed a page at a time, as ``kubectl get`` does: the columns are sized by the
    header and the first page, and later pages keep them (a longer cell pushes the rest of its
    line to the right instead of moving every column)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self._columns = list(columns)
        self._widths: list[int] | None = None

    def page(self, rows: Sequence[Sequence[Cell]]) -> str:
        """The lines of one page (with the header first, for the first page), as rich
        markup."""
        lines = []
        if self._widths is None:
            self._widths = [
                max([len(column), *(len(row[i][0]) for row in rows)])
                for i, column in enumerate(self._columns)
            ]
            lines.append(self._line([(column, "bold") for column in self._columns]))
        lines.extend(self._line(row) for row in rows)
        return "\n".join(lines)

    def _line(self, cells: Sequence[Cell]) -> str:
        assert self._widths is not None
        parts = []
        for i, ((text, style), width) in enumerate(zip(cells, self._widths, strict=True)):
            shown = escape(text if i == len(cells) - 1 else text.ljust(width))
            parts.append(f"[{style}]{shown}[/]" if style else shown)
        return " " + "  ".join(parts)


def site_columns(*, wide: bool = False) -> list[str]:
    """The columns of ``get sites``."""
    columns = ["NAME", "REGION", "ZONE", "PHASE", "REPLICAS", "HEARTBEAT", "AGE"]
    if wide:
        columns += ["ADDRESS", "LOCATION", "CAPACITY", "DRIVER", "AGENT"]
    return columns


def site_cells(site: Site, *, wide: bool = False) -> list[Cell]:
    """One site's row of ``get sites``."""
    phase = site.status.phase.value
    colour = {"Ready": "green", "Unreachable": "red"}.get(phase, "yellow")
    row = [
        (site.metadata.name, ""),
        (site.spec.region, ""),
        (site.spec.zone, ""),
        (phase, colour),
        (f"{site.status.ready_replicas}/{site.status.replicas}", ""),
        (age(site.status.last_heartbeat), ""),
        (age(site.metadata.creation_timestamp), ""),
    ]
    if wide:
        cap = site.spec.capacity
        row += [
            (f"{site.spec.addresses.ip}:{site.spec.addresses.ingress_port}", ""),
            (f"{site.spec.location.lat:.2f},{site.spec.location.lon:.2f}", ""),
            (f"{cap.cpu:g} cpu, {cap.memory // 1024**3}Gi, {cap.max_replicas} replicas", ""),
            (site.spec.driver.value, ""),
            (site.status.agent_version or "-", ""),
        ]
    return row


def sites_table(sites: Sequence[Site], *, wide: bool = False) -> Table:
    """``get sites``."""
    return _table(site_columns(wide=wide), (site_cells(s, wide=wide) for s in sites))


def app_columns(*, wide: bool = False) -> list[str]:
    """The columns of ``get apps``."""
    columns = ["TENANT", "NAME", "READY", "SITES", "GENERATION", "AGE"]
    if wide:
        columns += ["WORKLOAD", "PLACEMENT", "MESSAGE"]
    return columns


def app_cells(app: App, *, wide: bool = False) -> list[Cell]:
    """One app's row of ``get apps``."""
    status = app.status
    sites = ",".join(
        f"{s.site}({s.ready}/{s.desired})" if s.desired or s.ready else f"{s.site}(asleep)"
        for s in status.sites
        if s.desired or s.ready or s.wakeable
    )
    row = [
        app.metadata.tenant or "",
        app.metadata.name,
        f"{status.ready_replicas}/{status.desired_replicas}",
        sites or "-",
        str(app.metadata.generation),
        age(app.metadata.creation_timestamp),
    ]
    if wide:
        workload = app.spec.workload
        what = workload.command if workload.type == "process" else workload.image
        policy = app.spec.placement
        if policy.mode == PlacementMode.TRAFFIC:
            bound = policy.max_latency_ms
            how = "traffic" + (f", within {bound:g} ms" if bound else "")
        elif policy.replicas_per_site is not None:
            how = f"{policy.replicas_per_site}/site"
        else:
            how = f"{policy.replicas} total"
        if policy.spread:
            how += f", spread by {policy.spread.by.value}"
        if policy.weights:
            how += ", weighted"
        row += [f"{workload.type}: {what}", how, status.message or ""]
    return [(text, "") for text in row]


def apps_table(apps: Sequence[App], *, wide: bool = False) -> Table:
    """``get apps``."""
    return _table(app_columns(wide=wide), (app_cells(a, wide=wide) for a in apps))


def _used(used: float, limit: float | None, show: Callable[[Any], str]) -> str:
    """``7.5/8``: what is taken of a limit, or just what is taken without one."""
    return show(used) + ("" if limit is None else f"/{show(limit)}")


def tenant_columns(*, wide: bool = False) -> list[str]:
    """The columns of ``get tenants``."""
    columns = ["NAME", "REGIONS", "APPS", "REPLICAS", "CPU", "MEMORY", "ACCESS", "AGE"]
    if wide:
        columns += ["NETWORKS", "CLIENT REGIONS"]
    return columns


def tenant_cells(tenant: Tenant, *, wide: bool = False) -> list[Cell]:
    """One tenant's row of ``get tenants``: its residency, what its apps take of its quota,
    its access."""
    spec, status = tenant.spec, tenant.status
    access = spec.access
    row = [
        tenant.metadata.name,
        ",".join(spec.regions) or "any",
        str(status.apps),
        _used(status.replicas, spec.quota.replicas, str),
        _used(status.cpu, spec.quota.cpu, format_cpu),
        _used(status.memory, spec.quota.memory, format_memory),
        "any" if access.open else f"{len(access.networks)} networks, {len(access.regions)} regions",
        age(tenant.metadata.creation_timestamp),
    ]
    if wide:
        row += [",".join(access.networks) or "-", ",".join(access.regions) or "-"]
    return [(text, "") for text in row]


def columns_of(kind: str, *, wide: bool = False) -> list[str]:
    """The table columns of ``kind`` (site, app, tenant)."""
    if kind == "site":
        return site_columns(wide=wide)
    if kind == "tenant":
        return tenant_columns(wide=wide)
    return app_columns(wide=wide)


def cells_of(obj: Site | App | Tenant, *, wide: bool = False) -> list[Cell]:
    """One object's table row."""
    if isinstance(obj, Site):
        return site_cells(obj, wide=wide)
    if isinstance(obj, Tenant):
        return tenant_cells(obj, wide=wide)
    return app_cells(obj, wide=wide)


def events_table(events: Sequence[Event]) -> Table:
    """Recent events of an object."""
    table = Table(box=None, header_style="bold")
    for column in ("AGE", "TYPE", "REASON", "MESSAGE"):
        table.add_column(column, no_wrap=True)
    for event in events:
        table.add_row(age(event.time), event.type, event.reason, event.message)
    return table


def replicas_table(replicas: dict[str, list[ReplicaState]]) -> Table:
    """Replicas at a site."""
    table = Table(box=None, header_style="bold")
    for column in ("APP", "REPLICA", "STATE", "READY", "PORT", "PID", "RESTARTS", "AGE"):
        table.add_column(column, no_wrap=True)
    for key, items in sorted(replicas.items()):
        for r in items:
            table.add_row(
                key,
                r.id,
                r.state,
                "yes" if r.ready else "no",
                str(r.port or "-"),
                str(r.pid or "-"),
                str(r.restarts),
                age(r.started_at),
            )
    return table
