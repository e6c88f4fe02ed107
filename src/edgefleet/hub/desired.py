"""Each site's desired state, built from the hub's picture of the fleet and kept as bytes.

When placement moves an app at ten thousand sites, ten thousand agents ask for their desired
state within a second. Reading each from the store is three queries a site; here it is a dict
walk: the site's apps (``FleetState.site_apps``), each app's spec and its tenant's policy, and
the share placement gave the site. What one app's assignment says is the same at every site
with the same share, so it is serialized once (``_fragments``) and the site's answer is those
fragments joined; the answer is kept until the site's revision moves.

A site's revision comes from the store (``SiteWatch``), the picture from the feed: the answer for
revision R is built only from a picture that includes R (``FeedFollower.caught_up``), so an
agent never gets revision R with what was placed before it.
"""

from __future__ import annotations

import json

from edgefleet.hub.fleet import FleetState
from edgefleet.hub.store import AppId, SiteShare
from edgefleet.hub.store.placement import assignment_of

_FRAGMENTS = 20_000
"""Assignments kept serialized; beyond, the cache starts over."""


class DesiredStates:
    """Desired states as the agents get them (see the module)."""

    def __init__(self, fleet: FleetState) -> None:
        self._fleet = fleet
        self._answers: dict[str, tuple[int, bytes]] = {}
        self._fragments: dict[tuple[AppId, str | None, int, SiteShare, int], bytes] = {}
        self.built = 0
        """Answers built (not taken from the cache)."""

    def body(self, site: str, revision: int) -> bytes:
        """The JSON of ``site``'s desired state at ``revision`` (the picture must include it)."""
        kept = self._answers.get(site)
        if kept is not None and kept[0] == revision:
            return kept[1]
        fleet = self._fleet
        parts = []
        for key in sorted(fleet.site_apps.get(site, ())):
            app = fleet.apps.get(key)
            share = fleet.shares.get(key, {}).get(site)
            if app is None or share is None:
                continue
            policy = fleet.tenants.get(key[0])
            generation = fleet.generations.get(key, app.metadata.generation or 1)
            fragment_key = (key, app.metadata.resource_version, generation, share, id(policy))
            fragment = self._fragments.get(fragment_key)
            if fragment is None:
                if len(self._fragments) >= _FRAGMENTS:
                    self._fragments.clear()
                fragment = (
                    assignment_of(
                        key[0],
                        key[1],
                        generation=generation,
                        share=share,
                        spec=app.spec,
                        policy=policy,
                    )
                    .model_dump_json(by_alias=True)
                    .encode()
                )
                self._fragments[fragment_key] = fragment
            parts.append(fragment)
        body = (
            b'{"site":'
            + json.dumps(site).encode()
            + b',"revision":'
            + str(revision).encode()
            + b',"apps":['
            + b",".join(parts)
            + b"]}"
        )
        self._answers[site] = (revision, body)
        self.built += 1
        return body

    def forget(self, site: str) -> None:
        """Drop a site's answer (the site was deleted)."""
        self._answers.pop(site, None)
