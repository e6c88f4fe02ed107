"""Where simulated sites are: the nine world regions, or boxes around given sites."""

from __future__ import annotations

from edgefleet.model import Site
from edgefleet.sim.world import AROUND_DEGREES, REGIONS, Box, address, areas_around, world_sites
from tests.factories import make_site


def inside(site: Site, box: Box) -> bool:
    (lat0, lat1), (lon0, lon1) = box
    here = site.spec.location
    return lat0 <= here.lat <= lat1 and lon0 <= here.lon <= lon1


def test_world_sites_take_the_nine_regions_in_turn_without_client_networks() -> None:
    sites = world_sites(18, prefix="w-")
    regions = sorted(REGIONS)
    assert [s.metadata.name for s in sites[:2]] == ["w-00001", "w-00002"]
    for i, site in enumerate(sites):
        assert site.spec.region == regions[i % 9]
        assert inside(site, REGIONS[site.spec.region])
        assert site.spec.addresses.ip == address(i)
        assert site.spec.networks == []
        assert site.spec.driver.value == "simulated"


def test_sites_around_others_are_in_boxes_around_them_and_named_as_anywhere() -> None:
    real = [
        make_site("oslo", region="eu-north", lat=59.9, lon=10.7),
        make_site("quito", region="latam", lat=-0.2, lon=-78.5),
    ]
    areas = areas_around(real)
    sites = world_sites(40, areas=areas, client_networks=True, labels={"simulated": "true"})
    for i, site in enumerate(sites):
        region, box = areas[i % 2]
        assert site.spec.region == region == real[i % 2].spec.region
        assert inside(site, box)
        # A client at the site's own address is located there.
        assert site.spec.networks == [f"{site.spec.addresses.ip}/32"]
        assert site.metadata.labels == {"simulated": "true"}
    # The names do not depend on where the sites are: `edgefleet sim --no-create` relies on it.
    assert [s.metadata.name for s in sites] == [s.metadata.name for s in world_sites(40)]


def test_a_box_around_a_site_holds_it_and_spans_as_many_km_either_way() -> None:
    north, equator = (
        box
        for _, box in areas_around(
            [make_site("a", lat=60.0, lon=0.0), make_site("b", lat=0.0, lon=0.0)]
        )
    )
    assert north[0] == (60.0 - AROUND_DEGREES, 60.0 + AROUND_DEGREES)
    assert equator == ((-AROUND_DEGREES, AROUND_DEGREES), (-AROUND_DEGREES, AROUND_DEGREES))
    # At 60 degrees north a degree of longitude is half as long: twice as many of them.
    assert abs((north[1][1] - north[1][0]) - 4 * AROUND_DEGREES) < 1e-9
    # Near a pole and the date line the box stays on the map.
    [(_, ((lat0, lat1), (lon0, lon1)))] = areas_around([make_site("c", lat=88.9, lon=179.0)])
    assert lat0 < 88.9 < lat1 <= 89.0 and lon0 < 179.0 < lon1 <= 180.0
