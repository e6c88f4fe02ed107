"""Traffic placement: replicas go where the demand is, within each app's latency bound.

A pure decision, like explicit placement (``edgefleet.placement.explicit``). ``place_traffic``
takes the apps in priority order, each with the demand observed per *origin* site (the site whose
clients sent it), the sites as the hub sees them (with coordinates), the previous result and the
capacity that apps placed before (explicit ones) took. It returns every app's share at each site:
the replicas to run now, and the bounds the site's own autoscaler may move within until the next
round. ``TrafficPlanner`` runs the same pass and keeps what it needs to redo, later, only the apps
whose demand changed.

The objective, per app (the heuristic approximates it; ``bench/placement_quality.py`` solves it
exactly as a MILP and compares)::

    minimise   SITE_COST * open_sites + REPLICA_COST * replicas
             + LATENCY_COST * sum_{o,s} (x_os / T) * (rtt_os / L)
             + UNSERVED_COST * sum_o (1 + c_o / T) * u_o

``c_o`` is origin o's concurrency (requests in flight), ``x_os`` the part of it site s serves
(splittable: ``sum_s x_os = (1 - u_o) c_o``, ``u_o`` the unserved fraction), ``T`` the app's
target concurrency per replica, ``L`` its latency bound (``TrafficParams.latency_scale_ms`` when
it has none). Subject to: ``x_os = 0`` where ``rtt_os > L``; ``sum_o x_os <= T * replicas_s``;
``1 <= replicas_s <= room_s`` at an open site, 0 elsewhere (room: the cpu, memory and replica
count left at the site, and ``maxReplicasPerSite``); an active origin with no concurrency still
needs an open site within the bound; ``minSites <= placed sites <= maxSites``;
``minReplicas <= replicas <= maxReplicas``. The weights (10 000, 1 000, 10, 1) make the
priorities lexicographic in practice: serve every active origin (a unit unserved costs more than
a site), then open as few sites as possible, then run as few replicas (one costs as much as ten
replica-loads carried at the bound), then keep round trips short.

The rules, in the order they apply to one app:

1. Demand. An origin is *active* while its last request is less than ``idle_timeout`` old
   (always, once seen, when ``idle_timeout`` is 0); an idle origin is demand of the past and
   counts as none. A site that serves an active origin runs at least one replica, however small
   the demand.
2. Latency. The round trip from origin to site is the measured one when ``rtt_ms`` gives it,
   else the estimate from coordinates (``edgefleet.geo``), 0 at the origin itself. A site serves
   an origin only within the app's bound (compared in float arithmetic). A site without
   coordinates is used only when nothing with coordinates qualifies: as its own origin, through
   a measured round trip, or, for an app without a bound, for origins that no located site
   reaches (at ``UNKNOWN_RTT_MS``).
3. Capacity. Apps are placed one after the other; each takes what ``used`` and the apps before
   it left, as in explicit placement. Apps with a tighter latency bound have fewer sites to
   choose from, so they choose first: by ``max_latency_ms`` (unbounded last), then in the order
   given. An unreachable eligible site keeps its share unchanged: charged to its capacity,
   outside the app's bounds, nothing new; reachable sites serve its demand. Shares at ineligible
   or unknown sites are dropped.
4. Sites. Candidates are the eligible reachable sites with room within the bound of an active
   origin (more than ``TrafficParams.candidate_limit`` of them: only those a covering can need,
   see there). Greedy covering (open the site that serves the most unserved origins and demand
   within the bound and its room, ties to the shorter round trips, then the name), then search
   until nothing improves: close a site, replace two by one, and swap one for another when the
   app has at most ``TrafficParams.swap_limit`` candidate sites. Each origin then goes to its
   nearest open site with room, split when room forces it, and load is shifted between sites
   where that saves a replica.
5. Hysteresis. Two site sets are built: *kept*, from the currently open sites, adding one only
   when real demand needs it and closing one only when the others could carry the demand with
   ``keep_load_margin`` to spare; and *fresh*, from scratch, sized for demand with that margin.
   The fresh set wins only if it costs ``move_margin`` less (relative). Replicas are
   ``ceil(load / T)``; they go up at once and down only when
   ``load < (replicas - 1) * T * (1 - scale_down_margin)``.
6. Scale to zero. A site that serves only idle origins goes to 0 replicas and stays placed
   (``Share(0, 0, >= 1)``), so its activator can wake it. Parked sites kept: at most
   ``max(minSites - open, min(max_parked_sites, regions with past demand and no active
   demand))``, nearest to active demand (else to past demand) first, then by name; the rest are
   dropped.
7. minSites and minReplicas. With fewer placed sites than ``minSites`` (at least 1 when
   ``minReplicas`` > 0), more are parked: nearest to demand (active, else past), else spread over
   the fleet by a hash of the app key, located sites first. ``minReplicas`` is divided evenly
   over the open sites by name, or when none is open over the parked ones (which then run);
   each site's part is its local minimum.
8. Local bounds. ``max_replicas`` is ``min(room, maxReplicasPerSite, max(2r, r + 2))`` and at
   least ``max(r, 1)``; the headroom above that is trimmed, largest first, to keep the sum within
   the app's ``maxReplicas`` where it can.
9. Determinism. The order of sites and of demand rows does not matter; ties go to the site names.
   Placing again from the result with the same inputs changes nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from edgefleet.geo import BASE_RTT_MS, EARTH_RADIUS_KM, FIBRE_KM_PER_MS
from edgefleet.model import SiteSelector
from edgefleet.placement.explicit import CPU_EPSILON, AppKey, SiteName, SiteView, Usage

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

SITE_COST = 1_000.0
"""Cost of a site that runs replicas of the app."""
REPLICA_COST = 10.0
"""Cost of a replica."""
LATENCY_COST = 1.0
"""Cost of one replica-load (``T`` requests in flight) served at the latency bound ``L``."""
UNSERVED_COST = 10_000.0
"""Cost of an active origin left unserved, per origin plus per replica-load of its demand."""
UNKNOWN_RTT_MS = 1_000.0
"""Round trip assumed where no site's location is known (only for apps without a bound): more
than any estimate on Earth, so located sites always come first."""

_EPS = 1e-9
"""Requests in flight below which a remainder is rounding, not demand."""
_MAX_LISTED = 5
"""Origins or sites named in a shortfall message before "and N more"."""
_MAX_ROUNDS = 50
"""Bound on improvement rounds of the local search (each strictly lowers the cost)."""
_MERGE_TRIES = 3
"""Sites tried to replace a pair of open sites, best first."""
_CELL_DEGREES = 2.5
"""Size of the grid cells that narrow the search for sites near an origin."""
_NEAREST_KEPT = 3
"""Candidates kept per origin, nearest first, when an app has too many."""
_CELLS_KEPT = 32
"""Grid cells looked in for wide-reaching candidates, when an app has too many."""
_PER_CELL_KEPT = 16
"""Candidates kept per such cell, those reaching the most origins."""
_LIMITS = ("max replicas reached", "cpu full", "memory full", "maxReplicasPerSite reached")
"""Names of the capacity limits, by code, as a shortfall message says them."""


# ---------------------------------------------------------------------------------------------
# Inputs and outputs


@dataclass(frozen=True)
class Demand:
    """Observed demand for one app from one origin site (decayed by the hub)."""

    origin: SiteName
    """The site whose clients sent the requests (the site nearest to them)."""
    concurrency: float
    """Average requests in flight (Little's law): the load replicas are sized for."""
    requests_per_second: float = 0.0
    """Request rate; not used to size, shown in messages."""
    idle_seconds: float | None = None
    """Seconds since the last request from this origin; None: none seen."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.concurrency) or self.concurrency < 0:
            raise ValueError(
                f"demand from {self.origin}: concurrency must be finite and >= 0, "
                f"not {self.concurrency}"
            )
        if not math.isfinite(self.requests_per_second) or self.requests_per_second < 0:
            raise ValueError(
                f"demand from {self.origin}: requests_per_second must be finite and >= 0, "
                f"not {self.requests_per_second}"
            )
        if self.idle_seconds is not None and not self.idle_seconds >= 0:
            raise ValueError(
                f"demand from {self.origin}: idle_seconds must be >= 0 or None, "
                f"not {self.idle_seconds}"
            )


@dataclass(frozen=True)
class TrafficApp:
    """An app in traffic mode as placement sees it: needs, bounds and observed demand."""

    key: AppKey
    """``tenant/name``, unique in the fleet."""
    cpu: float
    """Cores per replica; 0 means cpu never limits."""
    memory: int
    """Bytes per replica; 0 means memory never limits."""
    selector: SiteSelector = field(default_factory=SiteSelector)
    """``spec.placement.selector``: the sites the app may run at."""
    min_replicas: int = 0
    """Fewest replicas in the fleet (``spec.scaling.minReplicas``)."""
    max_replicas: int = 1000
    """Most replicas in the fleet (``spec.scaling.maxReplicas``)."""
    max_replicas_per_site: int | None = None
    """Most replicas at one site; None: only capacity limits."""
    target_concurrency: float = 10.0
    """Requests in flight one replica should carry (``T``)."""
    max_latency_ms: float | None = None
    """Most round-trip ms between an origin and the site serving it; None: no bound."""
    min_sites: int = 1
    """Fewest sites the app stays placed at, demand or not (at zero when idle)."""
    max_sites: int | None = None
    """Most sites the app is placed at, running or at zero; None: no bound."""
    idle_timeout: float = 300.0
    """Seconds without a request after which an origin counts as idle; 0: never."""
    demand: tuple[Demand, ...] = ()
    """Demand per origin site, one row per origin."""

    def __post_init__(self) -> None:
        problems = []
        if not math.isfinite(self.cpu) or self.cpu < 0:
            problems.append(f"cpu must be a finite number >= 0, not {self.cpu}")
        if self.memory < 0:
            problems.append(f"memory must be >= 0, not {self.memory}")
        if not 0 <= self.min_replicas <= self.max_replicas:
            problems.append(
                f"need 0 <= min_replicas <= max_replicas, "
                f"got {self.min_replicas} and {self.max_replicas}"
            )
        if self.max_replicas_per_site is not None and self.max_replicas_per_site < 1:
            problems.append(f"max_replicas_per_site must be >= 1, not {self.max_replicas_per_site}")
        if not (math.isfinite(self.target_concurrency) and self.target_concurrency > 0):
            problems.append(f"target_concurrency must be > 0, not {self.target_concurrency}")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            problems.append(f"max_latency_ms must be > 0 or None, not {self.max_latency_ms}")
        if self.min_sites < 0:
            problems.append(f"min_sites must be >= 0, not {self.min_sites}")
        if self.max_sites is not None and not self.max_sites >= 1:
            problems.append(f"max_sites must be >= 1 or None, not {self.max_sites}")
        if self.max_sites is not None and self.min_sites > self.max_sites:
            problems.append(f"min_sites {self.min_sites} exceeds max_sites {self.max_sites}")
        if not self.idle_timeout >= 0:
            problems.append(f"idle_timeout must be >= 0, not {self.idle_timeout}")
        repeated = sorted(o for o, n in Counter(d.origin for d in self.demand).items() if n > 1)
        if repeated:
            problems.append(f"one demand row per origin; repeated: {', '.join(repeated)}")
        if problems:
            raise ValueError(f"app {self.key}: {'; '.join(problems)}")


@dataclass(frozen=True)
class Share:
    """An app's share at one site: what it runs now and what it may scale within by itself."""

    replicas: int
    """Replicas to run now; 0 with ``max_replicas >= 1`` means placed at zero (wakeable)."""
    min_replicas: int
    """Fewest replicas the site's autoscaler keeps (its part of the app's ``minReplicas``)."""
    max_replicas: int
    """Most replicas the site's autoscaler may run between the hub's rounds."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                "a share needs 0 <= min_replicas <= replicas <= max_replicas, got "
                f"{self.min_replicas}, {self.replicas}, {self.max_replicas}"
            )

    @property
    def placed(self) -> bool:
        """Whether the site keeps the app (running, or at zero but wakeable)."""
        return self.replicas > 0 or self.max_replicas > 0


@dataclass(frozen=True)
class Route:
    """Which site serves how much of one origin's demand (what DNS steering should achieve)."""

    origin: SiteName
    """The origin site."""
    site: SiteName
    """The site serving it."""
    concurrency: float
    """Requests in flight sent there (0 for an active origin with no measurable load)."""


@dataclass(frozen=True)
class TrafficParams:
    """Knobs of traffic placement; the defaults suit a hub round every 10 s or so."""

    keep_load_margin: float = 0.2
    """A currently open site closes only if the others could carry the demand with this share of
    their capacity to spare; a fresh site set is sized the same way. Against flapping when
    demand hovers at a site's capacity."""
    move_margin: float = 0.1
    """A fresh site set replaces the kept one only if it costs this share less; also what a swap
    of a kept site must save. Against flapping between near-equal site sets."""
    scale_down_margin: float = 0.3
    """Replicas go down only when ``load < (replicas - 1) * T * (1 - margin)``."""
    max_parked_sites: int = 3
    """Most sites kept at zero for past demand (``minSites`` may need more)."""
    latency_scale_ms: float = 100.0
    """``L`` in the objective for apps without a latency bound."""
    swap_limit: int = 64
    """Candidate sites up to which the local search also tries every swap (quadratic)."""
    candidate_limit: int = 256
    """Candidate sites beyond which an app considers only those a covering can need (a wide bound
    reaches a whole continent): the origin sites, the current sites, the widest-reaching sites in
    up to 32 areas of demand (16 each), and the three nearest with room for each origin its own
    site cannot serve. Fewer candidates, faster passes, and fewer sites whose room matters."""

    def __post_init__(self) -> None:
        for name in ("keep_load_margin", "move_margin", "scale_down_margin"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), not {value}")
        if self.max_parked_sites < 0:
            raise ValueError(f"max_parked_sites must be >= 0, not {self.max_parked_sites}")
        if not self.latency_scale_ms > 0:
            raise ValueError(f"latency_scale_ms must be > 0, not {self.latency_scale_ms}")
        if self.swap_limit < 0:
            raise ValueError(f"swap_limit must be >= 0, not {self.swap_limit}")
        if self.candidate_limit < 1:
            raise ValueError(f"candidate_limit must be >= 1, not {self.candidate_limit}")

    def without_hysteresis(self) -> TrafficParams:
        """These parameters with every margin 0: the plain objective, as the MILP sees it."""
        return replace(self, keep_load_margin=0.0, move_margin=0.0, scale_down_margin=0.0)


@dataclass(frozen=True)
class TrafficResult:
    """Where every traffic app runs, and what is left of the fleet."""

    shares: Mapping[AppKey, Mapping[SiteName, Share]]
    """Per app (every app given), its share per placed site, held shares included."""
    routes: Mapping[AppKey, tuple[Route, ...]]
    """Per app, which open site serves how much of each active origin's demand."""
    shortfalls: Mapping[AppKey, str]
    """For each app that could not serve all its demand or meet its bounds, why."""
    used: Mapping[SiteName, Usage]
    """What ``used`` and all these apps take at each site (sites with some use)."""


def is_active(demand: Demand, idle_timeout: float) -> bool:
    """Whether an origin still counts as demand: a request seen less than ``idle_timeout`` ago.

    With ``idle_timeout`` 0 an origin never goes idle once a request was seen. A row with no
    request seen but some concurrency counts as active (the concurrency is evidence).
    """
    if demand.idle_seconds is None:
        return demand.concurrency > 0 or demand.requests_per_second > 0
    return idle_timeout <= 0 or demand.idle_seconds < idle_timeout


def place_traffic(
    apps: Sequence[TrafficApp],
    sites: Sequence[SiteView],
    current: Mapping[AppKey, Mapping[SiteName, Share]],
    *,
    used: Mapping[SiteName, Usage] | None = None,
    params: TrafficParams | None = None,
    rtt_ms: Mapping[tuple[SiteName, SiteName], float] | None = None,
) -> TrafficResult:
    """Place ``apps`` in order on ``sites``; each app takes capacity from the apps after it.

    ``current`` is the previous result (it decides stickiness, and unreachable sites keep it);
    ``used`` what apps placed before took (sites missing are empty); ``rtt_ms`` measured round
    trips per (origin, site), which replace the estimates from coordinates. The order of
    ``sites`` and of each app's demand rows does not matter.
    """
    planner = TrafficPlanner(params, rtt_ms=rtt_ms)
    return planner.full(apps, sites, current, used=used)


# ---------------------------------------------------------------------------------------------
# The planner: a full pass, or an incremental one that redoes only what can have changed


class TrafficPlanner:
    """Traffic placement that remembers its last pass, to redo only what demand changed.

    Pure: no I/O, no clock. ``full`` places every app (as ``place_traffic``); ``update`` takes
    new versions of some apps (new demand, new spec) and returns what ``full`` would return for
    all apps with ``current`` set to the previous result, recomputing only the apps that changed
    and those whose capacity they changed. Sites changed, or apps added or removed: call
    ``full``.
    """

    def __init__(
        self,
        params: TrafficParams | None = None,
        *,
        rtt_ms: Mapping[tuple[SiteName, SiteName], float] | None = None,
    ) -> None:
        self.params = params if params is not None else TrafficParams()
        """The knobs every pass uses."""
        self._measured: dict[SiteName, dict[SiteName, float]] = {}
        for (origin, site), ms in (rtt_ms or {}).items():
            if not ms >= 0:
                raise ValueError(f"measured rtt {origin} -> {site} must be >= 0 ms, not {ms}")
            self._measured.setdefault(origin, {})[site] = float(ms)
        self._fleet: _Fleet | None = None
        self._apps: list[TrafficApp] = []
        """The apps in placement order."""
        self._given: list[AppKey] = []
        """The app keys in the order given, the order of the result."""
        self._base = _Ledger(0)
        self._current: dict[AppKey, Mapping[SiteName, Share]] = {}
        self._records: dict[AppKey, _Record] = {}
        self._result: TrafficResult | None = None
        self.recomputed = 0
        """Apps computed in the last pass (all in a full pass): how incremental it was."""

    @property
    def result(self) -> TrafficResult:
        """The last pass's result."""
        if self._result is None:
            raise RuntimeError("no pass yet: call full() first")
        return self._result

    def full(
        self,
        apps: Sequence[TrafficApp],
        sites: Sequence[SiteView],
        current: Mapping[AppKey, Mapping[SiteName, Share]],
        *,
        used: Mapping[SiteName, Usage] | None = None,
    ) -> TrafficResult:
        """Place every app from scratch (``current`` still decides stickiness)."""
        _check_unique("site", [site.name for site in sites])
        _check_unique("app", [app.key for app in apps])
        fleet = _Fleet(sites)
        base = _Ledger(len(fleet.names))
        for name, usage in (used or {}).items():
            i = fleet.index.get(name)
            if i is not None:
                base.cpu[i] += usage.cpu
                base.memory[i] += usage.memory
                base.replicas[i] += usage.replicas
        self._fleet = fleet
        self._apps = _placement_order(apps)
        self._given = [app.key for app in apps]
        self._base = base
        self._current = {app.key: current.get(app.key, {}) for app in apps}
        self._records = {}
        return self._walk(None)

    def update(self, apps: Iterable[TrafficApp]) -> TrafficResult:
        """Replace the given apps (same keys, new demand or spec) and place again, incrementally.

        Equal to ``full`` over all apps, in the same order, with ``current`` = the last result.
        Recomputed: the apps given that changed, those that read room at a site whose use
        changed, and those whose result differed from their ``current`` last time (once more,
        to confirm they settled).
        """
        if self._fleet is None or self._result is None:
            raise RuntimeError("no pass yet: call full() first")
        position = {app.key: i for i, app in enumerate(self._apps)}
        changed: set[AppKey] = set()
        for app in apps:
            i = position.get(app.key)
            if i is None:
                raise ValueError(f"app {app.key} was not in the last full pass; call full()")
            if self._apps[i] != app:
                self._apps[i] = app
                changed.add(app.key)
        self._current = dict(self._result.shares)
        reordered = _placement_order(self._apps)
        if [app.key for app in reordered] != [app.key for app in self._apps]:
            # A bound changed the order: what each app saw before it changed too.
            self._apps = reordered
            return self._walk(None)
        return self._walk(changed)

    def _walk(self, changed: set[AppKey] | None) -> TrafficResult:
        """Place the apps in order; ``changed`` None: all of them, else only what depends on it."""
        fleet = self._fleet
        assert fleet is not None
        ledger = self._base.copy()
        dirty: set[int] = set()  # sites whose use by the apps so far differs from the last pass
        shares: dict[AppKey, Mapping[SiteName, Share]] = {}
        routes: dict[AppKey, tuple[Route, ...]] = {}
        shortfalls: dict[AppKey, str] = {}
        self.recomputed = 0
        for app in self._apps:
            record = self._records.get(app.key)
            if (
                record is None
                or changed is None
                or app.key in changed
                or not record.settled
                or (dirty and record.depends_on(dirty, fleet, ledger, app))
            ):
                self.recomputed += 1
                current = self._current.get(app.key, {})
                fresh = _place_app(app, fleet, ledger, current, self.params, self._measured)
                if record is not None:
                    dirty.update(_changed_use(record, fresh))
                else:
                    dirty.update(fresh.use)
                record = fresh
                self._records[app.key] = record
            ledger.add(record.use, cpu=record.cpu, memory=record.memory)
            shares[app.key] = record.shares
            routes[app.key] = record.routes
            if record.shortfall is not None:
                shortfalls[app.key] = record.shortfall
        shares = {key: shares[key] for key in self._given}
        routes = {key: routes[key] for key in self._given}
        shortfalls = {key: shortfalls[key] for key in self._given if key in shortfalls}
        if changed is None or self._result is None:
            sites = np.flatnonzero(ledger.replicas | ledger.memory | (ledger.cpu != 0)).tolist()
            used: dict[SiteName, Usage] = {}
        else:
            # Only the sites whose use changed (the same sums elsewhere: the same values).
            sites = sorted(dirty)
            used = dict(self._result.used)
        for i in sites:
            if ledger.replicas[i] or ledger.memory[i] or ledger.cpu[i]:
                used[fleet.names[i]] = Usage(
                    cpu=float(ledger.cpu[i]),
                    memory=int(ledger.memory[i]),
                    replicas=int(ledger.replicas[i]),
                )
            else:
                used.pop(fleet.names[i], None)
        self._result = TrafficResult(shares=shares, routes=routes, shortfalls=shortfalls, used=used)
        return self._result


def _placement_order(apps: Iterable[TrafficApp]) -> list[TrafficApp]:
    """Tightest latency bound first, unbounded last; the given order among equals."""
    return sorted(
        apps, key=lambda app: math.inf if app.max_latency_ms is None else app.max_latency_ms
    )


def _changed_use(old: _Record, new: _Record) -> set[int]:
    """Sites where the app's use differs between two records."""
    if (old.cpu, old.memory) != (new.cpu, new.memory):
        return set(old.use) | set(new.use)
    return {i for i in set(old.use) | set(new.use) if old.use.get(i) != new.use.get(i)}


# ---------------------------------------------------------------------------------------------
# The fleet as arrays, and capacity


class _Fleet:
    """The sites as arrays in name order, with eligibility by selector cached."""

    def __init__(self, sites: Sequence[SiteView]) -> None:
        ordered = sorted(sites, key=lambda site: site.name)
        self.sites = ordered
        self.names = [site.name for site in ordered]
        self.index = {name: i for i, name in enumerate(self.names)}
        n = len(ordered)
        self.has_xy: Bools = np.array([site.lat is not None for site in ordered], dtype=bool)
        lat = np.array([site.lat if site.lat is not None else 0.0 for site in ordered], float)
        lon = np.array([site.lon if site.lon is not None else 0.0 for site in ordered], float)
        self.lat: Floats = np.radians(lat)
        self.lon: Floats = np.radians(lon)
        self.cos_lat: Floats = np.cos(self.lat)
        self.xyz: Floats = np.stack(
            [self.cos_lat * np.cos(self.lon), self.cos_lat * np.sin(self.lon), np.sin(self.lat)],
            axis=1,
        ).reshape(n, 3)
        self.reachable: Bools = np.array([site.reachable for site in ordered], dtype=bool)
        self.cpu: Floats = np.array([site.cpu for site in ordered], dtype=float)
        self.memory: Ints = np.array([site.memory for site in ordered], dtype=np.int64)
        self.max_replicas: Ints = np.array([site.max_replicas for site in ordered], np.int64)
        self.region = [site.region for site in ordered]
        self._by_region = _positions(site.region for site in ordered)
        self._by_zone = _positions(site.zone for site in ordered)
        self._by_label: dict[tuple[str, str], set[int]] = {}
        for i, site in enumerate(ordered):
            for label in site.labels.items():
                self._by_label.setdefault(label, set()).add(i)
        self._eligible: dict[tuple[object, ...], Ints] = {}
        # A coarse grid over the located sites: cell centres and radii, members per cell.
        located = np.flatnonzero(self.has_xy)
        cell = (np.floor((lat[located] + 90) / _CELL_DEGREES) * 1000) + np.floor(
            (lon[located] + 180) / _CELL_DEGREES
        )
        cells, which = np.unique(cell, return_inverse=True)
        order = np.argsort(which, kind="stable")
        bounds_at = np.searchsorted(which[order], np.arange(len(cells) + 1))
        self._cell_members = [
            located[order[bounds_at[c] : bounds_at[c + 1]]] for c in range(len(cells))
        ]
        centres = np.zeros((len(cells), 3))
        np.add.at(centres, which, self.xyz[located])
        norms = np.linalg.norm(centres, axis=1)
        self.cell_centre: Floats = centres / np.where(norms > 0, norms, 1.0)[:, None]
        spread = np.einsum("ij,ij->i", self.xyz[located], self.cell_centre[which])
        radius = np.zeros(len(cells))
        np.maximum.at(radius, which, np.arccos(np.clip(spread, -1.0, 1.0)))
        self._cell_radius: Floats = radius + 1e-6
        self._cell_size: Ints = np.array([len(m) for m in self._cell_members], dtype=np.int64)

    def eligible(self, selector: SiteSelector) -> Ints:
        """Indices of the sites matching ``selector`` (as ``explicit.eligible``), ascending."""
        key = (
            tuple(selector.regions),
            tuple(selector.zones),
            tuple(selector.sites),
            tuple(sorted(selector.match_labels.items())),
        )
        found = self._eligible.get(key)
        if found is None:
            chosen: set[int] | None = None
            criteria: list[set[int]] = []
            if selector.regions:
                criteria.append(_union(self._by_region, selector.regions))
            if selector.zones:
                criteria.append(_union(self._by_zone, selector.zones))
            if selector.sites:
                found_sites = (self.index.get(SiteName(name)) for name in selector.sites)
                criteria.append({i for i in found_sites if i is not None})
            for label in selector.match_labels.items():
                criteria.append(self._by_label.get(label, set()))
            for criterion in criteria:
                chosen = criterion if chosen is None else chosen & criterion
            if chosen is None:
                found = np.arange(len(self.names), dtype=np.int64)
            else:
                found = np.array(sorted(chosen), dtype=np.int64)
            self._eligible[key] = found
        return found

    def near_cells(self, vectors: Floats, angle: float) -> tuple[Ints, Ints, Ints]:
        """Grid cells that may hold a site within ``angle`` of some vector.

        Returns the cells, how many vectors are within ``angle`` of each cell's centre (how
        central it is), and how many sites each cell has.
        """
        n = len(self._cell_members)
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        dots = vectors @ self.cell_centre.T
        if angle >= math.pi:
            chosen = np.arange(n)
        else:
            reach = np.minimum(math.pi, angle + self._cell_radius)
            chosen = np.flatnonzero((dots >= np.cos(reach)[None, :] - 1e-9).any(axis=0))
        central = (dots[:, chosen] >= math.cos(angle) - 1e-9).sum(axis=0)
        return chosen, central.astype(np.int64), self._cell_size[chosen]

    def members(self, cells: Ints, in_pool: Bools) -> Ints:
        """The pool sites in ``cells``, ascending."""
        if not len(cells):
            return np.zeros(0, dtype=np.int64)
        sites = np.sort(np.concatenate([self._cell_members[c] for c in cells.tolist()]))
        out: Ints = sites[in_pool[sites]]
        return out

    def rtt(self, origin: int, sites: Ints) -> Floats:
        """Estimated round trips (ms) from site ``origin`` to ``sites``; both must be located."""
        return _rtt(self.lat[origin], self.cos_lat[origin], self.lon[origin], self, sites)


def _union(by_value: Mapping[str, set[int]], values: Iterable[str]) -> set[int]:
    """Indices having any of ``values``."""
    out: set[int] = set()
    for value in values:
        out |= by_value.get(value, set())
    return out


def _positions(values: Iterable[str]) -> dict[str, set[int]]:
    """Index sets by value."""
    out: dict[str, set[int]] = {}
    for i, value in enumerate(values):
        out.setdefault(value, set()).add(i)
    return out


def _rtt(
    lat: float | Floats, cos_lat: float | Floats, lon: float | Floats, fleet: _Fleet, sites: Ints
) -> Floats:
    """``geo.estimated_rtt_ms(geo.great_circle_km(...))`` over arrays (haversine, as there)."""
    half_dphi = (fleet.lat[sites] - lat) / 2
    half_dlambda = (fleet.lon[sites] - lon) / 2
    h = np.sin(half_dphi) ** 2 + cos_lat * fleet.cos_lat[sites] * np.sin(half_dlambda) ** 2
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(1.0, h)))
    out: Floats = np.where(km == 0, 0.0, BASE_RTT_MS + 2 * km / FIBRE_KM_PER_MS)
    return out


