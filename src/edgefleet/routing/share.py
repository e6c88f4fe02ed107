"""Each site's share of the routing table: what its edge DNS and ingress answer from.

A site answers for every app, but with the nearest serving sites only, so it needs far less than
the whole table. Its share holds:

- the records of its *neighbourhood* (its ``ShareParams.neighbourhood`` nearest sites, itself
  first): what it probes, spills to and asks for offloads;
- for every app, its rules (residency, access, latency bound) and its *section*: the eligible
  endpoints (at a known, reachable site of the app's regions, ready or wakeable) at
  neighbourhood sites, and, when fewer than ``nearest`` of those are ready with room and within
  the latency bound, also the ``nearest`` closest endpoints of each kind (ready or wakeable, with
  room or full) wherever they are, so that ``choose`` answers exactly what it would from the
  whole table while fewer than ``nearest - limit`` of them are down;
- the records of every site its sections name.

Endpoints carry what answers depend on, no more: ready as 0 or 1 (any ready replica) and
headroom as 0 or 1 (any room), so a replica more or less at a distant site changes nothing here.
The exact counts are in the hub's table and in the neighbours' probe answers.

``Neighbourhoods`` keeps every site's nearest sites; ``EndpointIndex`` finds an app's nearest
endpoints of a kind without scanning them all; ``section`` decides one app's section for one
site. All pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgefleet.geo import EARTH_RADIUS_KM, estimated_rtt_ms, great_circle_km
from edgefleet.routing.table import Endpoint, SitePoint

Kind = tuple[bool, bool]
"""(ready, with room): the four kinds of endpoint ``choose`` ranks apart."""

KINDS: tuple[Kind, ...] = ((True, True), (True, False), (False, True), (False, False))


@dataclass(frozen=True)
class ShareParams:
    """How big a site's share is."""

    neighbourhood: int = 16
    """Sites nearest to a site (itself included) whose endpoints it always sees: more than an
    agent probes (8 by default)."""
    nearest: int = 4
    """Endpoints of each kind a site sees of each app, however far: two answers and two spare
    for the ones its probes find down."""

    def __post_init__(self) -> None:
        if self.neighbourhood < 1 or self.nearest < 1:
            raise ValueError("neighbourhood and nearest must be at least 1")


