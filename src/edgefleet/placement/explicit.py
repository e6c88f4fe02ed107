"""Explicit placement: the operator's selector, weights and spread decide where replicas run.

A pure decision. ``place_fleet`` takes the apps in priority order, the sites as the hub sees them
and the replicas placed last time, and returns the replicas of every app at every site, with a
message for each app that got fewer than it asked. The hub's placement controller calls it and
applies the result; nothing here does I/O.

The rules, in the order they apply to one app:

1. Eligible sites are those matching every criterion of ``policy.selector``.
2. An unreachable eligible site keeps exactly its current replicas of the app (the hub cannot
   tell it otherwise, and deleting them would only cause churn when it comes back); they are
   charged to the site's capacity but do not count toward the app's total, which the reachable
   eligible sites make up (compensation). Replicas at ineligible sites are dropped, reachable
   or not.
3. The total is ``policy.replicas`` clamped to the scaling bounds, divided by weights (Hamilton),
   or evenly over spread domains within ``max_skew``; or ``policy.replicas_per_site`` at every
   reachable eligible site, capped at ``max_replicas``.
4. Whatever an app takes is gone for the apps after it. Where choices tie, a site keeps what it
   has (stickiness), then site names decide, so the result is stable and flap-free.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NewType

from edgefleet.model import PlacementPolicy, SiteSelector, Spread, SpreadBy

SiteName = NewType("SiteName", str)
"""A site's ``metadata.name``."""

AppKey = NewType("AppKey", str)
"""An app's ``tenant/name``."""

CPU_EPSILON = 1e-6
"""Cores forgiven when fitting replicas, so float sums such as 0.1 * 3 fill a 0.3-core site."""

_MAX_LISTED = 5
"""Sites named in a shortfall message before "and N more"; fleets have thousands of sites."""


@dataclass(frozen=True)
class SiteView:
    """A site as placement sees it: where it is, whether it answers, and what it can run."""

    name: SiteName
    """The site's name, unique in the fleet."""
    region: str
    """Region, e.g. ``eu-west``."""
    zone: str
    """Zone within the region, e.g. ``eu-west-1``."""
    labels: Mapping[str, str]
    """The site's labels, matched by ``selector.matchLabels``."""
    reachable: bool
    """False when the hub lost the site's heartbeats: it keeps its replicas and gets no new ones."""
    cpu: float
    """Cores for replicas, all apps together."""
    memory: int
    """Bytes of memory for replicas, all apps together."""
    max_replicas: int
    """Most replicas the site runs, all apps together."""
    lat: float | None = None
    """Latitude in degrees, for distances (traffic placement); None: location unknown."""
    lon: float | None = None
    """Longitude in degrees; None: location unknown. Set both or neither."""

    def __post_init__(self) -> None:
        if (self.lat is None) != (self.lon is None):
            raise ValueError(f"site {self.name}: set both lat and lon, or neither")
        if self.lat is not None and not -90 <= self.lat <= 90:
            raise ValueError(f"site {self.name}: lat must be in -90..90, not {self.lat}")
        if self.lon is not None and not -180 <= self.lon <= 180:
            raise ValueError(f"site {self.name}: lon must be in -180..180, not {self.lon}")
        if not math.isfinite(self.cpu) or self.cpu < 0:
            raise ValueError(f"site {self.name}: cpu must be a finite number >= 0, not {self.cpu}")
        if self.memory < 0:
            raise ValueError(f"site {self.name}: memory must be >= 0, not {self.memory}")
        if self.max_replicas < 0:
            raise ValueError(
                f"site {self.name}: max_replicas must be >= 0, not {self.max_replicas}"
            )