class _Ledger:
    """Capacity taken per site (arrays in fleet order), summed in app order."""

    def __init__(self, n: int) -> None:
        self.cpu: Floats = np.zeros(n, dtype=float)
        self.memory: Ints = np.zeros(n, dtype=np.int64)
        self.replicas: Ints = np.zeros(n, dtype=np.int64)

    def copy(self) -> _Ledger:
        out = _Ledger(0)
        out.cpu, out.memory, out.replicas = (
            self.cpu.copy(),
            self.memory.copy(),
            self.replicas.copy(),
        )
        return out

    def add(self, use: Mapping[int, int], *, cpu: float, memory: int) -> None:
        """Charge ``use`` (replicas per site) of an app of ``cpu`` and ``memory`` per replica."""
        # Element by element, in a fixed order: a full and an incremental pass must produce the
        # same float sums.
        for i, count in use.items():
            self.cpu[i] += count * cpu
            self.memory[i] += count * memory
            self.replicas[i] += count


def _rooms(
    fleet: _Fleet, ledger: _Ledger, app: TrafficApp, sites: Ints, clip: int
) -> tuple[Ints, Ints]:
    """Room for ``app`` at ``sites`` (clipped at ``clip``) and the code of the limit that binds.

    The limits are those of ``explicit.room`` plus ``maxReplicasPerSite``; the first on ties.
    """
    fits = fleet.max_replicas[sites] - ledger.replicas[sites]
    code = np.zeros(len(sites), dtype=np.int64)
    if app.cpu > 0:
        by_cpu = np.floor((fleet.cpu[sites] - ledger.cpu[sites] + CPU_EPSILON) / app.cpu)
        by_cpu_int = np.clip(by_cpu, -(2**62), 2**62).astype(np.int64)
        code = np.where(by_cpu_int < fits, 1, code)
        fits = np.minimum(fits, by_cpu_int)
    if app.memory > 0:
        by_memory = (fleet.memory[sites] - ledger.memory[sites]) // app.memory
        code = np.where(by_memory < fits, 2, code)
        fits = np.minimum(fits, by_memory)
    fits = np.maximum(fits, 0)
    if app.max_replicas_per_site is not None:
        code = np.where(app.max_replicas_per_site < fits, 3, code)
        fits = np.minimum(fits, app.max_replicas_per_site)
    room: Ints = np.minimum(fits, clip)
    return room, code


