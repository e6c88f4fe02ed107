"""What the hub's placement sees of sites and apps: an app goes only where its workload runs."""

from __future__ import annotations

from edgefleet.hub.store import SiteShare
from edgefleet.hub.views import app_view, explicit_share, site_view
from edgefleet.model import App, DriverName, Site
from edgefleet.placement import place_fleet
from tests.factories import make_app, make_site


def kube_site(name: str) -> Site:
    site = make_site(name)
    return site.model_copy(
        update={"spec": site.spec.model_copy(update={"driver": DriverName.KUBERNETES})}
    )


def container_app(name: str) -> App:
    app = make_app(name, placement={"replicas": 4})
    workload = {"type": "container", "image": "registry.local/hello:1"}
    return App.model_validate(
        {
            **app.model_dump(by_alias=True),
            "spec": {**app.spec.model_dump(by_alias=True), "workload": workload},
        }
    )


def test_apps_are_placed_only_at_sites_whose_driver_runs_their_workload() -> None:
    sites = [site_view(make_site("paris")), site_view(kube_site("lyon"))]
    apps = [app_view(make_app("proc", placement={"replicas": 4})), app_view(container_app("ctr"))]
    result = place_fleet(apps, sites, {})
    assert dict(result.replicas["demo/proc"]) == {"paris": 4}
    assert dict(result.replicas["demo/ctr"]) == {"lyon": 4}


def test_an_app_no_site_can_run_says_why() -> None:
    result = place_fleet([app_view(container_app("ctr"))], [site_view(make_site("paris"))], {})
    assert not result.replicas["demo/ctr"]
    assert "runs.edgefleet.io/container=true" in result.shortfalls["demo/ctr"]


def test_the_selector_sent_to_agents_stays_the_apps_own() -> None:
    app = container_app("ctr")
    assert app_view(app).policy.selector.match_labels == {"runs.edgefleet.io/container": "true"}
    assert app.spec.placement.selector.match_labels == {}


def test_an_explicitly_placed_function_sleeps_until_woken() -> None:
    share = explicit_share(3, function=True)
    assert (share.replicas, share.min_replicas, share.max_replicas) == (0, 0, 3)
    assert share.placed  # at zero, but placed: the activator may wake it
    assert explicit_share(3, function=False) == SiteShare(3)
