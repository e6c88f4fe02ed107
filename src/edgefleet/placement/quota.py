"""Tenant quotas over a placement: a tenant's apps never take more than its quota together.

A pure decision, applied after explicit and traffic placement. Each app's share at a site is
what it runs now (``replicas``) and the most the site's own scaler may run (``ceiling``: the
same as ``replicas`` for a fixed share, above it for traffic apps and functions). A tenant's
quota bounds the sum of the ceilings, by replicas, cpu and memory, so local scaling between the
hub's rounds cannot take the tenant past it either.

The rules, per tenant with a quota, its apps in the order given (the placement priority: oldest
first):

1. Running replicas first. Each app keeps as many of its replicas as fit in what the apps before
   it left; the rest are cut from its sites, the site with the most first (ties: the last name
   first), so the cut is deterministic and keeps the app spread.
2. Then headroom: what is left of the quota goes to the apps' ceilings, in the same order, each
   app's share spread evenly over its sites (ties: the first name first). A site whose ceiling
   falls to zero with no replica running loses the app (it was placed at zero, to wake).
3. An app cut by 1 or 2 gets a message naming the limit that bound it, e.g. ``tenant acme is
   at its replica quota (20): 3 of 5 replicas placed``.

Apps of tenants without a quota pass unchanged. Placing again from the result changes nothing.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgefleet.placement.explicit import CPU_EPSILON, AppKey, SiteName
from edgefleet.placement.policy import format_cpu, format_memory

_UNBOUNDED = sys.maxsize
"""Replicas that fit when no limit binds."""


@dataclass(frozen=True)
class Quota:
    """A tenant's limits over all its apps; None: no limit."""

    replicas: int | None = None
    """Most replicas."""
    cpu: float | None = None
    """Most cores."""
    memory: int | None = None
    """Most bytes of memory."""

    def __post_init__(self) -> None:
        if self.replicas is not None and self.replicas < 0:
            raise ValueError(f"a replica quota must be >= 0, not {self.replicas}")
        if self.cpu is not None and not (math.isfinite(self.cpu) and self.cpu >= 0):
            raise ValueError(f"a cpu quota must be a finite number >= 0, not {self.cpu}")
        if self.memory is not None and self.memory < 0:
            raise ValueError(f"a memory quota must be >= 0, not {self.memory}")

    @property
    def unlimited(self) -> bool:
        """Whether no limit is set."""
        return self.replicas is None and self.cpu is None and self.memory is None


@dataclass(frozen=True)
class QuotaApp:
    """An app as quotas see it: its tenant and what one replica takes."""

    key: AppKey
    """``tenant/name``."""
    tenant: str
    """The tenant whose quota the app counts against."""
    cpu: float
    """Cores per replica."""
    memory: int
    """Bytes per replica."""


@dataclass(frozen=True)
class Placed:
    """An app's share at one site: replicas running now and the most the site may run."""

    replicas: int
    """Replicas to run now."""
    ceiling: int
    """Most replicas the site may run by itself; ``replicas`` for a fixed share."""

    def __post_init__(self) -> None:
        if not 0 <= self.replicas <= self.ceiling:
            raise ValueError(
                f"a share needs 0 <= replicas <= ceiling, got {self.replicas}, {self.ceiling}"
            )


@dataclass(frozen=True)
class QuotaResult:
    """A placement within the tenants' quotas."""

    placed: Mapping[AppKey, Mapping[SiteName, Placed]]
    """Every app given, with its shares within quota; sites with nothing left are dropped."""
    messages: Mapping[AppKey, str]
    """For each app that was cut, why."""