class _Reads:
    """Reads an app's room at sites, and records every read: what the result depended on."""

    def __init__(self, fleet: _Fleet, ledger: _Ledger, app: TrafficApp, clip: int) -> None:
        self._fleet, self._ledger, self._app, self._clip = fleet, ledger, app, clip
        self._chunks: list[tuple[Ints, Ints, Ints]] = []

    def __call__(self, sites: Ints) -> Ints:
        """Room (clipped) at ``sites``."""
        rooms, codes = _rooms(self._fleet, self._ledger, self._app, sites, self._clip)
        self._chunks.append((sites, rooms, codes))
        return rooms

    def room_at(self, sites: Sequence[int]) -> dict[int, int]:
        """Room at a few sites, by site."""
        rooms = self(np.array(sites, dtype=np.int64))
        return dict(zip(sites, rooms.tolist(), strict=True))

    def code_at(self, sites: Sequence[int]) -> dict[int, int]:
        """The binding limit at a few sites, by site."""
        at = np.array(sites, dtype=np.int64)
        _, codes = _rooms(self._fleet, self._ledger, self._app, at, self._clip)
        return dict(zip(sites, codes.tolist(), strict=True))

    def all(self) -> tuple[Ints, Ints, Ints]:
        """Every site read, ascending, with its room and limit code."""
        if not self._chunks:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        sites = np.concatenate([chunk[0] for chunk in self._chunks])
        rooms = np.concatenate([chunk[1] for chunk in self._chunks])
        codes = np.concatenate([chunk[2] for chunk in self._chunks])
        unique, first = np.unique(sites, return_index=True)
        return unique, rooms[first], codes[first]