@dataclass(frozen=True)
class AppView:
    """An app as placement sees it: its policy, what one replica needs, and its bounds."""

    key: AppKey
    """``tenant/name``, unique in the fleet."""
    policy: PlacementPolicy
    """``spec.placement``: selector, count, weights or spread."""
    cpu: float
    """Cores per replica; 0 means cpu never limits."""
    memory: int
    """Bytes per replica; 0 means memory never limits."""
    min_replicas: int
    """Fewest replicas in the fleet (``spec.scaling.minReplicas``)."""
    max_replicas: int
    """Most replicas in the fleet (``spec.scaling.maxReplicas``)."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.cpu) or self.cpu < 0:
            raise ValueError(f"app {self.key}: cpu must be a finite number >= 0, not {self.cpu}")
        if self.memory < 0:
            raise ValueError(f"app {self.key}: memory must be >= 0, not {self.memory}")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"app {self.key}: need 0 <= min_replicas <= max_replicas, "
                f"got {self.min_replicas} and {self.max_replicas}"
            )


@dataclass(frozen=True)
class Usage:
    """What placed replicas take at one site, summed over the apps placed so far."""

    cpu: float = 0.0
    """Cores taken."""
    memory: int = 0
    """Bytes taken."""
    replicas: int = 0
    """Replicas placed."""

    def plus(self, app: AppView, count: int) -> Usage:
        """This usage with ``count`` more replicas of ``app``."""
        return Usage(
            cpu=self.cpu + count * app.cpu,
            memory=self.memory + count * app.memory,
            replicas=self.replicas + count,
        )


_UNUSED = Usage()


@dataclass(frozen=True)
class AppPlacement:
    """Where one app runs."""

    replicas: Mapping[SiteName, int]
    """Replicas per site, only sites with more than 0, including those held at unreachable sites."""
    shortfall: str | None
    """Why the app got fewer replicas than it asked, or None when it got them all."""


@dataclass(frozen=True)
class PlacementResult:
    """Where every app runs."""

    replicas: Mapping[AppKey, Mapping[SiteName, int]]
    """Replicas per app (every app given, maybe with no site) per site (only sites with > 0)."""
    shortfalls: Mapping[AppKey, str]
    """For each app that got fewer replicas than it asked, a message saying why."""


def eligible(selector: SiteSelector, site: SiteView) -> bool:
    """Whether ``site`` matches every criterion of ``selector``; an empty criterion matches all."""
    return (
        (not selector.regions or site.region in selector.regions)
        and (not selector.zones or site.zone in selector.zones)
        and (not selector.sites or site.name in selector.sites)
        and all(site.labels.get(key) == value for key, value in selector.match_labels.items())
    )


def room(site: SiteView, used: Usage, app: AppView) -> int:
    """How many more replicas of ``app`` fit at ``site`` once ``used`` is taken."""
    # The same limits as _rooms_by_limit, inlined: this runs for every app at every site.
    fits = site.max_replicas - used.replicas
    if app.cpu > 0:
        fits = min(fits, math.floor((site.cpu - used.cpu + CPU_EPSILON) / app.cpu))
    if app.memory > 0:
        fits = min(fits, (site.memory - used.memory) // app.memory)
    return max(0, fits)


def place_app(
    app: AppView,
    *,
    sites: Sequence[SiteView],
    current: Mapping[SiteName, int],
    used: Mapping[SiteName, Usage],
) -> AppPlacement:
    """Place one app on ``sites``, given its ``current`` replicas and what other apps ``used``.

    The order of ``sites`` does not matter. Sites missing from ``used`` are empty.
    """
    ordered = sorted(sites, key=lambda site: site.name)
    selected = [site for site in ordered if eligible(app.policy.selector, site)]
    reachable = [site for site in selected if site.reachable]
    rooms = [room(site, used.get(site.name, _UNUSED), app) for site in reachable]
    present = [max(0, current.get(site.name, 0)) for site in reachable]
    policy = app.policy

    per_site = policy.replicas_per_site
    if per_site is not None:
        target = min(per_site * len(reachable), app.max_replicas)
        counts = _fill_per_site(target, per_site=per_site, rooms=rooms)
        # A site that got per_site replicas did not lack room, even if it is now full.
        wanting = [count < per_site for count in counts]
    else:
        asked = policy.replicas if policy.replicas is not None else 1
        target = min(max(asked, app.min_replicas), app.max_replicas)
        if policy.weights:
            weights = [policy.weights.get(site.name, 0) for site in reachable]
            counts = _divide_by_weight(target, weights=weights, rooms=rooms, present=present)
            wanting = [weight > 0 for weight in weights]
        else:
            spread = policy.spread if policy.spread is not None else Spread()
            counts = _divide_by_spread(
                min(target, sum(rooms)),
                domains=[_domain(site, spread.by) for site in reachable],
                rooms=rooms,
                present=present,
                max_skew=spread.max_skew,
            )
            wanting = [True] * len(reachable)

    placed = dict(zip((site.name for site in reachable), counts, strict=True))
    replicas: dict[SiteName, int] = {}
    for site in selected:
        count = placed[site.name] if site.reachable else max(0, current.get(site.name, 0))
        if count > 0:
            replicas[site.name] = count

    if sum(counts) >= target and not (per_site and not reachable):
        return AppPlacement(replicas=replicas, shortfall=None)
    full = []
    for site, count, site_room, wants in zip(reachable, counts, rooms, wanting, strict=True):
        if wants and count == site_room:
            after = used.get(site.name, _UNUSED).plus(app, count)
            full.append(f"{site.name}: {_binding_limit(site, after, app)}")
    shortfall = _explain_shortfall(
        app, target=target, placed=sum(counts), selected=selected, full=full
    )
    return AppPlacement(replicas=replicas, shortfall=shortfall)


def place_fleet(
    apps: Sequence[AppView],
    sites: Sequence[SiteView],
    current: Mapping[AppKey, Mapping[SiteName, int]],
) -> PlacementResult:
    """Place ``apps`` in order on ``sites``; each app takes capacity from the apps after it.

    ``current`` holds the replicas placed last time (the previous result), per app and site; it
    decides ties, and unreachable sites keep it. The order of ``sites`` does not matter.
    """
    _check_unique("site", [site.name for site in sites])
    _check_unique("app", [app.key for app in apps])
    ordered = sorted(sites, key=lambda site: site.name)
    used: dict[SiteName, Usage] = {}
    replicas: dict[AppKey, Mapping[SiteName, int]] = {}
    shortfalls: dict[AppKey, str] = {}
    for app in apps:
        placement = place_app(app, sites=ordered, current=current.get(app.key, {}), used=used)
        for site_name, count in placement.replicas.items():
            used[site_name] = used.get(site_name, _UNUSED).plus(app, count)
        replicas[app.key] = placement.replicas
        if placement.shortfall is not None:
            shortfalls[app.key] = placement.shortfall
    return PlacementResult(replicas=replicas, shortfalls=shortfalls)


# ---------------------------------------------------------------------------------------------
# Division of a total over sites. Index-based: position i is the i-th site (or domain) in name
# order, so a lower index wins the last tie and the result does not depend on input order.


def _fill_per_site(target: int, *, per_site: int, rooms: Sequence[int]) -> list[int]:
    """``per_site`` at each site as room allows, in name order until ``target`` is reached."""
    counts = []
    left = target
    for site_room in rooms:
        count = min(per_site, site_room, left)
        counts.append(count)
        left -= count
    return counts


def _divide_by_weight(
    total: int, *, weights: Sequence[int], rooms: Sequence[int], present: Sequence[int]
) -> list[int]:
    """``total`` in proportion to ``weights`` (largest remainder), excess of full sites moved on.

    A site whose exact quota reaches its room is capped there, and the rest is divided over the
    other weighted sites in proportion, again and again, until no quota reaches a room; the
    remaining sites then share by largest remainder, which can no longer overflow. Capping on
    exact quotas (not on rounded shares) keeps ties out of the choice of capped sites, so the
    result does not depend on the replicas present and placing again from it changes nothing.
    If every weighted site is capped, less than ``total`` is placed.
    """
    counts = [0] * len(weights)
    active = [i for i, weight in enumerate(weights) if weight > 0]
    left = total
    while active:
        weight_sum = sum(weights[i] for i in active)
        # quota = left * weight / weight_sum reaches room, in integers.
        capped = [i for i in active if left * weights[i] >= rooms[i] * weight_sum]
        if not capped:
            shares = _largest_remainder(
                left, weights=[weights[i] for i in active], present=[present[i] for i in active]
            )
            for i, share in zip(active, shares, strict=True):
                counts[i] = share
            break
        for i in capped:
            counts[i] = rooms[i]
            left -= rooms[i]
        done = set(capped)
        active = [i for i in active if i not in done]
    return counts


def _largest_remainder(total: int, *, weights: Sequence[int], present: Sequence[int]) -> list[int]:
    """Hamilton's method: floors of the exact quotas, then +1 by largest remainder.

    Integer arithmetic, so equal remainders are really equal. Among equals the +1 goes first to
    a site that has more than its floor now (so it keeps it: no flapping), then to the first name.
    """
    weight_sum = sum(weights)
    shares = [total * weight // weight_sum for weight in weights]
    remainders = [total * weight % weight_sum for weight in weights]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], present[i] <= shares[i], i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def _domain(site: SiteView, by: SpreadBy) -> tuple[str, ...]:
    """The spread domain of ``site``; zones are named within their region."""
    if by is SpreadBy.REGION:
        return (site.region,)
    if by is SpreadBy.ZONE:
        return (site.region, site.zone)
    return (site.name,)


def _divide_by_spread(
    total: int,
    *,
    domains: Sequence[tuple[str, ...]],
    rooms: Sequence[int],
    present: Sequence[int],
    max_skew: int,
) -> list[int]:
    """``total`` (which must fit) over domains within ``max_skew``, then evenly within each."""
    members: dict[tuple[str, ...], list[int]] = {}
    for i, domain in enumerate(domains):
        members.setdefault(domain, []).append(i)
    keys = sorted(members)
    domain_counts = _balance(
        total,
        rooms=[sum(rooms[i] for i in members[key]) for key in keys],
        present=[sum(present[i] for i in members[key]) for key in keys],
        max_skew=max_skew,
    )
    counts = [0] * len(domains)
    for key, domain_count in zip(keys, domain_counts, strict=True):
        sites = members[key]
        if len(sites) == 1:  # spread by site: nothing to divide
            counts[sites[0]] = domain_count
            continue
        site_counts = _balance(
            domain_count,
            rooms=[rooms[i] for i in sites],
            present=[present[i] for i in sites],
            max_skew=1,
        )
        for i, count in zip(sites, site_counts, strict=True):
            counts[i] = count
    return counts


def _balance(
    total: int, *, rooms: Sequence[int], present: Sequence[int], max_skew: int
) -> list[int]:
    """``total`` (at most ``sum(rooms)``) over bins, fullest minus emptiest bin <= ``max_skew``.

    Starts from what each bin has now, so replicas stay where they are when the skew allows:
    first it adds to the emptiest bins or takes from the fullest until the total is right, then
    moves replicas from the fullest to the emptiest bin while the gap exceeds ``max_skew``. A
    full bin does not hold the others back (as Kubernetes' topology spread when a domain has no
    room). Ties: a bin gains before others if it has more now, then by position; it loses first
    if it has fewer now, then by reverse position. So feeding the result back changes nothing,
    and one more replica, where there is room for it, moves none.
    """
    counts = [min(have, bin_room) for have, bin_room in zip(present, rooms, strict=True)]

    def gains_first(i: int) -> tuple[int, int, int]:
        return (counts[i], -present[i], i)

    def loses_first(i: int) -> tuple[int, int, int]:
        return (-counts[i], present[i], -i)

    placed = sum(counts)
    if placed < total:
        growable = [gains_first(i) for i in range(len(counts)) if counts[i] < rooms[i]]
        heapq.heapify(growable)
        for _ in range(total - placed):
            i = heapq.heappop(growable)[2]
            counts[i] += 1
            if counts[i] < rooms[i]:
                heapq.heappush(growable, gains_first(i))
    elif placed > total:
        shrinkable = [loses_first(i) for i in range(len(counts)) if counts[i] > 0]
        heapq.heapify(shrinkable)
        for _ in range(placed - total):
            i = -heapq.heappop(shrinkable)[2]
            counts[i] -= 1
            if counts[i] > 0:
                heapq.heappush(shrinkable, loses_first(i))

    # Heaps with stale entries: every change pushes a fresh entry; stale ones (whose count no
    # longer matches) are dropped when they surface.
    fullest = [loses_first(i) for i in range(len(counts))]
    emptiest = [gains_first(i) for i in range(len(counts)) if counts[i] < rooms[i]]
    heapq.heapify(fullest)
    heapq.heapify(emptiest)
    while True:
        while fullest and -fullest[0][0] != counts[-fullest[0][2]]:
            heapq.heappop(fullest)
        while emptiest and (
            emptiest[0][0] != counts[emptiest[0][2]]
            or counts[emptiest[0][2]] >= rooms[emptiest[0][2]]
        ):
            heapq.heappop(emptiest)
        if not fullest or not emptiest:
            return counts
        high, low = -fullest[0][2], emptiest[0][2]
        if counts[high] - counts[low] <= max_skew:
            return counts
        counts[high] -= 1
        counts[low] += 1
        for i in (high, low):
            heapq.heappush(fullest, loses_first(i))
            if counts[i] < rooms[i]:
                heapq.heappush(emptiest, gains_first(i))


# ---------------------------------------------------------------------------------------------
# Capacity and messages


def _rooms_by_limit(site: SiteView, used: Usage, app: AppView) -> list[tuple[str, int]]:
    """Room for ``app`` at ``site`` by each limit, named as a shortfall message says it."""
    limits = [("max replicas reached", site.max_replicas - used.replicas)]
    if app.cpu > 0:
        limits.append(("cpu full", math.floor((site.cpu - used.cpu + CPU_EPSILON) / app.cpu)))
    if app.memory > 0:
        limits.append(("memory full", (site.memory - used.memory) // app.memory))
    # Held replicas at an unreachable site can exceed a capacity lowered since: no room, not less.
    return [(name, max(0, count)) for name, count in limits]


def _binding_limit(site: SiteView, used: Usage, app: AppView) -> str:
    """The limit that leaves the least room for ``app`` at ``site`` (the first on ties)."""
    limits = _rooms_by_limit(site, used, app)
    least = min(count for _, count in limits)
    return next(name for name, count in limits if count == least)


def _explain_shortfall(
    app: AppView, *, target: int, selected: Sequence[SiteView], full: Sequence[str], placed: int
) -> str:
    """A message saying how many replicas were placed and why not more."""
    policy = app.policy
    if policy.replicas_per_site is not None:
        # With no reachable site the target is 0; "placed 0 of 0" would hide the problem.
        counted = f"{placed} of {target}" if target else "no"
        head = f"placed {counted} replicas ({policy.replicas_per_site} per site)"
    else:
        head = f"placed {placed} of {target} replicas"
    criteria = _describe(policy.selector)
    unreachable = [site.name for site in selected if not site.reachable]
    if not selected:
        reason = (
            f"no site matches the selector ({criteria})" if criteria else "the fleet has no sites"
        )
        return f"{head}: {reason}"
    if len(unreachable) == len(selected):
        reason = "no site is reachable"
        if criteria:
            reason = f"no reachable site matches the selector ({criteria})"
        return f"{head}: {reason}; unreachable: {_listing(unreachable)}"
    if policy.weights and not full:
        named = ", ".join(f"{name}={weight}" for name, weight in sorted(policy.weights.items()))
        reason = f"no reachable eligible site has a weight above 0 (weights: {named})"
    else:
        reason = f"no room at eligible sites ({_listing(full)})"
    if unreachable:
        reason += f"; unreachable: {_listing(unreachable)}"
    return f"{head}: {reason}"


def _describe(selector: SiteSelector) -> str:
    """The selector's criteria as ``regions=[eu-west], matchLabels={tier=edge}``; "" if none."""
    parts = [
        f"{field}=[{', '.join(values)}]"
        for field, values in (
            ("regions", selector.regions),
            ("zones", selector.zones),
            ("sites", selector.sites),
        )
        if values
    ]
    if selector.match_labels:
        labels = ", ".join(f"{key}={value}" for key, value in sorted(selector.match_labels.items()))
        parts.append(f"matchLabels={{{labels}}}")
    return ", ".join(parts)


def _listing(items: Sequence[str]) -> str:
    """The first few items, comma separated, then how many more."""
    shown = ", ".join(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", and {len(items) - _MAX_LISTED} more"
    return shown


def _check_unique(kind: str, names: Sequence[str]) -> None:
    """Refuse duplicate names: placement keys everything by name."""
    duplicates = sorted(name for name, times in Counter(names).items() if times > 1)
    if duplicates:
        raise ValueError(f"each {kind} must be given once; repeated: {', '.join(duplicates)}")
