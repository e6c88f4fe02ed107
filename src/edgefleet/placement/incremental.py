"""Explicit placement that remembers its last pass and redoes only what a change can affect.

``place_fleet`` places every app on every site: at ten thousand sites and a hundred apps that is
seconds, too much to run for each site that joins or app that changes. ``ExplicitPlanner`` keeps
what the last pass decided and, for a change of some apps or some sites, returns exactly what
``place_fleet`` would return over the new input with ``current`` set to the last result, while
computing only:

- the apps that changed, and the apps eligible at a site that changed (came, went, or changed
  its labels, capacity or reachability);
- the apps after them (in priority order) that read room at a site whose use by earlier apps
  changed, where that room could bind (it is at most what the app asks for);
- for an app of ``replicasPerSite`` that asks for fewer replicas than its ceiling and had all it
  asked, only the sites that changed: such an app's count at a site depends on that site alone.

Pure: no I/O, no clock. Sites and apps are keyed by name; the order of ``apps`` is the priority.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from edgefleet.placement.explicit import (
    AppKey,
    AppView,
    PlacementResult,
    SiteName,
    SiteView,
    Usage,
    _check_unique,
    eligible,
    place_app,
    room,
)


@dataclass
class _Use:
    """Usage that can go down as well as up (what changed at a site during a pass)."""

    cpu: float = 0.0
    memory: int = 0
    replicas: int = 0

    def add(self, app: AppView, count: int) -> None:
        self.cpu += count * app.cpu
        self.memory += count * app.memory
        self.replicas += count


@dataclass
class _Pass:
    """What one pass has changed so far, for the apps after."""

    use: dict[SiteName, _Use] = field(default_factory=dict)
    """Per site, how its use by the apps walked so far differs from the last pass."""
    before: dict[AppKey, AppView] = field(default_factory=dict)
    """The apps as the last pass placed them: what one replica took then."""


class ExplicitPlanner:
    """``place_fleet`` with a memory (see the module)."""

    def __init__(self) -> None:
        self._sites: dict[SiteName, SiteView] = {}
        self._names: list[SiteName] = []
        """Site names, sorted."""
        self._apps: dict[AppKey, AppView] = {}
        self._order: list[AppKey] = []
        self._position: dict[AppKey, int] = {}
        self._eligible: dict[AppKey, list[SiteName]] = {}
        """Per app, the names of the sites its selector matches (reachable or not), sorted."""
        self._reachable: dict[AppKey, int] = {}
        """Per app, how many of its eligible sites are reachable."""
        self._placed: dict[AppKey, dict[SiteName, int]] = {}
        self._shortfalls: dict[AppKey, str] = {}
        self._at: dict[SiteName, dict[AppKey, int]] = {}
        """Per site, the replicas each app has there (the last result, by site)."""
        self._capped: set[AppKey] = set()
        """Apps of ``replicasPerSite`` that asked for more than their ceiling last time."""
        self._started = False
        self.recomputed = 0
        """Apps placed over all their sites in the last pass."""
        self.touched = 0
        """Apps whose count was redone at a few sites only (``replicasPerSite``) in the last
        pass."""

    @property
    def result(self) -> PlacementResult:
        """The last pass's result."""
        if not self._started:
            raise RuntimeError("no pass yet: call full() first")
        return PlacementResult(
            replicas={key: dict(self._placed[key]) for key in self._order},
            shortfalls=dict(self._shortfalls),
        )

    def full(
        self,
        apps: Sequence[AppView],
        sites: Sequence[SiteView],
        current: Mapping[AppKey, Mapping[SiteName, int]],
    ) -> PlacementResult:
        """Place every app from scratch, as ``place_fleet`` does (``current`` decides ties)."""
        _check_unique("site", [site.name for site in sites])
        _check_unique("app", [app.key for app in apps])
        self._sites = {site.name: site for site in sites}
        self._names = sorted(self._sites)
        self._set_apps(apps)
        self._eligible = {app.key: self._match(app) for app in apps}
        self._reachable = {
            app.key: sum(self._sites[n].reachable for n in self._eligible[app.key]) for app in apps
        }
        self._placed = {app.key: dict(current.get(app.key, {})) for app in apps}
        self._shortfalls = {}
        self._capped = set()
        self._at = {}
        for key, by_site in self._placed.items():
            for site, count in by_site.items():
                self._at.setdefault(site, {})[key] = count
        self._started = True
        self.recomputed = self.touched = 0
        walk = _Pass()
        for app in apps:
            self._redo(app, walk)
        return self.result

    def update(
        self,
        apps: Sequence[AppView],
        *,
        sites: Iterable[SiteView] = (),
        removed: Iterable[SiteName] = (),
    ) -> PlacementResult:
        """Place again after a change: ``apps`` is every app, in priority order (new versions of
        some, some added, some gone); ``sites`` the sites added or changed; ``removed`` the sites
        gone. Returns what ``full`` would, with ``current`` = the last result."""
        if not self._started:
            raise RuntimeError("no pass yet: call full() first")
        _check_unique("app", [app.key for app in apps])
        self.recomputed = self.touched = 0
        given = {app.key: app for app in apps}
        walk = _Pass()
        dirty: set[AppKey] = set()
        # Apps gone: their replicas free room for the apps after them.
        for key in [k for k in self._order if k not in given]:
            old = self._apps[key]
            for where, count in self._placed.pop(key, {}).items():
                self._set_count(key, where, 0)
                walk.use.setdefault(where, _Use()).add(old, -count)
            self._eligible.pop(key, None)
            self._reachable.pop(key, None)
            self._shortfalls.pop(key, None)
            self._capped.discard(key)
        # Apps new or changed: placed again over all their sites.
        for app in apps:
            old_app = self._apps.get(app.key)
            if old_app is None or old_app != app:
                dirty.add(app.key)
                self._placed.setdefault(app.key, {})
        order_kept = [k for k in self._order if k in given] == [
            a.key for a in apps if a.key in self._apps
        ]
        # Sites gone or changed: each app that could see them looks at them again.
        around: dict[AppKey, set[SiteName]] = {}
        for name in removed:
            if self._sites.pop(name, None) is None:
                continue
            del self._names[bisect.bisect_left(self._names, name)]
            for key, count in self._at.pop(name, {}).items():
                gone = self._apps.get(key)
                if gone is not None:
                    walk.use.setdefault(name, _Use()).add(gone, -count)
                self._placed.get(key, {}).pop(name, None)
            for key in self._eligible:
                if key not in dirty:
                    self._forget_site(key, name, around)
        for site in sites:
            before = self._sites.get(site.name)
            if before == site:
                continue
            if before is None:
                bisect.insort(self._names, site.name)
            self._sites[site.name] = site
            for app in apps:
                if app.key not in dirty:
                    self._resee_site(app, before, site, around)
        walk.before = dict(self._apps)
        self._set_apps(apps)
        for key in dirty:
            self._eligible[key] = self._match(self._apps[key])
            self._reachable[key] = sum(self._sites[n].reachable for n in self._eligible[key])
        if not order_kept:
            dirty |= set(self._order)
        for app in apps:
            if app.key in dirty:
                self._redo(app, walk)
                continue
            sites_seen = around.get(app.key, set())
            if self._binds(app, walk):
                self._redo(app, walk)
            elif sites_seen:
                self._redo_at(app, sites_seen, walk)
        return self.result

    # -- inner workings --------------------------------------------------------------------------

    def _set_apps(self, apps: Sequence[AppView]) -> None:
        self._apps = {app.key: app for app in apps}
        self._order = [app.key for app in apps]
        self._position = {key: i for i, key in enumerate(self._order)}

    def _match(self, app: AppView) -> list[SiteName]:
        selector = app.policy.selector
        if selector.sites:
            names = sorted({SiteName(n) for n in selector.sites if n in self._sites})
            return [n for n in names if eligible(selector, self._sites[n])]
        return [n for n in self._names if eligible(selector, self._sites[n])]

    def _forget_site(
        self, key: AppKey, name: SiteName, around: dict[AppKey, set[SiteName]]
    ) -> None:
        names = self._eligible[key]
        i = bisect.bisect_left(names, name)
        if i < len(names) and names[i] == name:
            del names[i]
            self._reachable[key] = sum(self._sites[n].reachable for n in names)
            around.setdefault(key, set()).add(name)

    def _resee_site(
        self,
        app: AppView,
        before: SiteView | None,
        site: SiteView,
        around: dict[AppKey, set[SiteName]],
    ) -> None:
        was = before is not None and eligible(app.policy.selector, before)
        now = eligible(app.policy.selector, site)
        if not was and not now:
            return
        if was and now and before is not None and replace(before, labels=site.labels) == site:
            # Only its labels changed, and the app sees it still: labels matter to placement
            # only through the selector, so this app's placement cannot move (an operator's
            # label on one site of ten thousand costs no pass over them all).
            return
        names = self._eligible[app.key]
        if now and not was:
            bisect.insort(names, site.name)
        elif was and not now:
            del names[bisect.bisect_left(names, site.name)]
        reachable_before = was and before is not None and before.reachable
        self._reachable[app.key] += int(now and site.reachable) - int(reachable_before)
        around.setdefault(app.key, set()).add(site.name)

    def _used_before(self, app: AppView, names: Iterable[SiteName]) -> dict[SiteName, Usage]:
        """What the apps before ``app`` take at each of ``names``."""
        mine = self._position[app.key]
        used: dict[SiteName, Usage] = {}
        for name in names:
            cpu, memory, replicas = 0.0, 0, 0
            for key, count in self._at.get(name, {}).items():
                if self._position.get(key, mine) < mine:
                    other = self._apps[key]
                    cpu += count * other.cpu
                    memory += count * other.memory
                    replicas += count
            if replicas:
                used[name] = Usage(cpu=cpu, memory=memory, replicas=replicas)
        return used

    def _binds(self, app: AppView, walk: _Pass) -> bool:
        """Whether a change of use by earlier apps may change ``app``: at some site it is
        eligible at, its room before or after the change is at most what it asks for."""
        if not walk.use:
            return False
        names = self._eligible[app.key]
        changed = [n for n in walk.use if n in self._sites and _contains(names, n)]
        if not changed:
            return False
        policy = app.policy
        if policy.replicas_per_site is not None:
            asks = policy.replicas_per_site
        else:
            asked = policy.replicas if policy.replicas is not None else 1
            asks = min(max(asked, app.min_replicas), app.max_replicas)
        used = self._used_before(app, changed)
        for name in changed:
            site = self._sites[name]
            now = used.get(name, Usage())
            delta = walk.use[name]
            then = Usage(
                cpu=now.cpu - delta.cpu,
                memory=now.memory - delta.memory,
                replicas=now.replicas - delta.replicas,
            )
            if min(room(site, now, app), room(site, then, app)) <= asks:
                return True
        return False

    def _redo(self, app: AppView, walk: _Pass) -> None:
        """Place ``app`` over all its eligible sites."""
        self.recomputed += 1
        names = self._eligible[app.key]
        views = [self._sites[n] for n in names]
        placement = place_app(
            app,
            sites=views,
            current=self._placed.get(app.key, {}),
            used=self._used_before(app, names),
        )
        self._take(app, dict(placement.replicas), placement.shortfall, walk)

    def _redo_at(self, app: AppView, names: set[SiteName], walk: _Pass) -> None:
        """Redo ``app`` at ``names`` only when its count at a site depends on that site alone
        (see the module), else over all its sites."""
        policy = app.policy
        per_site = policy.replicas_per_site
        if (
            per_site is None
            or app.key in self._shortfalls
            or app.key in self._capped
            or per_site * self._reachable[app.key] > app.max_replicas
        ):
            self._redo(app, walk)
            return
        self.touched += 1
        current = self._placed.get(app.key, {})
        placed = dict(current)
        eligible_names = self._eligible[app.key]
        used = self._used_before(app, names)
        for name in names:
            site = self._sites.get(name)
            if site is None or not _contains(eligible_names, name):
                count = 0
            elif not site.reachable:
                count = max(0, current.get(name, 0))
            else:
                count = min(per_site, room(site, used.get(name, Usage()), app))
                if count < per_site:
                    # Short of room here: the message names every full site, so place it all.
                    self._redo(app, walk)
                    return
            if count > 0:
                placed[name] = count
            else:
                placed.pop(name, None)
        if per_site and not self._reachable[app.key]:
            self._redo(app, walk)  # no reachable site: the shortfall message says so
            return
        self._take(app, placed, None, walk)

    def _take(
        self, app: AppView, placed: dict[SiteName, int], shortfall: str | None, walk: _Pass
    ) -> None:
        before = self._placed.get(app.key, {})
        then = walk.before.get(app.key, app)
        resized = (then.cpu, then.memory) != (app.cpu, app.memory)
        for name in before.keys() | placed.keys():
            old, new = before.get(name, 0), placed.get(name, 0)
            if old != new or (resized and old):
                use = walk.use.setdefault(name, _Use())
                use.add(then, -old)
                use.add(app, new)
                self._set_count(app.key, name, new)
        self._placed[app.key] = placed
        per_site = app.policy.replicas_per_site
        if per_site is not None and per_site * self._reachable[app.key] > app.max_replicas:
            self._capped.add(app.key)
        else:
            self._capped.discard(app.key)
        if shortfall is None:
            self._shortfalls.pop(app.key, None)
        else:
            self._shortfalls[app.key] = shortfall

    def _set_count(self, key: AppKey, site: SiteName, count: int) -> None:
        at = self._at.setdefault(site, {})
        if count > 0:
            at[key] = count
        else:
            at.pop(key, None)
            if not at:
                del self._at[site]


def _contains(names: list[SiteName], name: SiteName) -> bool:
    i = bisect.bisect_left(names, name)
    return i < len(names) and names[i] == name


__all__ = ["ExplicitPlanner"]
