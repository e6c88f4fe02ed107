"""The test bed's topology: built-in sites, files, addresses, client regions, WAN config."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.geo import estimated_rtt_ms, great_circle_km
from edgefleet.testbed.topology import (
    ANYCAST_DNS,
    HUB_ADDRESS,
    default_clients,
    default_topology,
    load_topology,
    parse_topology,
    site_address,
)


def test_the_default_is_the_demo_fleet_with_one_client_region_per_region() -> None:
    topology = default_topology()
    assert topology.site_names == ["paris", "london", "new-york", "boston", "tokyo", "singapore"]
    assert [s.address for s in topology.sites] == [f"10.77.8.{k}" for k in range(1, 7)]
    assert [(c.name, c.address) for c in topology.clients] == [
        ("eu-west", "10.77.1.1"),
        ("us-east", "10.77.1.2"),
        ("ap", "10.77.1.3"),
    ]
    manifests = topology.site_manifests()
    assert [m.spec.addresses.ip for m in manifests] == [s.address for s in topology.sites]
    assert {(m.spec.addresses.ingress_port, m.spec.addresses.dns_port) for m in manifests} == {
        (8080, 53)
    }


def test_more_sites_than_cities_get_distinct_names_and_places() -> None:
    topology = default_topology(40)
    assert len(set(topology.site_names)) == 40
    assert len({(s.lat, s.lon) for s in topology.sites}) == 40
    assert topology.site("paris-2").region == "eu-west"
    with pytest.raises(ValueError, match="at least 1"):
        default_topology(0)


def test_addresses_are_unique_and_inside_the_test_range() -> None:
    addresses = [site_address(i) for i in range(2000)]
    assert len(set(addresses)) == 2000
    assert addresses[249] == "10.77.8.250" and addresses[250] == "10.77.9.1"
    assert not {HUB_ADDRESS, ANYCAST_DNS} & set(addresses)
    assert all(a.startswith("10.77.") for a in addresses)
    with pytest.raises(ValueError):
        site_address(2000)


def test_a_region_across_the_antimeridian_is_centred_between_its_sites() -> None:
    topology = parse_topology(
        {
            "sites": [
                {"name": "fiji", "region": "pacific", "lat": -17.7, "lon": 178.0},
                {"name": "samoa", "region": "pacific", "lat": -13.8, "lon": -172.1},
            ]
        }
    )
    (centre,) = default_clients(topology.sites)
    assert abs(centre.lon) > 170  # not near longitude 3, on the other side of the world


def test_wan_config_delay_model_matches_the_fleet_estimates() -> None:
    topology = default_topology(2)
    config = topology.wan_config("ef-")
    nodes = {n["name"]: n for n in config["nodes"]}
    assert set(nodes) == {"hub", "paris", "london", "clients-eu-west"}
    assert nodes["paris"]["netns"] == "ef-s-paris"
    assert config["anycast"] == [
        {"address": ANYCAST_DNS, "members": ["paris", "london"], "health_port": 53}
    ]
    km = great_circle_km(48.8566, 2.3522, 51.5074, -0.1278)
    one_way = config["base_ms"] + km / config["km_per_ms"]
    assert 2 * one_way == pytest.approx(estimated_rtt_ms(km))


def test_a_file_round_trips_and_bad_files_say_where(tmp_path: Path) -> None:
    topology = default_topology(3)
    assert parse_topology(topology.to_json()) == topology
    path = tmp_path / "bed.yaml"
    site_a = "  - {name: a, region: r, lat: 1, lon: 2}\n"
    path.write_text(f"sites:\n{site_a}  - {{name: b, region: r, lat: 95, lon: 0}}\n")
    with pytest.raises(ValueError, match=r"bed.yaml.sites\[1\].lat: expected -90 to 90"):
        load_topology(path)
    path.write_text("sites: []\n")
    with pytest.raises(ValueError, match="non-empty list of sites"):
        load_topology(path)
    path.write_text(f"sites:\n{site_a}{site_a}")
    with pytest.raises(ValueError, match="repeated: a"):
        load_topology(path)
    path.write_text("site: []\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_topology(path)
    with pytest.raises(ValueError, match="cannot read it"):
        load_topology(tmp_path / "missing.yaml")
    with pytest.raises(KeyError, match=r"no site 'nowhere'.*paris"):
        default_topology().site("nowhere")
