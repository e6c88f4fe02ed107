"""What changed in the fleet, told to the dashboards that watch it (``GET /api/v1/stream``).

A dashboard shows sites, apps, events and demand, and must follow them without reloading. The
hub does not push the objects themselves: it tells each watcher *which kind* of data changed, and
the watcher reads it again through the ordinary API, with its own token and its own tenants'
filter. So the stream carries no data a watcher could not read anyway, and needs no second
authorization model.

One poll of the store serves every watcher: while at least one is connected, the hub takes a
``Snapshot`` (fingerprints of sites, of each tenant's apps and demand, and the newest event id per
tenant) every ``interval`` seconds, compares it with the previous one (``changed``, a pure
function) and queues the kinds each watcher may see. With no watcher the poll does not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefleet.hub.store import Store, utcnow
from edgefleet.model import App, AppDemand

log = logging.getLogger(__name__)

KINDS = ("sites", "apps", "events", "demand")
"""What a watcher is told about, in this order."""


@dataclass(frozen=True)
class Snapshot:
    """Fingerprints of what dashboards show; equal fingerprints mean nothing visible changed."""

    sites: int = 0
    """Every site's spec, phase, message and replica counts (not its heartbeat time, which
    changes every few seconds without anything to show)."""
    apps: Mapping[str, int] = field(default_factory=dict)
    """Per tenant: its apps' specs and statuses."""
    events: Mapping[str | None, int] = field(default_factory=dict)
    """Per tenant (None: the fleet's own events): the newest event id."""
    demand: Mapping[str, int] = field(default_factory=dict)
    """Per tenant: its apps' demand, rounded to what a dashboard shows."""


def changed(before: Snapshot, after: Snapshot, tenants: frozenset[str] | None) -> frozenset[str]:
    """The kinds a watcher who sees ``tenants`` (None: all, and the fleet's events) is told of."""

    def differs(old: Mapping[Any, int], new: Mapping[Any, int]) -> bool:
        keys = set(old) | set(new)
        if tenants is not None:
            keys &= set(tenants)
        return any(old.get(k) != new.get(k) for k in keys)

    kinds = set()
    if before.sites != after.sites:
        kinds.add("sites")
    if differs(before.apps, after.apps):
        kinds.add("apps")
    if differs(before.demand, after.demand):
        kinds.add("demand")
    events_before, events_after = dict(before.events), dict(after.events)
    if tenants is not None:
        # Fleet events (a site's) are an operator's; a tenant's people see their own only.
        events_before.pop(None, None)
        events_after.pop(None, None)
    if differs(events_before, events_after):
        kinds.add("events")
    return frozenset(kinds)


def apps_fingerprints(apps: Iterable[App]) -> dict[str, int]:
    """Per tenant, one number for its apps' specs and statuses."""
    per_tenant: dict[str, list[object]] = {}
    for app in apps:
        per_tenant.setdefault(app.metadata.tenant or "", []).append(
            (app.metadata.name, app.metadata.resource_version, app.status.model_dump_json())
        )
    return {tenant: hash(tuple(rows)) for tenant, rows in per_tenant.items()}


def demand_fingerprints(matrix: Mapping[tuple[str, str], list[AppDemand]]) -> dict[str, int]:
    """Per tenant, one number for its demand at the precision a dashboard shows (0.1 request
    per second or in flight): decay alone changes the exact figures every instant."""
    per_tenant: dict[str, list[object]] = {}
    for (tenant, app), rows in sorted(matrix.items()):
        per_tenant.setdefault(tenant, []).append(
            (
                app,
                tuple(
                    (d.origin, round(d.requests_per_second, 1), round(d.concurrency, 1))
                    for d in rows
                ),
            )
        )
    return {tenant: hash(tuple(rows)) for tenant, rows in per_tenant.items()}


class Watcher:
    """One dashboard's connection: the kinds changed since it last asked."""

    def __init__(self, tenants: frozenset[str] | None) -> None:
        self.tenants = tenants
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self.closed = False
        self.fresh = True
        """Not yet part of a poll: told of every kind after its first one, since a change made
        between its own first reads and that poll would otherwise go unnoticed."""

    def tell(self, kinds: Iterable[str]) -> None:
        """Add ``kinds`` to what the watcher is told next."""
        self._pending.update(kinds)
        if self._pending:
            self._wake.set()

    def close(self) -> None:
        """End the watch (the hub is stopping)."""
        self.closed = True
        self._wake.set()

    async def next(self, timeout: float) -> list[str] | None:
        """The kinds changed, in ``KINDS`` order; [] after ``timeout`` s of nothing; None once
        closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        if self.closed:
            return None
        self._wake.clear()
        kinds = [k for k in KINDS if k in self._pending]
        self._pending.clear()
        return kinds


class Changes:
    """Polls the store for dashboards while any watch, and tells each what it may see changed."""

    def __init__(self, store: Store, *, demand_tau: float, interval: float = 1.0) -> None:
        self._store = store
        self._tau = demand_tau
        self.interval = interval
        self._watchers: set[Watcher] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def watchers(self) -> int:
        """How many dashboards watch now."""
        return len(self._watchers)

    def watch(self, tenants: frozenset[str] | None) -> Watcher:
        """A new watcher of ``tenants`` (None: everything); starts the poll if it is the first."""
        watcher = Watcher(tenants)
        if self._closed:
            watcher.close()
            return watcher
        self._watchers.add(watcher)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        return watcher

    def forget(self, watcher: Watcher) -> None:
        """The watcher went away; the poll stops after the last one."""
        self._watchers.discard(watcher)

    def close(self) -> None:
        """End every watch now (the hub is stopping) and refuse new ones."""
        self._closed = True
        for watcher in self._watchers:
            watcher.close()
        self._watchers.clear()
        if self._task is not None:
            self._task.cancel()

    def snapshot(self) -> Snapshot:
        """Read the store once for every fingerprint (blocking: call from a thread)."""
        return Snapshot(
            sites=self._store.objects.sites_digest(),
            apps=apps_fingerprints(self._store.objects.list_apps()),
            events=self._store.events.newest(),
            demand=demand_fingerprints(self._store.demand.matrix(utcnow(), self._tau)),
        )

    async def _poll(self) -> None:
        before: Snapshot | None = None
        while self._watchers:
            try:
                after = await asyncio.to_thread(self.snapshot)
            except Exception:
                log.exception("reading the fleet for dashboards failed; trying again")
            else:
                for watcher in list(self._watchers):
                    if watcher.fresh:
                        watcher.fresh = False
                        watcher.tell(KINDS)
                    elif before is not None:
                        watcher.tell(changed(before, after, watcher.tenants))
                before = after
            await asyncio.sleep(self.interval)