# ---------------------------------------------------------------------------------------------
# One app


@dataclass(frozen=True)
class _Record:
    """One app's placement, with what it depended on (for the incremental pass)."""

    shares: Mapping[SiteName, Share]
    routes: tuple[Route, ...]
    shortfall: str | None
    use: Mapping[int, int]
    """Replicas charged per site index (held shares included)."""
    cpu: float
    memory: int
    settled: bool
    """Whether the shares equal the ``current`` they were computed from (a fixed point)."""
    clip: int
    """Room above this made no difference to the result."""
    consulted: Ints
    """Site indices whose room the computation read, ascending."""
    rooms: Ints
    """Their room, clipped, as read."""
    codes: Ints
    """Their binding limit, as read (only meaningful where the room was below ``clip``)."""

    def depends_on(self, dirty: set[int], fleet: _Fleet, ledger: _Ledger, app: TrafficApp) -> bool:
        """Whether the room read at any of the ``dirty`` sites would read differently now."""
        wanted = np.fromiter(dirty, dtype=np.int64, count=len(dirty))
        at = np.searchsorted(self.consulted, wanted)
        inside = at < len(self.consulted)
        hit = np.zeros(len(wanted), dtype=bool)
        hit[inside] = self.consulted[at[inside]] == wanted[inside]
        if not hit.any():
            return False
        sites = wanted[hit]
        rooms, codes = _rooms(fleet, ledger, app, sites, self.clip)
        was_rooms = self.rooms[at[hit]]
        was_codes = self.codes[at[hit]]
        differs = (rooms != was_rooms) | ((rooms < self.clip) & (codes != was_codes))
        return bool(differs.any())


@dataclass
class _Space:
    """One app's covering problem: active origins (rows) by candidate sites (columns)."""

    origins: list[SiteName]
    loads: Floats
    """Requests in flight per active origin."""
    cols: Ints
    """Candidate site indices, ascending (name order)."""
    rtt: Floats
    """Round trip per origin and candidate, inf beyond the bound."""
    in_bound: Bools
    """Whether each candidate is within the bound of each origin, room or not."""
    addable: Bools
    """Candidates that may be opened (the others may only stay open)."""
    cap: Floats
    """Requests in flight each candidate can carry: room * T."""
    usable: Bools
    """Room for at least one replica."""
    target: float
    scale: float
    """``L``: the latency bound, or the scale for unbounded apps."""
    fleet_max: int
    """The app's ``maxReplicas``."""
    within: Bools = field(init=False)
    """Within the bound and with room: where an origin can be served."""
    options: Ints = field(init=False)
    """Candidates per origin that can serve it and may be opened."""
    rtt0: Floats = field(init=False)
    """``rtt`` with 0 where it cannot serve, for sums."""

    def __post_init__(self) -> None:
        self.within = self.in_bound & self.usable[None, :]
        self.rtt = np.where(self.within, self.rtt, np.inf)
        self.options = (self.within & self.addable[None, :]).sum(axis=1).astype(np.int64)
        self.rtt0 = np.where(self.within, self.rtt, 0.0)


@dataclass(frozen=True)
class _Solution:
    """An open set of candidate columns with its assignment, replicas and cost."""

    cols: tuple[int, ...]
    flow: Floats
    """Requests in flight per origin (rows) and open column (in ``cols`` order)."""
    replicas: Ints
    unserved: Floats
    served: Bools
    cost: float
    capped: bool
    """Whether the app's ``maxReplicas`` cut replicas the demand needed."""


