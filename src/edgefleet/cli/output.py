"""How the CLI shows objects: tables (plain and wide), JSON and YAML, and describe pages."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import yaml
from rich.table import Table

from edgefleet.model import App, Event, PlacementMode, ReplicaState, Site, Tenant
from edgefleet.placement.policy import format_cpu, format_memory


class OutputFormat(StrEnum):
    """``-o`` values."""

    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"


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
    items = [o.model_dump(mode="json", by_alias=True, exclude_none=True) for o in objs]
    if single:
        return items[0]
    kind = objs[0].kind if objs else "Object"
    return {"apiVersion": "edgefleet.io/v1alpha1", "kind": f"{kind}List", "items": items}


def dump(data: Any, fmt: OutputFormat) -> str:
    """JSON or YAML text."""
    if fmt == OutputFormat.JSON:
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False)


def sites_table(sites: Sequence[Site], *, wide: bool = False) -> Table:
    """``get sites``."""
    table = Table(box=None, header_style="bold")
    columns = ["NAME", "REGION", "ZONE", "PHASE", "REPLICAS", "HEARTBEAT", "AGE"]
    if wide:
        columns += ["ADDRESS", "LOCATION", "CAPACITY", "DRIVER", "AGENT"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for site in sites:
        phase = site.status.phase.value
        colour = {"Ready": "green", "Unreachable": "red"}.get(phase, "yellow")
        row = [
            site.metadata.name,
            site.spec.region,
            site.spec.zone,
            f"[{colour}]{phase}[/]",
            f"{site.status.ready_replicas}/{site.status.replicas}",
            age(site.status.last_heartbeat),
            age(site.metadata.creation_timestamp),
        ]
        if wide:
            cap = site.spec.capacity
            row += [
                f"{site.spec.addresses.ip}:{site.spec.addresses.ingress_port}",
                f"{site.spec.location.lat:.2f},{site.spec.location.lon:.2f}",
                f"{cap.cpu:g} cpu, {cap.memory // 1024**3}Gi, {cap.max_replicas} replicas",
                site.spec.driver.value,
                site.status.agent_version or "-",
            ]
        table.add_row(*row)
    return table


def apps_table(apps: Sequence[App], *, wide: bool = False) -> Table:
    """``get apps``."""
    table = Table(box=None, header_style="bold")
    columns = ["TENANT", "NAME", "READY", "SITES", "GENERATION", "AGE"]
    if wide:
        columns += ["WORKLOAD", "PLACEMENT", "MESSAGE"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for app in apps:
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
        table.add_row(*row)
    return table


def _used(used: float, limit: float | None, show: Callable[[Any], str]) -> str:
    """``7.5/8``: what is taken of a limit, or just what is taken without one."""
    return show(used) + ("" if limit is None else f"/{show(limit)}")


def tenants_table(tenants: Sequence[Tenant], *, wide: bool = False) -> Table:
    """``get tenants``: each tenant's residency, what its apps take of its quota, its access."""
    table = Table(box=None, header_style="bold")
    columns = ["NAME", "REGIONS", "APPS", "REPLICAS", "CPU", "MEMORY", "ACCESS", "AGE"]
    if wide:
        columns += ["NETWORKS", "CLIENT REGIONS"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for tenant in tenants:
        spec, status = tenant.spec, tenant.status
        access = spec.access
        row = [
            tenant.metadata.name,
            ",".join(spec.regions) or "any",
            str(status.apps),
            _used(status.replicas, spec.quota.replicas, str),
            _used(status.cpu, spec.quota.cpu, format_cpu),
            _used(status.memory, spec.quota.memory, format_memory),
            "any"
            if access.open
            else f"{len(access.networks)} networks, {len(access.regions)} regions",
            age(tenant.metadata.creation_timestamp),
        ]
        if wide:
            row += [",".join(access.networks) or "-", ",".join(access.regions) or "-"]
        table.add_row(*row)
    return table


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