def quantized(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` as a share carries it: ready and headroom as 0 or 1."""
    return Endpoint(
        site=endpoint.site,
        ready=1 if endpoint.ready > 0 else 0,
        headroom=1.0 if endpoint.headroom > 0 else 0.0,
        wakeable=endpoint.wakeable,
    )


def kind(endpoint: Endpoint) -> Kind:
    """The kind of an eligible endpoint."""
    return (endpoint.ready > 0, endpoint.headroom > 0)


def serving(endpoint: Endpoint, point: SitePoint | None, residency: frozenset[str] | None) -> bool:
    """Whether ``choose`` could ever answer with the endpoint, whatever the asker: its site is
    known, reachable and in the app's regions, and it is ready or wakeable."""
    return (
        point is not None
        and point.reachable
        and (residency is None or point.region in residency)
        and (endpoint.ready > 0 or endpoint.wakeable)
    )


def km(a: SitePoint, b: SitePoint) -> float:
    """Great-circle km between two sites; a NaN coordinate counts as infinitely far."""
    d = great_circle_km(a.lat, a.lon, b.lat, b.lon)
    return math.inf if math.isnan(d) else d


# -- neighbourhoods --------------------------------------------------------------------------------


_CELL_DEG = 1.0
"""Degrees of the grid cells the indexes bucket points in."""


def _cell(point: SitePoint) -> tuple[int, int]:
    lat = point.lat if math.isfinite(point.lat) else 0.0
    lon = point.lon if math.isfinite(point.lon) else 0.0
    return (math.floor((lat + 90) / _CELL_DEG), math.floor((lon + 180) / _CELL_DEG))


_LAT_CELLS = int(180 / _CELL_DEG) + 1
_LON_CELLS = int(360 / _CELL_DEG)


def _ring(center: tuple[int, int], radius: int) -> Iterable[tuple[int, int]]:
    """Grid cells at Chebyshev distance ``radius`` from ``center`` (longitude wraps)."""
    row, col = center
    if radius == 0:
        yield row, col % _LON_CELLS
        return
    seen: set[tuple[int, int]] = set()
    for dr in range(-radius, radius + 1):
        r = row + dr
        if not 0 <= r < _LAT_CELLS:
            continue
        steps = range(-radius, radius + 1) if abs(dr) == radius else (-radius, radius)
        for dc in steps:
            cell = (r, (col + dc) % _LON_CELLS)
            if cell not in seen:
                seen.add(cell)
                yield cell


def _cell_floor_km(origin: SitePoint, radius: int) -> float:
    """No point in a cell at ring ``radius`` or beyond is nearer to ``origin`` than this: the
    cells between are at least ``radius - 1`` cells wide, a cell of longitude being narrowest at
    the highest latitude the ring reaches."""
    if radius <= 1:
        return 0.0
    lat = abs(origin.lat) if math.isfinite(origin.lat) else 90.0
    highest = min(90.0, lat + radius * _CELL_DEG)
    degree_km = 111.0 * math.cos(math.radians(highest))
    return (radius - 1) * _CELL_DEG * degree_km


_BRUTE = 256
"""Up to this many points a nearest search measures every one."""


def _unit(point: SitePoint) -> tuple[float, float, float] | None:
    """The point on the unit sphere (None for a NaN or infinite coordinate)."""
    if not (math.isfinite(point.lat) and math.isfinite(point.lon)):
        return None
    phi, lam = math.radians(point.lat), math.radians(point.lon)
    return (math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi))


def _chord_km(chord2: float) -> float:
    """Great-circle km for a squared chord between unit vectors (``math.inf`` stays)."""
    if math.isinf(chord2):
        return math.inf
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(chord2) / 2))


class _Grid:
    """Named points bucketed in grid cells, each kept as a unit vector too: a search ranks by
    the squared chord (a few multiplications, in the same order as the great-circle distance)
    and measures km only for what it returns."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], set[str]] = {}
        self.where: dict[str, tuple[int, int]] = {}
        self.unit: dict[str, tuple[float, float, float] | None] = {}

    def put(self, name: str, point: SitePoint) -> None:
        self.drop(name)
        cell = _cell(point)
        self.cells.setdefault(cell, set()).add(name)
        self.where[name] = cell
        self.unit[name] = _unit(point)

    def drop(self, name: str) -> None:
        cell = self.where.pop(name, None)
        self.unit.pop(name, None)
        if cell is not None:
            members = self.cells[cell]
            members.discard(name)
            if not members:
                del self.cells[cell]

    def __len__(self) -> int:
        return len(self.where)

    def _chords(
        self, origin: tuple[float, float, float] | None, names: Iterable[str]
    ) -> list[tuple[float, str]]:
        out = []
        unit = self.unit
        for name in names:
            other = unit[name]
            if origin is None or other is None:
                out.append((math.inf, name))
            else:
                dx, dy, dz = origin[0] - other[0], origin[1] - other[1], origin[2] - other[2]
                out.append((dx * dx + dy * dy + dz * dz, name))
        return out

    def nearest(
        self,
        origin: SitePoint,
        points: Mapping[str, SitePoint],
        count: int,
        accept: Mapping[str, object] | None = None,
    ) -> list[tuple[float, str]]:
        """The ``count`` nearest named points (km, name), nearest first, names breaking ties."""
        if count <= 0 or not self.where:
            return []
        here = _unit(origin)
        if len(self.where) <= _BRUTE:
            # Few points (a kind an app has few of): measuring each beats walking the grid.
            every: Iterable[str] = (
                self.where if accept is None else (n for n in self.where if n in accept)
            )
            everyone = sorted(self._chords(here, every))
            return [(_chord_km(c), name) for c, name in everyone[:count]]
        center = _cell(origin)
        found: list[tuple[float, str]] = []
        visited = 0
        radius = 0
        while True:
            for cell in _ring(center, radius):
                members = self.cells.get(cell)
                if not members:
                    continue
                visited += len(members)
                some: Iterable[str] = (
                    members if accept is None else (n for n in members if n in accept)
                )
                found.extend(self._chords(here, some))
            found.sort()
            enough = len(found) >= count and _chord_km(found[count - 1][0]) <= _cell_floor_km(
                origin, radius + 1
            )
            if enough or visited >= len(self.where) or radius > max(_LAT_CELLS, _LON_CELLS):
                return [(_chord_km(c), name) for c, name in found[:count]]
            radius += 1


class Neighbourhoods:
    """Every site's ``count`` nearest sites (itself first), kept as sites come, go and move."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._grid = _Grid()
        self._points: dict[str, SitePoint] = {}
        self._near: dict[str, tuple[str, ...]] = {}
        self._reach: dict[str, float] = {}
        """Per site, how far its farthest neighbour is (infinite while it has fewer than
        ``count``): a site that comes nearer than that enters its neighbourhood."""
        self._around: dict[str, set[str]] = {}

    def near(self, site: str) -> tuple[str, ...]:
        """``site``'s neighbourhood, nearest first (empty for a site not known)."""
        return self._near.get(site, ())

    def around(self, site: str) -> set[str]:
        """The sites whose neighbourhood holds ``site``."""
        return self._around.get(site, set())

    def update(self, points: Mapping[str, SitePoint], changed: Iterable[str]) -> set[str]:
        """Take the sites of ``changed`` (come, gone or moved) from ``points``; returns the
        sites whose neighbourhood changed."""
        names = set(changed)
        moved: list[str] = []
        for name in names:
            point = points.get(name)
            old = self._points.get(name)
            if point is None:
                if old is not None:
                    del self._points[name]
                    self._grid.drop(name)
                    moved.append(name)
            elif old is None or (old.lat, old.lon) != (point.lat, point.lon):
                self._points[name] = point
                self._grid.put(name, point)
                moved.append(name)
            else:
                self._points[name] = point
        if not moved:
            return set()
        # Whose neighbourhood can a moved site enter or leave: those that had it, and those it
        # is now nearer to than their farthest neighbour.
        redo: set[str] = set()
        everyone = len(moved) > len(self._points) // 4
        for name in moved:
            redo |= self._around.get(name, set())
            if everyone:
                if name not in self._points:
                    self._near.pop(name, None)
                    self._reach.pop(name, None)
                    self._around.pop(name, None)
                continue
            if name in self._points:
                redo.add(name)
                for distance, other in self._grid.nearest(
                    self._points[name], self._points, max(self.count * 4, 64)
                ):
                    if distance <= self._reach.get(other, math.inf):
                        redo.add(other)
            else:
                self._near.pop(name, None)
                self._reach.pop(name, None)
                for other in self._around.pop(name, set()):
                    redo.add(other)
        if everyone:
            redo = set(self._points)
        changed_out: set[str] = set()
        for name in redo:
            if name not in self._points:
                continue
            found = [
                (distance, other)
                for distance, other in self._grid.nearest(
                    self._points[name], self._points, self.count + 1
                )
                if other != name
            ][: self.count - 1]
            near = (name, *(other for _, other in found))
            if len(found) < self.count - 1:
                self._reach[name] = math.inf
            else:
                self._reach[name] = found[-1][0] if found else -1.0
            if self._near.get(name) != near:
                for other in self._near.get(name, ()):
                    self._around.get(other, set()).discard(name)
                for other in near:
                    self._around.setdefault(other, set()).add(name)
                self._near[name] = near
                changed_out.add(name)
        return changed_out


# -- one app's endpoints ------------------------------------------------------------------------


@dataclass
class EndpointIndex:
    """One app's serving endpoints (quantized) by site, in a grid per kind."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    """Serving endpoints by site."""
    grids: dict[Kind, _Grid] = field(default_factory=dict)

    def set(self, site: str, endpoint: Endpoint | None, point: SitePoint | None) -> None:
        """Take the (quantized) serving endpoint at ``site``, or none."""
        old = self.endpoints.pop(site, None)
        if old is not None:
            self.grids[kind(old)].drop(site)
        if endpoint is not None and point is not None:
            self.endpoints[site] = endpoint
            self.grids.setdefault(kind(endpoint), _Grid()).put(site, point)

    def count(self, of: Kind) -> int:
        """Serving endpoints of a kind."""
        grid = self.grids.get(of)
        return len(grid) if grid is not None else 0

    def nearest(
        self, origin: SitePoint, points: Mapping[str, SitePoint], of: Kind, count: int
    ) -> list[tuple[float, str]]:
        """The ``count`` nearest endpoints of a kind (km, site)."""
        grid = self.grids.get(of)
        return grid.nearest(origin, points, count) if grid is not None else []


@dataclass(frozen=True)
class Section:
    """One app's endpoints as one site sees them."""

    endpoints: tuple[Endpoint, ...]
    """In site name order."""
    reach_km: float | None
    """None when the neighbourhood alone decides the answers (a change elsewhere cannot change
    them); else how far the section looked: a change of an endpoint farther than this cannot
    change it (``inf``: any change can, a kind had fewer endpoints than ``nearest``)."""


def section(
    site: str,
    index: EndpointIndex,
    points: Mapping[str, SitePoint],
    near: Sequence[str],
    *,
    latency_bound: float | None,
    nearest: int,
) -> Section:
    """The section of one app for ``site`` (see the module)."""
    origin = points.get(site)
    chosen: dict[str, Endpoint] = {}
    good = 0
    for name in near:
        endpoint = index.endpoints.get(name)
        if endpoint is None:
            continue
        chosen[name] = endpoint
        if endpoint.ready and endpoint.headroom > 0:
            good += (
                latency_bound is None
                or origin is None
                or estimated_rtt_ms(km(origin, points[name])) <= latency_bound
            )
    if good >= nearest or origin is None:
        return Section(tuple(chosen[n] for n in sorted(chosen)), None)
    reach = 0.0
    for of in KINDS:
        found = index.nearest(origin, points, of, nearest)
        for _, name in found:
            chosen[name] = index.endpoints[name]
        # Fewer than asked: any endpoint of this kind that comes, anywhere, belongs here.
        reach = max(reach, found[-1][0] if len(found) >= nearest else math.inf)
    return Section(tuple(chosen[n] for n in sorted(chosen)), reach)
