"""Site-to-site decisions: asking a neighbour, accepting an app from one, draining."""

from __future__ import annotations

from edgefleet.agent.offload import (
    offload_terms,
    offloaded_replicas,
    refuses,
    should_ask,
    to_drain,
)
from edgefleet.model import AppAssignment, LocalScaling, ProcessWorkload, SiteSelector
from edgefleet.routing.table import SitePoint

LYON = SitePoint(
    name="lyon",
    region="eu-west",
    zone="eu-west-fr",
    lat=45.76,
    lon=4.84,
    ip="127.0.81.1",
    ingress_port=8080,
    dns_port=5353,
)


def app(
    name: str = "hello",
    *,
    replicas: int = 2,
    high: int | None = 4,
    selector: SiteSelector | None = None,
) -> AppAssignment:
    return AppAssignment(
        tenant="demo",
        app=name,
        generation=1,
        replicas=replicas,
        workload=ProcessWorkload(command="edgefleet-hello"),
        scaling=None
        if high is None
        else LocalScaling(
            min_replicas=1,
            max_replicas=high,
            target_concurrency=2,
            stable_window=60,
            panic_window=6,
            panic_threshold=2,
            idle_timeout=300,
        ),
        selector=selector,
    )


def test_refuses_by_region_zone_site_and_labels() -> None:
    assert refuses(SiteSelector(), LYON) is None
    assert refuses(SiteSelector(regions=["eu-west"], sites=["lyon"]), LYON) is None
    assert "region eu-west" in (refuses(SiteSelector(regions=["us-east"]), LYON) or "")
    assert "zone eu-west-fr" in (refuses(SiteSelector(zones=["eu-west-uk"]), LYON) or "")
    assert "site lyon" in (refuses(SiteSelector(sites=["paris"]), LYON) or "")
    assert "labels" in (refuses(SiteSelector(match_labels={"tier": "metro"}), LYON) or "")


def test_a_site_asks_only_at_its_ceiling_and_not_too_often() -> None:
    full = app(high=4)
    assert should_ask(full, 4, last_asked=None, now=100, interval=15)
    assert not should_ask(full, 3, last_asked=None, now=100, interval=15)  # can still scale
    assert not should_ask(full, 4, last_asked=90, now=100, interval=15)
    assert should_ask(full, 4, last_asked=85, now=100, interval=15)
    assert not should_ask(app(high=None), 9, last_asked=None, now=100, interval=15)
    assert not should_ask(None, 9, last_asked=None, now=100, interval=15)


def test_offload_terms_within_the_cap_starting_with_the_neighbours_count() -> None:
    terms = offload_terms(app(replicas=2, high=4), me=LYON, placed_here=False, taken=3, cap=8)
    assert isinstance(terms, AppAssignment)
    assert terms.replicas == 2
    assert terms.scaling is not None
    assert (terms.scaling.min_replicas, terms.scaling.max_replicas) == (0, 4)
    tight = offload_terms(app(replicas=6, high=10), me=LYON, placed_here=False, taken=6, cap=8)
    assert isinstance(tight, AppAssignment) and tight.replicas == 2
    assert tight.scaling is not None and tight.scaling.max_replicas == 2
    asleep = offload_terms(app(replicas=0), me=LYON, placed_here=False, taken=0, cap=8)
    assert isinstance(asleep, AppAssignment) and asleep.replicas == 1


def test_offload_refusals_say_why() -> None:
    def refusal(
        assignment: AppAssignment = app(),
        *,
        me: SitePoint | None = LYON,
        placed_here: bool = False,
        taken: int = 0,
    ) -> str:
        terms = offload_terms(assignment, me=me, placed_here=placed_here, taken=taken, cap=8)
        assert isinstance(terms, str)
        return terms

    assert "placed here by the hub" in refusal(placed_here=True)
    assert "fixed replicas" in refusal(app(high=None))
    assert "runs 8 replicas for neighbours" in refusal(taken=8)
    assert "region eu-west" in refusal(app(selector=SiteSelector(regions=["ap"])))
    assert "no routing table" in refusal(app(selector=SiteSelector()), me=None)


def test_offloaded_replicas_count_the_other_apps_ceilings() -> None:
    offloads = {"demo/a": app("a", high=3), "demo/b": app("b", high=None, replicas=2)}
    assert offloaded_replicas(offloads, besides="demo/none") == 5
    assert offloaded_replicas(offloads, besides="demo/a") == 2


def test_drain_keeps_scaling_apps_the_hub_moved_away_only() -> None:
    moved, fixed, deleted = app("moved"), app("fixed", high=None), app("deleted")
    kept, offload, draining = app("kept"), app("offload"), app("draining")
    drained = to_drain(
        [moved, fixed, deleted, kept, offload, draining],
        kept={"demo/kept"},
        offloads={"demo/offload"},
        draining={"demo/draining"},
        existing={("demo", n) for n in ("moved", "fixed", "kept", "offload", "draining")},
    )
    assert [a.key for a in drained] == ["demo/moved"]
    assert drained[0].scaling is not None and drained[0].scaling.min_replicas == 0
    assert drained[0].replicas == moved.replicas
