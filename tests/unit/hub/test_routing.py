"""Building the routing table, and the neighbours' verdicts the central DNS follows."""

from __future__ import annotations

from edgefleet.hub.routing import PeerVerdicts, build_routing_table
from edgefleet.model import AppStatus, SitePhase, SiteReplicas, SiteStatus
from tests.factories import make_app, make_site


def test_table_lists_serving_sites_with_headroom_and_reachability() -> None:
    paris = make_site("paris", max_replicas=10)
    paris.status = SiteStatus(phase=SitePhase.READY, replicas=4)
    london = make_site("london", ip="127.0.0.2")
    london.status = SiteStatus(phase=SitePhase.UNREACHABLE)
    app = make_app()
    app.status = AppStatus(
        sites=[
            SiteReplicas(site="paris", desired=2, ready=1),
            SiteReplicas(site="london", desired=1, ready=1),
            SiteReplicas(site="boston", desired=0, ready=0),
        ]
    )
    table = build_routing_table([paris, london], [app])
    assert [s.name for s in table.sites] == ["london", "paris"]
    assert [s.reachable for s in table.sites] == [False, True]
    [routes] = table.apps
    # Endpoints in name order, whatever the order of the status.
    assert [(e.site, e.ready, e.headroom) for e in routes.endpoints] == [
        ("london", 1, 1.0),
        ("paris", 1, 0.6),
    ]
    again = build_routing_table([london, paris], [app])
    assert again.version == table.version, "the version is a hash of the content"
    app.status.sites[0].ready = 2
    assert build_routing_table([paris, london], [app]).version != table.version


def test_a_site_is_down_when_most_fresh_verdicts_say_so() -> None:
    verdicts = PeerVerdicts(freshness=5.0)
    verdicts.record("paris", {"london": False}, now=100.0)
    assert verdicts.down(now=100.0) == {"london"}
    verdicts.record("boston", {"london": True}, now=100.0)
    assert verdicts.down(now=100.0) == frozenset(), "one against one is no majority"
    verdicts.record("tokyo", {"london": False}, now=101.0)
    assert verdicts.down(now=101.0) == {"london"}
    # Verdicts age out: only tokyo's is fresh at 105.5.
    assert verdicts.down(now=105.5) == {"london"}
    assert verdicts.down(now=107.0) == frozenset()