def _place_app(
    app: TrafficApp,
    fleet: _Fleet,
    ledger: _Ledger,
    current: Mapping[SiteName, Share],
    params: TrafficParams,
    measured: Mapping[SiteName, Mapping[SiteName, float]],
) -> _Record:
    """Place one app given what the apps before it took (``ledger``)."""
    eligible = fleet.eligible(app.selector)
    is_eligible = np.zeros(len(fleet.names), dtype=bool)
    is_eligible[eligible] = True
    pool = eligible[fleet.reachable[eligible]]
    target = app.target_concurrency

    held: dict[SiteName, Share] = {}
    now: dict[int, Share] = {}  # current shares at reachable eligible sites
    for name, share in sorted(current.items()):
        i = fleet.index.get(name)
        if i is None or not is_eligible[i] or not share.placed:
            continue
        if fleet.reachable[i]:
            now[i] = share
        else:
            held[name] = share

    rows = sorted(app.demand, key=lambda d: d.origin)
    active = [d for d in rows if is_active(d, app.idle_timeout)]
    past = [d for d in rows if not is_active(d, app.idle_timeout)]
    loads = np.array([d.concurrency for d in active], dtype=float)
    margin = params.keep_load_margin
    inflated = loads / (1 - margin)
    base = max(
        math.ceil(float(inflated.sum()) / target - _EPS),
        app.min_replicas,
        max((share.replicas for share in now.values()), default=0),
        1,
    )
    clip = 2 * base + 2
    bound = app.max_latency_ms
    scale = bound if bound is not None else params.latency_scale_ms
    fleet_max = app.max_replicas

    reads = _Reads(fleet, ledger, app, clip)
    if now:
        reads(np.array(sorted(now), dtype=np.int64))
    cols, rtt, addable = _near(
        fleet,
        pool,
        [d.origin for d in active],
        bound,
        measured,
        narrow=_Narrowing(reads, sorted(now), params.candidate_limit),
    )
    rooms = reads(cols)
    space = _Space(
        origins=[d.origin for d in active],
        loads=loads,
        cols=cols,
        rtt=rtt,
        in_bound=np.isfinite(rtt),
        addable=addable,
        cap=rooms.astype(float) * target,
        usable=rooms >= 1,
        target=target,
        scale=scale,
        fleet_max=fleet_max,
    )
    col_of = {int(c): j for j, c in enumerate(cols.tolist())}
    max_open = min(app.max_sites if app.max_sites is not None else fleet_max, fleet_max)

    # Open sites: the kept set against a fresh one (rule 5).
    solution: _Solution | None = None
    if active and max_open > 0:
        current_open = [
            col_of[i]
            for i, share in now.items()
            if share.replicas > 0 and i in col_of and space.usable[col_of[i]]
        ]
        current_open = [j for j in current_open if space.within[:, j].any()]
        current_open.sort(key=lambda j: (-now[int(cols[j])].replicas, j))
        start = sorted(current_open[:max_open])
        prefer = np.zeros(len(cols), dtype=bool)
        for i in now:
            if i in col_of:
                prefer[col_of[i]] = True
        kept = _settle(space, start, max_open, inflated, prefer, params, keep=True)
        same_inputs = not start and not prefer.any() and params.keep_load_margin == 0
        if same_inputs and params.move_margin == 0:
            fresh = kept  # the same computation
        else:
            fresh = _settle(space, [], max_open, inflated, None, params, keep=False)
        solution = kept
        if fresh.cols != kept.cols:
            bar = kept.cost * (1 - params.move_margin) if start else kept.cost
            if fresh.cost < bar - _EPS:
                solution = fresh

    # Replicas per open site (rule 5), fleet bounds and local minimums (rule 7).
    open_sites: list[int] = []  # fleet indices, ascending
    replicas: dict[int, int] = {}
    needed: dict[int, int] = {}
    flow_rows: list[tuple[int, int, float]] = []  # (origin row, fleet index, flow)
    served = np.zeros(len(active), dtype=bool)
    unserved = loads.copy()
    capped_by_fleet = False
    if solution is not None and solution.cols:
        sol = solution
        capped_by_fleet = sol.capped
        load_at = sol.flow.sum(axis=0)
        for j, col in enumerate(sol.cols):
            i = int(cols[col])
            open_sites.append(i)
            needed[i] = int(sol.replicas[j])
            had = now[i].replicas if i in now else 0
            kept_count = _hysteresis(
                needed[i], had, float(load_at[j]), target, params.scale_down_margin
            )
            replicas[i] = max(needed[i], min(kept_count, int(rooms[col])))
        served, unserved = sol.served, sol.unserved
        for o, j in zip(*np.nonzero(sol.flow > 0), strict=True):
            flow_rows.append((int(o), int(cols[sol.cols[j]]), float(sol.flow[o, j])))
        for o in np.flatnonzero(served & (loads <= 0)).tolist():
            best = min(range(len(sol.cols)), key=lambda j: (space.rtt[o, sol.cols[j]], j))
            flow_rows.append((o, int(cols[sol.cols[best]]), 0.0))

    # Parked sites and minSites (rules 6 and 7).
    origin_region = {
        d.origin: (fleet.region[fleet.index[d.origin]] if d.origin in fleet.index else "?")
        for d in rows
    }
    past_regions = {origin_region[d.origin] for d in past} - {
        origin_region[d.origin] for d in active
    }
    n_open = len(open_sites)
    room_left_sites = (app.max_sites - n_open) if app.max_sites is not None else len(pool)
    # minReplicas needs a site to run at, demand or not.
    min_sites = max(app.min_sites, 1 if app.min_replicas > 0 else 0)
    limit = max(min_sites - n_open, min(params.max_parked_sites, len(past_regions)))
    limit = max(0, min(limit, room_left_sites)) if fleet_max > 0 else 0
    anchors = active or past
    parked: list[int] = []
    if limit > 0:
        candidates = sorted(i for i in now if i not in replicas)
        nearness = _nearness(fleet, anchors, candidates, measured)
        candidates.sort(key=lambda i: (nearness[i], fleet.names[i]))
        parked = candidates[:limit]
    want_more = min(min_sites - n_open, room_left_sites) - len(parked)
    if want_more > 0 and fleet_max > 0:
        taken = set(replicas) | set(parked)
        parked += _new_sites(app, fleet, pool, anchors, want_more, taken, reads, measured, bound)

    # minReplicas: evenly over open sites by name, then over parked ones (they then run).
    local_min: dict[int, int] = {}
    spare = app.min_replicas
    if spare > 0:
        # Over the open sites, or if none, the parked ones (which then run); by name, not in the
        # order chosen, so the same next round. Not over parked sites while some are open: next
        # round they would count as open, and which to keep would be a coin toss.
        group = sorted(open_sites) or sorted(parked)
        if group:
            spare = _spread_min(group, spare, reads.room_at(group), local_min)
    for i, count in local_min.items():
        replicas[i] = max(replicas.get(i, 0), count)
    if sum(replicas.values()) > fleet_max:
        order = sorted(replicas)
        counts = np.array([replicas[i] for i in order], dtype=np.int64)
        floor = np.array([needed.get(i, 1) if needed else 1 for i in order], dtype=np.int64)
        floor = np.minimum(floor, counts)
        counts = _trim(counts, fleet_max, floor)
        replicas = {i: int(c) for i, c in zip(order, counts.tolist(), strict=True) if c > 0}
        local_min = {i: min(m, replicas.get(i, 0)) for i, m in local_min.items()}

    # Shares with local bounds (rule 8).
    placed = sorted(set(replicas) | set(parked))
    bounds: dict[int, int] = {}
    room_at = reads.room_at(placed)
    for i in placed:
        r = replicas.get(i, 0)
        room = room_at[i]
        top = max(2 * r, r + 2)
        if app.max_replicas_per_site is not None:
            top = min(top, app.max_replicas_per_site)
        bounds[i] = max(r, 1, min(room, top))
    _fit_bounds(bounds, replicas, fleet_max)
    shares: dict[SiteName, Share] = dict(held)
    for i in placed:
        r = replicas.get(i, 0)
        shares[fleet.names[i]] = Share(
            replicas=r, min_replicas=min(local_min.get(i, 0), r), max_replicas=bounds[i]
        )
    shares = dict(sorted(shares.items()))

    routes = tuple(
        sorted(
            (
                Route(origin=active[o].origin, site=fleet.names[i], concurrency=x)
                for o, i, x in flow_rows
            ),
            key=lambda route: (route.origin, route.site),
        )
    )

    use: dict[int, int] = {}
    for name, share in shares.items():
        if share.replicas > 0:
            use[fleet.index[name]] = share.replicas
    shortfall = _explain(
        app,
        fleet=fleet,
        pool=pool,
        space=space,
        active=active,
        served=served,
        unserved=unserved,
        reads=reads,
        capped_by_fleet=capped_by_fleet,
        max_open=max_open,
        n_open=n_open,
        n_placed=len(placed),
        local_min=sum(local_min.values()),
        measured=measured,
    )
    consulted, consulted_rooms, consulted_codes = reads.all()
    return _Record(
        shares=shares,
        routes=routes,
        shortfall=shortfall,
        use=use,
        cpu=app.cpu,
        memory=app.memory,
        settled=shares == dict(sorted(current.items())),
        clip=clip,
        consulted=consulted,
        rooms=consulted_rooms,
        codes=consulted_codes,
    )


@dataclass(frozen=True)
class _Narrowing:
    """How to cut an app's candidate sites down when there are more than ``limit``."""

    reads: _Reads
    current: Sequence[int]
    """Sites the app is at now: always kept."""
    limit: int


def _near(
    fleet: _Fleet,
    pool: Ints,
    origins: Sequence[SiteName],
    bound: float | None,
    measured: Mapping[SiteName, Mapping[SiteName, float]],
    *,
    narrow: _Narrowing | None = None,
) -> tuple[Ints, Floats, Bools]:
    """Candidate sites in ``pool`` for ``origins``, the round trips (inf beyond ``bound``), and
    which candidates may be opened (not those kept only because the app runs there now).

    A coarse grid first keeps the cells near the origins; a matrix product of unit vectors then
    the sites that may be within the bound (the cosine of the angle bounds the distance), and the
    haversine gives the round trips that count. With ``narrow``, when the cells hold more than
    ``narrow.limit`` sites, only those a covering can need are considered (see ``_narrowed``),
    and the current sites; those may stay open but no new choice may depend on them, or placing
    again from the result could choose differently.
    """
    k = len(origins)
    if k == 0 or len(pool) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((k, 0)), np.zeros(0, dtype=bool)
    at = [fleet.index.get(o, -1) for o in origins]
    located = np.array([i >= 0 and bool(fleet.has_xy[i]) for i in at], dtype=bool)
    rows_xy = np.flatnonzero(located)
    origin_idx = np.array([i if i >= 0 else 0 for i in at], dtype=np.int64)
    in_pool = np.zeros(len(fleet.names), dtype=bool)
    in_pool[pool] = True
    sticky = np.zeros(0, dtype=np.int64)
    angle = math.pi
    if bound is not None:
        km = max(0.0, (bound - BASE_RTT_MS) * FIBRE_KM_PER_MS / 2)
        angle = min(math.pi, km / EARTH_RADIUS_KM)
    threshold = math.cos(angle) - 1e-9

    # The origin itself (0 ms) and measured round trips, which override the estimates.
    extra_r: list[int] = []
    extra_c: list[int] = []
    extra_ms: list[float] = []
    own = np.full(k, -1, dtype=np.int64)
    for r, (name, i) in enumerate(zip(origins, at, strict=True)):
        if i >= 0 and in_pool[i]:
            own[r] = i
            extra_r.append(r)
            extra_c.append(i)
            extra_ms.append(0.0)
        for site, value in sorted(measured.get(name, {}).items()):
            j = fleet.index.get(site)
            if j is not None and in_pool[j]:
                extra_r.append(r)
                extra_c.append(j)
                extra_ms.append(value)
    er = np.array(extra_r, dtype=np.int64)
    ec = np.array(extra_c, dtype=np.int64)
    if bound is None and narrow is not None:
        # An origin no located site reaches may go anywhere (below): every site is a candidate
        # then, and narrowing would only make the choice depend on the current sites.
        reached = np.zeros(k, dtype=bool)
        reached[er] = True
        if (~reached & (~located | ~fleet.has_xy[pool].any())).any():
            narrow = None

    # Located sites that may be within the bound of some located origin.
    vectors = fleet.xyz[origin_idx[rows_xy]]
    xy_cols = np.zeros(0, dtype=np.int64)
    if len(rows_xy):
        cells, central, sizes = fleet.near_cells(vectors, angle)
        if narrow is not None and int(sizes.sum()) > narrow.limit:
            xy_cols = _narrowed(
                fleet, narrow, vectors, threshold, cells, central, own[rows_xy], in_pool
            )
            current = np.array(narrow.current, dtype=np.int64)
            current = current[in_pool[current] & fleet.has_xy[current]] if len(current) else current
            sticky = np.setdiff1d(current, np.union1d(xy_cols, ec))
            xy_cols = np.union1d(xy_cols, sticky)
        else:
            xy_cols = fleet.members(cells, in_pool)
    maybe = (vectors @ fleet.xyz[xy_cols].T) >= threshold
    hit = maybe.any(axis=0)
    xy_cols, maybe = xy_cols[hit], maybe[:, hit]

    cols = np.union1d(xy_cols, ec)
    rtt = np.full((k, len(cols)), np.inf)
    rr, cc = np.nonzero(maybe)
    if len(rr):
        o = origin_idx[rows_xy[rr]]
        rtt[rows_xy[rr], np.searchsorted(cols, xy_cols[cc])] = _rtt(
            fleet.lat[o], fleet.cos_lat[o], fleet.lon[o], fleet, xy_cols[cc]
        )
    if len(er):
        rtt[er, np.searchsorted(cols, ec)] = np.array(extra_ms)
    if bound is not None:
        rtt[rtt > bound] = np.inf
    else:
        lost = ~np.isfinite(rtt).any(axis=1)
        if lost.any():
            # No located site can serve these origins: any site may, at an unknown distance.
            cols_all = np.union1d(cols, pool)
            wider = np.full((k, len(cols_all)), np.inf)
            wider[:, np.searchsorted(cols_all, cols)] = rtt
            wider[lost] = UNKNOWN_RTT_MS
            cols, rtt = cols_all, wider
    found = np.isfinite(rtt).any(axis=0)
    addable = ~np.isin(cols, sticky)
    return cols[found], rtt[:, found], addable[found]


