"""The agents' calls through the hub's gateway (``edgefleet.hub.gateway``): the same
authentication, authorization, validation and answers as every other route of the API, seen
from a real client against a real hub process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from edgefleet.hub.gateway import MAX_BODY
from edgefleet.localfleet import LocalFleet, free_port
from tests.factories import make_app, make_site

CALLS = [
    ("GET", "watch", None),
    ("POST", "heartbeat", {"site": "paris", "observedRevision": 0}),
    ("POST", "status", {"site": "paris", "agentVersion": "t", "observedRevision": 0}),
    (
        "POST",
        "demand",
        {"site": "paris", "seq": 1, "windowStart": "2026-01-01T00:00:00Z", "windowSeconds": 10},
    ),
]


@pytest.fixture(scope="module")
def two_sites(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalFleet, dict[str, str]]]:
    """One hub for the module (the tests only read), with two sites that joined."""
    fleet = LocalFleet(
        workdir=tmp_path_factory.mktemp("gateway"), hub_port=free_port(), dns_port=free_port()
    )
    with fleet.running():
        fleet.start_hub()
        with fleet.client() as client:
            client.apply(make_site("paris"))
            client.apply(make_site("lyon", lat=45.76, lon=4.83, networks=["198.51.100.0/24"]))
        yield fleet, {name: fleet.site_credential(name) for name in ("paris", "lyon")}


def _call(
    fleet: LocalFleet, method: str, what: str, body: object, headers: dict[str, str], **kw: object
) -> httpx.Response:
    url = f"{fleet.hub_url}/api/v1/agent/sites/paris/{what}"
    params = {"timeout": 0} if what == "watch" else None
    return httpx.request(method, url, json=body, params=params, headers=headers, **kw)  # type: ignore[arg-type]


def test_agent_calls_need_the_sites_own_credential(
    two_sites: tuple[LocalFleet, dict[str, str]],
) -> None:
    fleet, credentials = two_sites
    mine = {"Authorization": f"Bearer {credentials['paris']}"}
    neighbour = {"Authorization": f"Bearer {credentials['lyon']}"}
    for method, what, body in CALLS:
        nobody = _call(fleet, method, what, body, {})
        assert nobody.status_code == 401, (what, nobody.text)
        assert nobody.headers["www-authenticate"] == "Bearer"
        forged = _call(fleet, method, what, body, {"Authorization": "Bearer efs_forged.x.y"})
        assert forged.status_code == 401 and "not a valid token" in forged.json()["detail"]
        # A neighbour site's credential is good for its own site only.
        other = _call(fleet, method, what, body, neighbour)
        assert other.status_code == 403, (what, other.text)
        own = _call(fleet, method, what, body, mine)
        assert own.status_code in (200, 204), (what, own.text)


def test_bad_bodies_and_queries_get_the_apis_422(
    two_sites: tuple[LocalFleet, dict[str, str]],
) -> None:
    fleet, credentials = two_sites
    mine = {"Authorization": f"Bearer {credentials['paris']}"}
    url = f"{fleet.hub_url}/api/v1/agent/sites/paris"
    broken = httpx.post(f"{url}/heartbeat", content=b"{not json", headers=mine)
    assert broken.status_code == 422
    detail = broken.json()["detail"]
    assert detail[0]["loc"][0] == "body" and detail[0]["msg"]
    wrong = httpx.post(f"{url}/status", json={"observedRevision": "many"}, headers=mine)
    assert wrong.status_code == 422
    assert ["body", "observedRevision"] in [d["loc"] for d in wrong.json()["detail"]]
    negative = httpx.get(f"{url}/watch", params={"timeout": -1}, headers=mine)
    assert negative.status_code == 422
    assert negative.json()["detail"][0]["loc"] == ["query", "timeout"]
    # The same shape as a route FastAPI answers itself.
    api = httpx.put(
        f"{fleet.hub_url}/api/v1/sites/paris", content=b"{not json", headers=fleet.headers
    )
    assert api.status_code == 422 and api.json()["detail"][0]["loc"][0] == "body"


def test_a_body_too_large_is_refused_before_it_is_read_whole(
    two_sites: tuple[LocalFleet, dict[str, str]],
) -> None:
    fleet, credentials = two_sites
    mine = {"Authorization": f"Bearer {credentials['paris']}"}
    huge = b'{"site": "paris", "apps": [' + b" " * (MAX_BODY + 1) + b"]}"
    reply = httpx.post(
        f"{fleet.hub_url}/api/v1/agent/sites/paris/status", content=huge, headers=mine
    )
    assert reply.status_code == 413 and str(MAX_BODY) in reply.json()["detail"]
    # The hub still answers.
    assert _call(fleet, *CALLS[1][:2], CALLS[1][2], mine).status_code == 200


def test_what_the_gateway_does_not_take_goes_to_the_api(
    two_sites: tuple[LocalFleet, dict[str, str]],
) -> None:
    fleet, credentials = two_sites
    mine = {"Authorization": f"Bearer {credentials['paris']}"}
    base = f"{fleet.hub_url}/api/v1/agent/sites"
    # Unknown calls are FastAPI's to answer (404, not a gateway error).
    assert httpx.get(f"{base}/paris/nothing", headers=mine).status_code == 404
    # A site that does not exist: 403 for another site's credential, never a crash.
    assert httpx.get(f"{base}/nowhere/watch", headers=mine).status_code == 403
    # The agent routes stay in the API's document.
    paths = httpx.get(f"{fleet.hub_url}/openapi.json").json()["paths"]
    for _, what, _ in CALLS:
        assert f"/api/v1/agent/sites/{{site}}/{what}" in paths


def test_demand_from_a_client_network_is_placed_at_the_site_that_holds_it(
    two_sites: tuple[LocalFleet, dict[str, str]],
) -> None:
    """Paris could not place a client (its share does not hold the site it came from): it
    reports the client's network, and the hub, which holds every site's networks, places it."""
    fleet, credentials = two_sites
    mine = {"Authorization": f"Bearer {credentials['paris']}"}
    with fleet.client() as admin:
        admin.apply(make_app("shop", tenant="demo"))
    report = {
        "site": "paris",
        "seq": 7,
        "windowStart": (datetime.now(UTC) - timedelta(seconds=10)).isoformat(),
        "windowSeconds": 10,
        "rows": [["demo/shop", "~198.51.100.0/24", 40, 1.0, 0], ["demo/shop", "~", 10, 0.1, 0]],
    }
    url = f"{fleet.hub_url}/api/v1/agent/sites/paris/demand"
    assert httpx.post(url, json=report, headers=mine).status_code == 204
    rows = httpx.get(f"{fleet.hub_url}/api/v1/demand", headers=fleet.headers).json()
    origins = {r["origin"] for r in rows if (r["tenant"], r["app"]) == ("demo", "shop")}
    assert origins == {"lyon", "paris"}
