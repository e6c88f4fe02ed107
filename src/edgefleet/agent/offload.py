"""Site-to-site decisions: when to ask a neighbour to run an app, on what terms a site accepts,
and which apps the hub moved away a site keeps serving for a while (drain). Pure functions.

The rules:

1. Ask: a site asks its neighbours to run an app only when its replicas are full, no neighbour
   serves the app, the app scales (traffic placement), its tenant has no quota (replicas a
   neighbour starts are outside placement, which keeps the tenant within it) and the site's own
   scaler is at the ceiling the hub gave it (below it, local replicas come first); and at most
   once per ``interval`` per app. It asks only neighbours in the app's regions (residency).
2. Accept: a site takes an app from a neighbour only if the hub did not place the app there
   already, the app scales and may be offloaded, the site is in the app's regions (residency),
   the app's selector allows the site (judged from the routing table, which knows regions,
   zones and names, not labels: a selector with ``matchLabels`` is refused) and the replicas it
   runs for neighbours stay within ``cap``. It runs at most what is left of the cap, and starts
   with the neighbour's count, at least one.
3. Drain: an app that scales and that the hub just took away stays (its scaler may take it
   down to zero) unless it was an offload, it is draining already, or it is gone from the
   routing table (deleted).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from edgefleet.model import AppAssignment, SiteSelector
from edgefleet.routing.table import SitePoint


def refuses(selector: SiteSelector, site: SitePoint) -> str | None:
    """Why ``selector`` does not allow ``site``, or None when it does (rule 2)."""
    if selector.regions and site.region not in selector.regions:
        return f"region {site.region} is not among the app's regions {selector.regions}"
    if selector.zones and site.zone not in selector.zones:
        return f"zone {site.zone} is not among the app's zones {selector.zones}"
    if selector.sites and site.name not in selector.sites:
        return f"site {site.name} is not among the app's sites"
    if selector.match_labels:
        return "the app selects sites by labels, which only the hub knows"
    return None


def outside_regions(regions: Collection[str] | None, site: SitePoint) -> str | None:
    """Why an app whose residency is ``regions`` (None: anywhere) may not run at ``site``, or
    None when it may."""
    if regions is not None and site.region not in regions:
        shown = ", ".join(sorted(regions)) or "none"
        return f"region {site.region} is outside the app's regions ({shown})"
    return None


def should_ask(
    assignment: AppAssignment | None,
    desired: int | None,
    *,
    last_asked: float | None,
    now: float,
    interval: float,
) -> bool:
    """Whether a site whose replicas of the app are full asks its neighbours now (rule 1)."""
    if assignment is None or assignment.scaling is None or not assignment.may_offload:
        return False
    if (desired or 0) < assignment.scaling.max_replicas:
        return False
    return last_asked is None or now - last_asked >= interval


def offload_terms(
    assignment: AppAssignment,
    *,
    me: SitePoint | None,
    placed_here: bool,
    taken: int,
    cap: int,
) -> AppAssignment | str:
    """What this site runs for a neighbour asking it to run ``assignment``, or why not (rule 2).

    ``me`` is this site in the routing table (None before the first table); ``placed_here``
    whether the hub placed the app here; ``taken`` the replicas this site may run for other
    apps of neighbours; ``cap`` the most it runs for neighbours in all.
    """
    key = assignment.key
    if placed_here:
        return f"{key} is placed here by the hub already"
    bounds = assignment.scaling
    if bounds is None:
        return f"{key} has fixed replicas: only the hub places it"
    if not assignment.may_offload:
        return f"{key} counts against its tenant's quota: only the hub places it"
    if assignment.regions is not None:
        if me is None:
            return "this site does not know its own region yet (no routing table)"
        refusal = outside_regions(assignment.regions, me)
        if refusal is not None:
            return refusal
    if assignment.selector is not None:
        if me is None:
            return "this site does not know its own region yet (no routing table)"
        refusal = refuses(assignment.selector, me)
        if refusal is not None:
            return refusal
    if taken + 1 > cap:
        return f"this site runs {taken} replicas for neighbours already (the most it takes)"
    most = min(bounds.max_replicas, cap - taken)
    if most < 1:
        return f"{key} may run no replica here (its bound is {bounds.max_replicas})"
    return assignment.model_copy(
        update={
            "replicas": min(max(1, assignment.replicas), most),
            "scaling": bounds.model_copy(update={"min_replicas": 0, "max_replicas": most}),
        }
    )


def offloaded_replicas(offloads: Mapping[str, AppAssignment], *, besides: str) -> int:
    """The most replicas the offloads other than ``besides`` may run."""
    return sum(
        a.scaling.max_replicas if a.scaling else a.replicas
        for key, a in offloads.items()
        if key != besides
    )


def to_drain(
    before: Iterable[AppAssignment],
    *,
    kept: Collection[str],
    offloads: Collection[str],
    draining: Collection[str],
    existing: Collection[tuple[str, str]],
) -> list[AppAssignment]:
    """The apps to keep serving after the hub took them away, ready to drain (rule 3).

    ``kept`` are the keys the hub still places here, ``existing`` the (tenant, app) pairs of the
    routing table.
    """
    out = []
    for assignment in before:
        key = assignment.key
        if (
            key in kept
            or key in offloads
            or key in draining
            or assignment.scaling is None
            or (assignment.tenant, assignment.app) not in existing
        ):
            continue
        out.append(
            assignment.model_copy(
                update={"scaling": assignment.scaling.model_copy(update={"min_replicas": 0})}
            )
        )
    return out