def _narrowed(
    fleet: _Fleet,
    narrow: _Narrowing,
    vectors: Floats,
    threshold: float,
    cells: Ints,
    central: Ints,
    own: Ints,
    in_pool: Bools,
) -> Ints:
    """The candidates a covering can need, of too many (a wide bound reaches a continent).

    The origin sites themselves; up to ``_CELLS_KEPT`` grid cells, chosen
    as a covering chooses sites (the cell whose centre reaches the most origins not reached yet,
    then the next), and in each the ``_PER_CELL_KEPT`` sites with room reaching the most
    origins; and for each origin its own site cannot serve, the ``_NEAREST_KEPT`` nearest sites
    with room. Only the rooms of the sites looked at are read, so the result depends on few.
    """
    keep = [own[own >= 0]]
    # Cells chosen as a covering would choose sites (the one whose centre reaches the most
    # origins not reached yet, then the next), so that every cluster of demand gets some; of
    # each, the sites with room reaching the most origins.
    reached = _central_reach(fleet, vectors, cells, threshold)
    waiting = np.ones(len(vectors), dtype=bool)
    taken = np.zeros(len(cells), dtype=bool)
    for _ in range(_CELLS_KEPT):
        score = np.where(taken, -1, reached[waiting].sum(axis=0))
        if not len(score) or score.max() <= 0:
            break
        best = int(np.argmax(score))
        taken[best] = True
        waiting &= ~reached[:, best]
        sites = fleet.members(cells[best : best + 1], in_pool)
        if not len(sites):
            continue
        usable = narrow.reads(sites) >= 1
        sites = sites[usable]
        width = ((vectors @ fleet.xyz[sites].T) >= threshold).sum(axis=0)
        order = np.lexsort((sites, -width))[:_PER_CELL_KEPT]
        keep.append(sites[order[width[order] > 0]])
    # Origins their own site cannot serve: nearest sites with room, looked at nearest first.
    has_own = own >= 0
    own_usable = np.zeros(len(own), dtype=bool)
    if has_own.any():
        own_usable[has_own] = narrow.reads(own[has_own]) >= 1
    lacking = np.flatnonzero(~own_usable)
    if len(lacking):
        everyone = fleet.members(cells, in_pool)
        close = vectors[lacking] @ fleet.xyz[everyone].T
        close[close < threshold] = -np.inf
        # A first look at the few nearest of each, then further for those that found no room.
        few = min(4 * _NEAREST_KEPT, len(everyone))
        if few:
            nearest = np.argpartition(-close, few - 1, axis=1)[:, :few]
            for row in range(len(lacking)):
                ranked = nearest[row][np.lexsort((nearest[row], -close[row, nearest[row]]))]
                ranked = ranked[np.isfinite(close[row, ranked])]
                picked = _with_room(narrow.reads, everyone[ranked], _NEAREST_KEPT)
                if len(picked) < _NEAREST_KEPT and len(ranked) == few:
                    order = np.argsort(-close[row], kind="stable")
                    order = order[np.isfinite(close[row, order])]
                    picked = _with_room(narrow.reads, everyone[order], _NEAREST_KEPT)
                keep.append(picked)
    kept = np.unique(np.concatenate(keep)).astype(np.int64)
    # Unlocated sites come in only as their own origin or through a measured round trip.
    out: Ints = kept[fleet.has_xy[kept]]
    return out


def _central_reach(fleet: _Fleet, vectors: Floats, cells: Ints, threshold: float) -> Bools:
    """Which origins (rows) each cell's centre (columns) reaches."""
    out: Bools = (vectors @ fleet.cell_centre[cells].T) >= threshold
    return out


def _with_room(reads: _Reads, sites: Ints, count: int) -> Ints:
    """The first ``count`` of ``sites`` with room, reading rooms a chunk at a time."""
    picked: list[Ints] = []
    found = 0
    for start in range(0, len(sites), 16):
        chunk = sites[start : start + 16]
        usable = chunk[reads(chunk) >= 1][: count - found]
        picked.append(usable)
        found += len(usable)
        if found >= count:
            break
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def _nearness(
    fleet: _Fleet,
    anchors: Sequence[Demand],
    sites: Sequence[int],
    measured: Mapping[SiteName, Mapping[SiteName, float]],
) -> dict[int, float]:
    """Shortest round trip from any anchor origin to each site (inf when unknown)."""
    out = dict.fromkeys(sites, math.inf)
    if not sites or not anchors:
        return out
    targets = np.array(sites, dtype=np.int64)
    located = fleet.has_xy[targets]
    for d in anchors:
        i = fleet.index.get(d.origin)
        if i is not None and fleet.has_xy[i] and located.any():
            ms = fleet.rtt(i, targets[located])
            for s, value in zip(targets[located].tolist(), ms.tolist(), strict=True):
                out[s] = min(out[s], value)
        if i is not None and i in out:
            out[i] = 0.0
        for site, value in measured.get(d.origin, {}).items():
            j = fleet.index.get(site)
            if j is not None and j in out:
                out[j] = min(out[j], value)
    return out


def _new_sites(
    app: TrafficApp,
    fleet: _Fleet,
    pool: Ints,
    anchors: Sequence[Demand],
    count: int,
    taken: set[int],
    reads: _Reads,
    measured: Mapping[SiteName, Mapping[SiteName, float]],
    bound: float | None,
) -> list[int]:
    """``count`` more sites to park the app at: near the anchors, else spread by a hash."""
    chosen: list[int] = []
    if anchors:
        cols, rtt, _ = _near(fleet, pool, [d.origin for d in anchors], bound, measured)
        if len(cols):
            nearest = rtt.min(axis=0)
            order = sorted(range(len(cols)), key=lambda j: (nearest[j], j))
            ranked = cols[np.array(order, dtype=np.int64)]
            free = ranked[~np.isin(ranked, np.array(sorted(taken), dtype=np.int64))]
            chosen = _with_room(reads, free, count).tolist()
        if len(chosen) == count:
            return chosen
    # Spread over the fleet: a walk with a stride coprime to the pool size, from a point set by
    # the app's key, so apps with no demand do not all land on the first site by name.
    for group in (pool[fleet.has_xy[pool]], pool[~fleet.has_xy[pool]]):
        n = len(group)
        if n == 0:
            continue
        digest = hashlib.blake2b(app.key.encode(), digest_size=8).digest()
        start = int.from_bytes(digest, "big") % n
        stride = max(1, round(n * 0.6180339887))
        while math.gcd(stride, n) != 1:
            stride += 1
        for step in range(n):
            i = int(group[(start + step * stride) % n])
            if i in taken or i in chosen:
                continue
            if int(reads(np.array([i], dtype=np.int64))[0]) >= 1:
                chosen.append(i)
                if len(chosen) == count:
                    return chosen
    return chosen


def _spread_min(group: list[int], spare: int, caps: dict[int, int], out: dict[int, int]) -> int:
    """Divide ``spare`` evenly over ``group`` (order decides the remainder) within ``caps``."""
    while spare > 0:
        open_slots = [i for i in group if out.get(i, 0) < caps[i]]
        if not open_slots:
            break
        each, extra = divmod(spare, len(open_slots))
        for rank, i in enumerate(open_slots):
            give = min(each + (1 if rank < extra else 0), caps[i] - out.get(i, 0))
            out[i] = out.get(i, 0) + give
            spare -= give
    return spare


def _hysteresis(needed: int, had: int, load: float, target: float, margin: float) -> int:
    """Replicas to run: up at once, down only below ``(had - 1) * T * (1 - margin)``."""
    if had <= needed:
        return needed
    keep_down_to = 1 + math.floor(load / (target * (1 - margin)) + _EPS)
    return min(had, max(needed, keep_down_to))


def _trim(counts: Ints, total: int, floor: Ints) -> Ints:
    """Take replicas off down to ``total``: largest surplus over ``floor`` first, last on ties."""
    out = counts.copy()
    excess = int(out.sum()) - total
    while excess > 0:
        surplus = out - floor
        if surplus.max() <= 0:
            floor = np.zeros_like(floor)
            continue
        j = len(out) - 1 - int(np.argmax(surplus[::-1]))
        out[j] -= 1
        excess -= 1
    return out


def _trim_spill(replicas: Ints, load: Floats, total: int, target: float) -> Ints:
    """Take replicas off down to ``total``, each where it spills the least load (keeping 1)."""
    out = replicas.copy()
    for _ in range(int(out.sum()) - total):
        spill = np.minimum(load, out * target) - (out - 1) * target
        spill = np.where(out > 1, np.maximum(spill, 0.0), np.inf)
        if not np.isfinite(spill).any():
            break
        out[int(np.argmin(spill))] -= 1
    return out


def _fit_bounds(bounds: dict[int, int], replicas: Mapping[int, int], total: int) -> None:
    """Trim headroom above ``max(replicas, 1)``, largest first, while the sum exceeds ``total``."""
    excess = sum(bounds.values()) - total
    while excess > 0:
        room = {i: b - max(replicas.get(i, 0), 1) for i, b in bounds.items()}
        best = max(room, key=lambda i: (room[i], -i), default=None)
        if best is None or room[best] <= 0:
            return
        bounds[best] -= 1
        excess -= 1


# ---------------------------------------------------------------------------------------------
# Choosing open sites: greedy covering, assignment, local search


def _settle(
    space: _Space,
    start: list[int],
    max_open: int,
    inflated: Floats,
    prefer: Bools | None,
    params: TrafficParams,
    *,
    keep: bool,
) -> _Solution:
    """Greedy covering from ``start`` then local search, repeated until neither changes a thing.

    ``keep``: the kept set (covers real demand; a swap must save ``move_margin``); else the fresh
    set (covers the demand with the keep margin).
    """
    cover = space.loads if keep else inflated
    chosen = sorted(start)
    for _ in range(_MAX_ROUNDS):
        grown = _greedy(space, cover, chosen, max_open, prefer)
        better = _improve(space, grown, inflated, params, keep=keep)
        if better == chosen:
            break
        chosen = better
    solution = _evaluate(space, chosen, space.loads)
    assert solution is not None
    return solution