@dataclass
class _Budget:
    """What is left of one tenant's quota (inf: no limit)."""

    quota: Quota
    replicas: float
    cpu: float
    memory: float

    @classmethod
    def of(cls, quota: Quota) -> _Budget:
        return cls(
            quota=quota,
            replicas=math.inf if quota.replicas is None else quota.replicas,
            cpu=math.inf if quota.cpu is None else quota.cpu,
            memory=math.inf if quota.memory is None else quota.memory,
        )

    def fits(self, app: QuotaApp) -> tuple[int, str]:
        """How many more replicas of ``app`` fit, and the limit that binds (first on ties)."""
        limits: list[tuple[float, str]] = [(self.replicas, "replica")]
        if app.cpu > 0:
            limits.append(((self.cpu + CPU_EPSILON) / app.cpu, "cpu"))
        if app.memory > 0:
            limits.append((self.memory / app.memory, "memory"))
        count, name = min(limits, key=lambda limit: limit[0])
        return (_UNBOUNDED if math.isinf(count) else max(0, math.floor(count))), name

    def take(self, app: QuotaApp, count: int) -> None:
        self.replicas -= count
        self.cpu -= count * app.cpu
        self.memory -= count * app.memory

    def describe(self, limit: str) -> str:
        quota = self.quota
        if limit == "replica":
            return f"replica quota ({quota.replicas})"
        if limit == "cpu":
            return f"cpu quota ({format_cpu(quota.cpu or 0.0)})"
        return f"memory quota ({format_memory(quota.memory or 0)})"


def cap_to_quotas(
    apps: Sequence[QuotaApp],
    placed: Mapping[AppKey, Mapping[SiteName, Placed]],
    quotas: Mapping[str, Quota],
) -> QuotaResult:
    """``placed`` cut to every tenant's quota (see the module); ``apps`` in priority order.

    Apps in ``placed`` but not in ``apps`` pass unchanged, as do apps of tenants missing from
    ``quotas``.
    """
    out: dict[AppKey, Mapping[SiteName, Placed]] = dict(placed)
    messages: dict[AppKey, str] = {}
    budgets = {tenant: _Budget.of(q) for tenant, q in quotas.items() if not q.unlimited}
    bounded = [app for app in apps if app.tenant in budgets]
    kept: dict[AppKey, dict[SiteName, int]] = {}
    for app in bounded:
        budget = budgets[app.tenant]
        shares = placed.get(app.key, {})
        wanted = {site: share.replicas for site, share in shares.items()}
        total = sum(wanted.values())
        fit, limit = budget.fits(app)
        count = min(total, fit)
        kept[app.key] = wanted if count == total else _cut(wanted, total - count)
        budget.take(app, count)
        if count < total:
            messages[app.key] = (
                f"tenant {app.tenant} is at its {budget.describe(limit)}: "
                f"{count} of {total} replicas placed"
            )
    for app in bounded:
        budget = budgets[app.tenant]
        shares = placed.get(app.key, {})
        running = kept[app.key]
        room = {site: max(0, share.ceiling - running[site]) for site, share in shares.items()}
        total = sum(room.values())
        fit, limit = budget.fits(app)
        count = min(total, fit)
        extra = room if count == total else _spread(room, count)
        budget.take(app, count)
        out[app.key] = {
            site: Placed(running[site], running[site] + extra[site])
            for site in sorted(shares)
            if running[site] + extra[site] > 0
        }
        if count < total and app.key not in messages:
            most = sum(share.ceiling for share in shares.values())
            now = sum(running.values()) + count
            messages[app.key] = (
                f"tenant {app.tenant} is at its {budget.describe(limit)}: its sites may scale "
                f"it to {now} replicas, not {most}"
            )
    return QuotaResult(placed=out, messages=messages)


def _cut(counts: Mapping[SiteName, int], excess: int) -> dict[SiteName, int]:
    """``counts`` less ``excess`` replicas, each from the site with the most (last name first)."""
    names = sorted(counts)
    left = dict(counts)
    heap = [(-left[site], -i) for i, site in enumerate(names) if left[site] > 0]
    heapq.heapify(heap)
    for _ in range(excess):
        _, negative = heapq.heappop(heap)
        site = names[-negative]
        left[site] -= 1
        if left[site] > 0:
            heapq.heappush(heap, (-left[site], negative))
    return left


def _spread(room: Mapping[SiteName, int], count: int) -> dict[SiteName, int]:
    """``count`` (below the total room) over sites, evenly up to each one's room, first names
    first on ties."""
    names = sorted(room)
    given = dict.fromkeys(names, 0)
    heap = [(0, i) for i, site in enumerate(names) if room[site] > 0]
    heapq.heapify(heap)
    for _ in range(count):
        have, i = heapq.heappop(heap)
        site = names[i]
        given[site] = have + 1
        if given[site] < room[site]:
            heapq.heappush(heap, (have + 1, i))
    return given
