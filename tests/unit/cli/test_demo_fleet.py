"""The demo's simulated sites: around the real ones, apart from ``hello``, ``telemetry`` at each."""

from __future__ import annotations

from edgefleet.cli import demo_fleet
from edgefleet.cli.demo import sample_manifests
from edgefleet.geo import great_circle_km
from edgefleet.hub.views import runnable_selector, site_view
from edgefleet.model import App, Site
from edgefleet.placement.explicit import eligible
from edgefleet.sim import world_sites
from edgefleet.sim.world import AROUND_DEGREES


def placeable(app: App, site: Site) -> bool:
    """Whether placement may put ``app`` at ``site``, as the hub asks it."""
    selector = runnable_selector(app.spec.placement.selector, app.spec.workload.type)
    return eligible(selector, site_view(site))


def test_simulated_sites_surround_the_real_ones_in_their_regions() -> None:
    real, _ = sample_manifests()
    made = demo_fleet.simulated_sites(real, 60)
    assert {s.spec.region for s in made} == {s.spec.region for s in real}
    for i, site in enumerate(made):
        centre = real[i % len(real)]
        assert site.spec.region == centre.spec.region
        here, there = site.spec.location, centre.spec.location
        # Within the box around it: at most its corner, about 1.5 half-heights away.
        assert (
            great_circle_km(here.lat, here.lon, there.lat, there.lon) < 1.5 * 111 * AROUND_DEGREES
        )
        assert site.metadata.labels == demo_fleet.LABELS
    # `edgefleet sim --no-create` finds them by the names world_sites gives.
    names = [s.metadata.name for s in world_sites(60, prefix=demo_fleet.PREFIX)]
    assert [s.metadata.name for s in made] == names


def test_hello_is_kept_to_the_real_sites_and_telemetry_to_the_simulated_ones() -> None:
    real, hello = sample_manifests()
    made = demo_fleet.simulated_sites(real, 12)
    kept = demo_fleet.kept_to(hello, real)
    assert hello.spec.placement.selector.sites == []  # the sample itself is left alone
    telemetry = demo_fleet.fleet_app("demo", 12)
    for site in real:
        assert placeable(kept, site) and not placeable(telemetry, site)
    for site in made:
        assert placeable(telemetry, site) and not placeable(kept, site)
        assert placeable(hello, site)  # what keeping it to the real sites prevents
    assert telemetry.spec.placement.replicas_per_site == 1
    assert telemetry.spec.scaling.max_replicas >= 12


def test_the_farthest_simulated_site_is_as_far_from_the_real_ones_as_any() -> None:
    real, _ = sample_manifests()
    made = demo_fleet.simulated_sites(real, 90)
    site, near, km = demo_fleet.farthest(made, real)

    def to_real(s: Site) -> float:
        here = s.spec.location
        return min(
            great_circle_km(here.lat, here.lon, r.spec.location.lat, r.spec.location.lon)
            for r in real
        )

    assert km == to_real(site) == max(to_real(s) for s in made)
    loc = near.spec.location
    assert great_circle_km(site.spec.location.lat, site.spec.location.lon, loc.lat, loc.lon) == km