def _greedy(
    space: _Space, loads: Floats, start: list[int], max_open: int, prefer: Bools | None
) -> list[int]:
    """Open sites one by one, each the one serving most of what is still unserved.

    "Most" in units of the unserved cost: origins served plus replica-loads carried, within the
    site's room and what ``maxReplicas`` leaves. Where room binds, the smallest origins are
    counted (and then served) first: they save the most unserved cost per unit of room.
    """
    target = space.target
    opened = sorted(start)
    flow, left, served = _assign(space, opened, loads)
    need = ~served | (left > _EPS)
    coverable = space.options > 0
    left = left.copy()
    capleft = space.cap.copy()
    if opened:
        capleft[opened] -= flow.sum(axis=0)
    budget = space.fleet_max * target - float(flow.sum())
    avail = space.usable & space.addable
    avail[opened] = False
    pref = prefer.astype(np.int64) if prefer is not None else np.zeros(len(space.cols), np.int64)
    index = np.arange(len(space.cols))
    while len(opened) < max_open:
        rows = np.flatnonzero(need & coverable)
        if len(rows) == 0:
            break
        within = space.within[rows]
        waiting = left[rows]
        total = (within * waiting[:, None]).sum(axis=0)
        count = within.sum(axis=0)
        limit = np.minimum(np.maximum(capleft, 0.0), max(budget, 0.0))
        carried = np.minimum(total, limit)
        share = np.where(total > 0, carried / np.where(total > 0, total, 1), 1.0)
        gain = count * share + carried / target
        ok = avail & (count > 0)
        if not ok.any():
            break
        for j in np.flatnonzero(ok & (total > limit + _EPS)).tolist():
            gain[j] = _smallest_first_gain(waiting[within[:, j]], float(limit[j]), target)
        lateness = (space.rtt0[rows] * waiting[:, None]).sum(axis=0)
        candidates = np.flatnonzero(ok)
        order = np.lexsort(
            (index[candidates], lateness[candidates], -pref[candidates], -gain[candidates])
        )
        best = int(candidates[order[0]])
        opened.append(best)
        avail[best] = False
        # Fill it: with room to spare, origins with the fewest options first, then the nearest;
        # with room short, the smallest first.
        takers = rows[within[:, best]]
        if total[best] > limit[best] + _EPS:
            takers = takers[np.lexsort((takers, space.rtt[takers, best], left[takers]))]
        else:
            takers = takers[np.lexsort((takers, space.rtt[takers, best], space.options[takers]))]
        for o in takers.tolist():
            take = min(left[o], max(capleft[best], 0.0), max(budget, 0.0))
            left[o] -= take
            capleft[best] -= take
            budget -= take
            if left[o] <= _EPS:
                left[o] = 0.0
                need[o] = False
    return sorted(opened)


def _smallest_first_gain(waiting: Floats, limit: float, target: float) -> float:
    """Unserved cost saved by serving ``waiting`` loads smallest first up to ``limit``."""
    gain = 0.0
    for load in np.sort(waiting).tolist():
        if load <= limit:
            gain += 1 + load / target
            limit -= load
        else:
            if load > 0 and limit > 0:
                gain += (1 + load / target) * limit / load
            break
    return gain


def _assign(
    space: _Space, cols: Sequence[int], loads: Floats, caps: Floats | None = None
) -> tuple[Floats, Floats, Bools]:
    """Each origin to its nearest open site with room, split when room forces it.

    Returns the flow (origins by ``cols``), the load left unserved per origin and whether each
    origin is served at all (an active origin without load is served by any site in reach).
    """
    k = len(loads)
    if not cols:
        return np.zeros((k, 0)), loads.copy(), np.zeros(k, dtype=bool)
    chosen = np.array(cols, dtype=np.int64)
    rtt = space.rtt[:, chosen]
    cap = space.cap[chosen] if caps is None else caps
    nearest = rtt.argmin(axis=1)
    reach = np.isfinite(rtt[np.arange(k), nearest])
    flow = np.zeros((k, len(cols)))
    flow[np.flatnonzero(reach), nearest[reach]] = loads[reach]
    if (flow.sum(axis=0) <= cap).all():
        return flow, np.where(reach, 0.0, loads), reach
    # Room is short: fill origin by origin, nearest site first. Two orders (fewest options and
    # largest demand first; smallest demand first, which serves more origins) and the one that
    # leaves less unserved cost wins.
    options = np.isfinite(rtt).sum(axis=1)
    best: tuple[float, Floats, Floats] | None = None
    index = np.arange(k)
    for order in (np.lexsort((index, -loads, options)), np.lexsort((index, options, loads))):
        flow, left = _fill(rtt, loads, cap, order, options)
        served = reach & ((loads <= 0) | (left < loads))
        score = UNSERVED_COST * _penalty(space, loads, left, served) + LATENCY_COST * float(
            (flow * np.where(np.isfinite(rtt), rtt, 0.0)).sum()
        ) / (space.target * space.scale)
        if best is None or score < best[0]:
            best = (score, flow, left)
    assert best is not None
    _, flow, left = best
    return flow, left, reach & ((loads <= 0) | (left < loads))


def _fill(
    rtt: Floats, loads: Floats, cap: Floats, order: Ints, options: Ints
) -> tuple[Floats, Floats]:
    """Origins in ``order`` each take room at their nearest sites until served or out of reach."""
    flow = np.zeros(rtt.shape)
    free = cap.astype(float).copy()
    left = loads.copy()
    for o in order.tolist():
        if options[o] == 0:
            continue
        for j in np.argsort(rtt[o], kind="stable")[: options[o]].tolist():
            take = min(left[o], free[j])
            if take > 0:
                flow[o, j] += take
                free[j] -= take
                left[o] -= take
            if left[o] <= _EPS:
                left[o] = 0.0
                break
    return flow, left


def _evaluate(
    space: _Space, cols: Sequence[int], loads: Floats, bar: float = math.inf
) -> _Solution | None:
    """Assign, size (within ``maxReplicas``), shift load where it saves a replica, and cost.

    None when the cost cannot be below ``bar`` (then it stops as soon as it knows).
    """
    if math.isfinite(bar) and _lower_bound(space, cols, loads) >= bar:
        return None
    flow, left, served = _assign(space, cols, loads)
    replicas = _size(space, flow)
    capped = bool(replicas.sum() > space.fleet_max)
    if capped:
        replicas = _trim_spill(replicas, flow.sum(axis=0), space.fleet_max, space.target)
        caps = np.minimum(space.cap[np.array(cols)], replicas * space.target)
        flow, left, served = _assign(space, cols, loads, caps)
        replicas = np.minimum(_size(space, flow), replicas)
    penalty = _penalty(space, loads, left, served)
    if math.isfinite(bar):
        # Shifting saves at most one replica per site with more than one.
        floor = _cost(space, cols, flow, replicas, penalty) - REPLICA_COST * int(
            (replicas > 1).sum()
        )
        if floor >= bar:
            return None
    fewest = max(len(cols), math.ceil(float(flow.sum()) / space.target - _EPS))
    if len(cols) > 1 and int(replicas.sum()) > fewest:
        flow, replicas = _pack(space, cols, flow, replicas)
    cost = _cost(space, cols, flow, replicas, penalty)
    return _Solution(
        cols=tuple(cols),
        flow=flow,
        replicas=replicas,
        unserved=left,
        served=served,
        cost=cost,
        capped=capped,
    )


def _lower_bound(space: _Space, cols: Sequence[int], loads: Floats) -> float:
    """A cost no assignment to ``cols`` can beat: room ignored, every origin at its nearest.

    A unit of load left unserved costs more than a replica-load and more than any round trip,
    so serving all that can be reached bounds those terms from below.
    """
    if not cols:
        return UNSERVED_COST * float((1 + loads / space.target).sum())
    nearest = space.rtt[:, np.array(cols)].min(axis=1)
    reached = np.isfinite(nearest)
    latency = float((loads[reached] * nearest[reached]).sum())
    replicas = max(len(cols), math.ceil(float(loads[reached].sum()) / space.target - _EPS))
    unserved = float((1 + loads[~reached] / space.target).sum())
    return (
        SITE_COST * len(cols)
        + REPLICA_COST * replicas
        + LATENCY_COST * latency / (space.target * space.scale)
        + UNSERVED_COST * unserved
    )


def _swap_bounds(space: _Space, rest: Sequence[int], picks: Ints) -> Floats:
    """``_lower_bound`` of ``rest`` plus each of ``picks``, all at once."""
    loads = space.loads
    nearest = space.rtt[:, picks]
    if rest:
        nearest = np.minimum(space.rtt[:, np.array(rest)].min(axis=1)[:, None], nearest)
    reached = np.isfinite(nearest)
    latency = (np.where(reached, nearest, 0.0) * loads[:, None]).sum(axis=0)
    carried = np.where(reached, loads[:, None], 0.0).sum(axis=0)
    n = len(rest) + 1
    replicas = np.maximum(n, np.ceil(carried / space.target - _EPS))
    unserved = np.where(reached, 0.0, (1 + loads / space.target)[:, None]).sum(axis=0)
    out: Floats = (
        SITE_COST * n
        + REPLICA_COST * replicas
        + LATENCY_COST * latency / (space.target * space.scale)
        + UNSERVED_COST * unserved
    )
    return out


def _cost(
    space: _Space, cols: Sequence[int], flow: Floats, replicas: Ints, penalty: float
) -> float:
    """The objective of the module docstring."""
    latency = float((flow * space.rtt0[:, np.array(cols)]).sum()) if cols else 0.0
    return (
        SITE_COST * len(cols)
        + REPLICA_COST * int(replicas.sum())
        + LATENCY_COST * latency / (space.target * space.scale)
        + UNSERVED_COST * penalty
    )


def _penalty(space: _Space, loads: Floats, left: Floats, served: Bools) -> float:
    """Unserved origins and load, in units of ``UNSERVED_COST``."""
    part = np.where(loads > 0, left / np.where(loads > 0, loads, 1.0), np.where(served, 0.0, 1.0))
    return float((part * (1 + loads / space.target)).sum())


def _size(space: _Space, flow: Floats) -> Ints:
    """Replicas for the load at each open site: ``ceil(load / T)``, at least 1."""
    load = flow.sum(axis=0)
    counts = np.ceil(load / space.target - _EPS).astype(np.int64)
    out: Ints = np.maximum(counts, 1)
    return out


