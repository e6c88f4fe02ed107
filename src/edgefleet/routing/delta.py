"""Deltas of a site's share of the routing table: what the hub sends after the first whole one.

``diff`` says what changed from one share to another; ``apply_delta`` (what an agent does)
gives the new share back from the old one and the delta. Pure: ``apply_delta(a, diff(a, b))``
equals ``b`` for any shares ``a`` and ``b``.
"""

from __future__ import annotations

from edgefleet.model import AppRef, AppRoutes, RouteRegion, RoutingDelta, RoutingTable


def diff(old: RoutingTable, new: RoutingTable) -> RoutingDelta:
    """What turns ``old`` into ``new``."""
    old_sites = {s.name: s for s in old.sites}
    new_sites = {s.name: s for s in new.sites}
    old_apps = {(a.tenant, a.app): a for a in old.apps}
    new_apps = {(a.tenant, a.app): a for a in new.apps}
    old_regions = {r.name: r for r in old.regions}
    new_regions = {r.name: r for r in new.regions}
    return RoutingDelta(
        since=old.version,
        version=new.version,
        sites=[s for name, s in sorted(new_sites.items()) if old_sites.get(name) != s],
        removed_sites=sorted(old_sites.keys() - new_sites.keys()),
        apps=[a for key, a in sorted(new_apps.items()) if old_apps.get(key) != a],
        removed_apps=[
            AppRef(tenant=tenant, app=app)
            for tenant, app in sorted(old_apps.keys() - new_apps.keys())
        ],
        signing_keys=None if old.signing_keys == new.signing_keys else list(new.signing_keys),
        revoked_credentials=(
            None
            if old.revoked_credentials == new.revoked_credentials
            else list(new.revoked_credentials)
        ),
        regions=[r for name, r in sorted(new_regions.items()) if old_regions.get(name) != r],
        removed_regions=sorted(old_regions.keys() - new_regions.keys()),
    )


def apply_delta(table: RoutingTable, delta: RoutingDelta) -> RoutingTable:
    """``table`` with ``delta`` applied; ValueError when the delta is for another version."""
    if delta.since != table.version:
        raise ValueError(
            f"a routing delta from version {delta.since!r} cannot apply to version "
            f"{table.version!r}"
        )
    sites = {s.name: s for s in table.sites}
    for name in delta.removed_sites:
        sites.pop(name, None)
    sites.update({s.name: s for s in delta.sites})
    apps: dict[tuple[str, str], AppRoutes] = {(a.tenant, a.app): a for a in table.apps}
    for ref in delta.removed_apps:
        apps.pop((ref.tenant, ref.app), None)
    apps.update({(a.tenant, a.app): a for a in delta.apps})
    regions: dict[str, RouteRegion] = {r.name: r for r in table.regions}
    for name in delta.removed_regions:
        regions.pop(name, None)
    regions.update({r.name: r for r in delta.regions})
    return RoutingTable(
        version=delta.version,
        zone=table.zone,
        sites=[sites[n] for n in sorted(sites)],
        apps=[apps[k] for k in sorted(apps)],
        signing_keys=(
            table.signing_keys if delta.signing_keys is None else list(delta.signing_keys)
        ),
        revoked_credentials=(
            table.revoked_credentials
            if delta.revoked_credentials is None
            else list(delta.revoked_credentials)
        ),
        regions=[regions[n] for n in sorted(regions)],
    )