def _pack(space: _Space, cols: Sequence[int], flow: Floats, replicas: Ints) -> tuple[Floats, Ints]:
    """Shift load between open sites within the bound where that frees a replica somewhere."""
    target = space.target
    flow = flow.copy()
    replicas = replicas.copy()
    chosen = np.array(cols, dtype=np.int64)
    rtt = space.rtt[:, chosen]
    reachable = np.isfinite(rtt)
    nearest_first = np.argsort(rtt, axis=1, kind="stable")
    load = flow.sum(axis=0)
    slack = replicas * target - load
    over = load - (replicas - 1) * target
    for j in sorted(range(len(cols)), key=lambda j: (over[j], j)):
        if replicas[j] <= 1:
            continue
        excess = float(load[j] - (replicas[j] - 1) * target)
        if excess <= _EPS:
            continue
        free = slack.copy()
        free[j] = 0.0
        elsewhere = (reachable & (free > _EPS)[None, :]).any(axis=1)
        if float(flow[elsewhere, j].sum()) < excess - _EPS or float(free.sum()) < excess - _EPS:
            continue  # cannot free a replica here
        moves: list[tuple[int, int, float]] = []
        for o in np.flatnonzero((flow[:, j] > 0) & elsewhere).tolist():
            movable = float(flow[o, j])
            for t in nearest_first[o].tolist():
                if excess <= _EPS or movable <= _EPS or not reachable[o, t]:
                    break
                if t == j or free[t] <= _EPS:
                    continue
                amount = min(movable, float(free[t]), excess)
                moves.append((o, t, amount))
                free[t] -= amount
                movable -= amount
                excess -= amount
            if excess <= _EPS:
                break
        if excess > _EPS:
            continue
        for o, t, amount in moves:
            flow[o, j] -= amount
            flow[o, t] += amount
            load[j] -= amount
            load[t] += amount
        replicas[j] -= 1
        slack = replicas * target - load
    return flow, replicas


def _improve(
    space: _Space, cols: list[int], inflated: Floats, params: TrafficParams, *, keep: bool
) -> list[int]:
    """Local search from ``cols``: close, replace two by one, swap; first improvement, repeated.

    A move must not serve less of the demand with the keep margin than before (so a site closes
    only when the others could carry more than today's demand), and must lower the cost; a swap
    in the kept set must lower it by ``move_margin``.
    """
    best = _evaluate(space, cols, space.loads)
    assert best is not None
    best_slack = _evaluate_penalty(space, cols, inflated)
    swap_bar = params.move_margin if keep else 0.0
    for _ in range(_MAX_ROUNDS):
        moved = False
        moves = _moves(space, list(best.cols), best, swap_bar, params.swap_limit)
        for candidate, bar in moves:
            need_below = best.cost * (1 - bar) - _EPS
            trial = _evaluate(space, candidate, space.loads, need_below)
            if trial is None or not trial.cost < need_below:
                continue
            slack = _evaluate_penalty(space, candidate, inflated)
            if slack <= best_slack + _EPS:
                best, best_slack, moved = trial, slack, True
                break
        if not moved:
            break
    return list(best.cols)


def _evaluate_penalty(space: _Space, cols: Sequence[int], loads: Floats) -> float:
    """Unserved cost of ``loads`` on ``cols``."""
    _, left, served = _assign(space, cols, loads)
    return _penalty(space, loads, left, served)


def _moves(
    space: _Space, cols: list[int], current: _Solution, swap_bar: float, swap_limit: int
) -> Iterable[tuple[list[int], float]]:
    """Neighbour sets of ``cols``, cheapest to check first, each with the saving it needs."""
    served = current.served
    load = current.flow.sum(axis=0)
    closed = np.ones(len(space.cols), dtype=bool)
    closed[cols] = False
    avail = closed & space.usable & space.addable & space.within.any(axis=0)
    by_load = sorted(range(len(cols)), key=lambda j: (load[j], cols[j]))
    on = space.within[:, cols]
    reached_by = on.sum(axis=1)  # open sites that reach each origin
    # Close one: the others still reach every origin served.
    for j in by_load:
        if len(cols) > 1 and (reached_by[served] - on[served, j] > 0).all():
            yield cols[:j] + cols[j + 1 :], 0.0
    # Replace two by one that reaches what only they reached.
    if len(cols) >= 2:
        # A replacement reaches an origin of each: pairs with such a site between them.
        # (0/1 products in floats: exact, and fast.)
        near = (on.T.astype(float) @ space.within.astype(float)) > 0
        between = (near & avail[None, :]).astype(float)
        pairs = between @ between.T
        for a, b in zip(*np.nonzero(np.triu(pairs, k=1)), strict=True):
            alone = served & (reached_by - on[:, a] - on[:, b] == 0)
            if not alone.any():
                continue
            picks = np.flatnonzero(avail & space.within[alone].all(axis=0))
            if not len(picks):
                continue
            lateness = (space.rtt0[alone][:, picks] * space.loads[alone, None]).sum(axis=0)
            rest = [c for n, c in enumerate(cols) if n not in (a, b)]
            for t in picks[np.lexsort((picks, lateness))][:_MERGE_TRIES].tolist():
                yield sorted([*rest, t]), 0.0
    # Swap one for another that reaches what only it reached.
    short = (current.unserved > _EPS) | ~current.served
    reducible = bool((short & (space.options > 0)).any())
    if len(space.cols) <= swap_limit:
        need_below = current.cost * (1 - swap_bar) - _EPS
        for j in by_load:
            rest = cols[:j] + cols[j + 1 :]
            alone = served & (reached_by - on[:, j] == 0)
            # With demand unserved that some candidate could serve, a swap may trade some
            # origins for more: try them all.
            fits = avail if reducible else avail & space.within[alone].all(axis=0)
            picks = np.flatnonzero(fits)
            if not len(picks):
                continue
            hopeful = _swap_bounds(space, rest, picks) < need_below
            for t in picks[hopeful].tolist():
                yield sorted([*rest, t]), swap_bar


# ---------------------------------------------------------------------------------------------
# Messages


def _explain(
    app: TrafficApp,
    *,
    fleet: _Fleet,
    pool: Ints,
    space: _Space,
    active: Sequence[Demand],
    served: Bools,
    unserved: Floats,
    reads: _Reads,
    capped_by_fleet: bool,
    max_open: int,
    n_open: int,
    n_placed: int,
    local_min: int,
    measured: Mapping[SiteName, Mapping[SiteName, float]],
) -> str | None:
    """Why the app could not serve all its active demand or meet its bounds; None if it did."""
    parts: list[str] = []
    bound = app.max_latency_ms
    where = f"within {_ms(bound)}" if bound is not None else "anywhere"
    total = float(space.loads.sum())
    short = [
        o
        for o in range(len(active))
        if not served[o] or unserved[o] > _EPS * max(1.0, float(space.loads[o]))
    ]
    if short:
        missing = float(sum(unserved[o] for o in short))
        reasons = []
        for o in short:
            d = active[o]
            amount = f"{_num(float(unserved[o]))} of {_num(d.concurrency)}"
            why = _why(
                app,
                o,
                space=space,
                fleet=fleet,
                pool=pool,
                reads=reads,
                where=where,
                capped_by_fleet=capped_by_fleet,
                max_open=max_open,
                n_open=n_open,
                measured=measured,
            )
            reasons.append(f"{d.origin} {amount} ({why})")
        head = (
            f"served {_num(total - missing)} of {_num(total)} requests in flight"
            if total > 0
            else f"{len(short)} active origins unserved"
        )
        parts.append(f"{head}; unserved: {_listing(reasons)}")
    nowhere = "no reachable site matches the selector"
    if n_placed < app.min_sites:
        reason = "no other eligible reachable site has room"
        if len(pool) < app.min_sites:
            reason = f"only {len(pool)} reachable sites match the selector"
            if not len(pool):
                reason = nowhere
        parts.append(f"placed at {n_placed} of minSites {app.min_sites} sites: {reason}")
    if local_min < app.min_replicas:
        reason = nowhere if not len(pool) else "no room at the placed sites"
        if len(pool) and not n_placed:
            reason = "no eligible reachable site has room"
        parts.append(f"{local_min} of minReplicas {app.min_replicas} replicas: {reason}")
    return "; ".join(parts) if parts else None


def _why(
    app: TrafficApp,
    o: int,
    *,
    space: _Space,
    fleet: _Fleet,
    pool: Ints,
    reads: _Reads,
    where: str,
    capped_by_fleet: bool,
    max_open: int,
    n_open: int,
    measured: Mapping[SiteName, Mapping[SiteName, float]],
) -> str:
    """The reason one origin is not fully served."""
    full_at = space.in_bound[o] & ~space.usable & space.addable
    full = [int(space.cols[j]) for j in np.flatnonzero(full_at)]
    if space.options[o] == 0 and not full:
        origin = space.origins[o]
        nearest = _nearest_beyond(fleet, pool, origin, measured)
        if nearest is None:
            return f"no eligible reachable site {where}"
        site, ms = nearest
        return f"no eligible reachable site {where}; nearest: {fleet.names[site]} at {_ms(ms)}"
    if space.options[o] == 0:
        codes = reads.code_at(full)
        named = [f"{fleet.names[i]}: {_LIMITS[codes[i]]}" for i in full]
        return f"sites {where} are full ({_listing(named)})"
    if capped_by_fleet:
        return f"maxReplicas {app.max_replicas} reached"
    if n_open >= max_open:
        if app.max_sites is not None and max_open == app.max_sites:
            return f"maxSites {app.max_sites} reached"
        return f"maxReplicas {app.max_replicas} reached"
    return f"open sites {where} are full"


def _nearest_beyond(
    fleet: _Fleet,
    pool: Ints,
    origin: SiteName,
    measured: Mapping[SiteName, Mapping[SiteName, float]],
) -> tuple[int, float] | None:
    """The eligible reachable site nearest to ``origin`` and its round trip, if any is known."""
    best: tuple[float, int] | None = None
    i = fleet.index.get(origin)
    located = pool[fleet.has_xy[pool]]
    if i is not None and fleet.has_xy[i] and len(located):
        ms = fleet.rtt(i, located)
        j = int(np.argmin(ms))
        best = (float(ms[j]), int(located[j]))
    for site, value in measured.get(origin, {}).items():
        j2 = fleet.index.get(site)
        in_pool = j2 is not None and bool(np.isin(j2, pool))
        if j2 is not None and in_pool and (best is None or value < best[0]):
            best = (value, j2)
    return None if best is None else (best[1], best[0])


def _ms(value: float) -> str:
    return f"{value:.1f} ms" if value != int(value) else f"{int(value)} ms"


def _num(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


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
