"""The hub's HTTP API, served by a real hub process: objects, errors, the agent long-poll."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefleet.client import HubError
from edgefleet.localfleet import LocalFleet, wait_for
from tests.factories import make_app, make_site


def test_documented_endpoints(sqlite_fleet: LocalFleet) -> None:
    base = sqlite_fleet.hub_url
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "leader": True}
    schema = httpx.get(f"{base}/openapi.json").json()
    assert "/api/v1/sites" in schema["paths"]
    assert "/api/v1/tenants/{tenant}/apps/{name}" in schema["paths"]
    assert httpx.get(f"{base}/docs").status_code == 200
    assert httpx.get(f"{base}/api/v1/version").json()["version"]


def test_apply_get_list_delete(fleet: LocalFleet) -> None:
    with fleet.client() as client:
        site, outcome = client.apply(make_site("paris"))
        assert outcome == "created" and site.status.phase.value == "Pending"
        _, outcome = client.apply(make_site("paris"))
        assert outcome == "unchanged"
        app, _ = client.apply(make_app(placement={"replicas": 2}))
        assert app.metadata.generation == 1
        assert [a.metadata.name for a in client.list_apps("demo")] == ["hello"]
        # Placement runs in the hub: both replicas land on the only site.
        placed = wait_for(
            lambda: client.get_app("demo", "hello").status.desired_replicas == 2,
            timeout=15,
            what="placement",
        )
        assert placed
        assert client.get_app("demo", "hello").status.sites[0].site == "paris"
        reasons = [e.reason for e in client.events(kind="App", tenant="demo", name="hello")]
        assert "Created" in reasons and "Placed" in reasons
        client.delete_app("demo", "hello")
        with pytest.raises(HubError) as missing:
            client.get_app("demo", "hello")
        assert missing.value.status == 404


def test_stale_version_gets_409(sqlite_fleet: LocalFleet) -> None:
    with sqlite_fleet.client() as client:
        first, _ = client.apply(make_app(placement={"replicas": 1}))
        client.apply(make_app(placement={"replicas": 2}))
        stale = make_app(placement={"replicas": 3})
        stale.metadata.resource_version = first.metadata.resource_version
        with pytest.raises(HubError) as conflict:
            client.apply(stale)
        assert conflict.value.status == 409
        assert client.get_app("demo", "hello").spec.placement.replicas == 2


def test_invalid_objects_get_422_with_the_field_and_store_nothing(
    sqlite_fleet: LocalFleet,
) -> None:
    base = sqlite_fleet.hub_url
    body = make_app().model_dump(mode="json", by_alias=True)
    body["spec"]["placement"]["replicas"] = -1
    auth = sqlite_fleet.headers
    reply = httpx.put(f"{base}/api/v1/tenants/demo/apps/hello", json=body, headers=auth)
    assert reply.status_code == 422
    locs = [e["loc"] for e in reply.json()["detail"]]
    assert ["body", "spec", "placement", "replicas"] in locs
    body["spec"]["placement"]["replicas"] = 1
    reply = httpx.put(f"{base}/api/v1/tenants/other/apps/hello", json=body, headers=auth)
    assert reply.status_code == 422
    assert "does not match" in reply.json()["detail"]
    assert httpx.get(f"{base}/api/v1/apps", headers=auth).json()["items"] == []
    assert httpx.get(f"{base}/api/v1/sites/nowhere", headers=auth).status_code == 404
    assert httpx.get(f"{base}/api/v1/tenants/demo/apps/nothing", headers=auth).status_code == 404


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "apiVersion": st.just("edgefleet.io/v1alpha1"),
                "kind": st.sampled_from(["App", "Site"]),
                "metadata": json_values,
                "spec": json_values,
            }
        ),
    ),
    path=st.sampled_from(
        [
            "/api/v1/sites/x",
            "/api/v1/tenants/t/apps/x",
            "/api/v1/agent/sites/x/status",
            "/api/v1/agent/sites/x/heartbeat",
        ]
    ),
)
def test_nothing_a_client_sends_crashes_the_hub(
    sqlite_fleet: LocalFleet, body: object, path: str
) -> None:
    method = "POST" if "/agent/" in path else "PUT"
    reply = httpx.request(
        method,
        f"{sqlite_fleet.hub_url}{path}",
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **sqlite_fleet.headers},
    )
    assert reply.status_code < 500, reply.text
    garbage = httpx.request(
        method,
        f"{sqlite_fleet.hub_url}{path}",
        content=b"{not json",
        headers={"Content-Type": "application/json", **sqlite_fleet.headers},
    )
    assert garbage.status_code == 422


@pytest.mark.parametrize("body", ["Infinity", "NaN", '{"metadata": {"name": -Infinity}}'])
def test_non_finite_numbers_are_refused_not_fatal(sqlite_fleet: LocalFleet, body: str) -> None:
    reply = httpx.put(
        f"{sqlite_fleet.hub_url}/api/v1/sites/x",
        content=body,
        headers={"Content-Type": "application/json", **sqlite_fleet.headers},
    )
    assert reply.status_code == 422
    assert all("input" not in error for error in reply.json()["detail"])


def test_long_poll_answers_at_once_waits_and_wakes(sqlite_fleet: LocalFleet) -> None:
    base = sqlite_fleet.hub_url
    with sqlite_fleet.client() as client:
        client.apply(make_site("paris"))
    url = f"{base}/api/v1/agent/sites/paris/watch"
    auth = sqlite_fleet.headers
    first = httpx.get(url, params={"state": -1, "timeout": 5}, headers=auth)
    assert first.status_code == 200
    # The first answer: the desired state, and the site's share of the routing table whole.
    revision = first.json()["desiredState"]["revision"]
    share = first.json()["routes"]["table"]
    assert share["version"] and [s["name"] for s in share["sites"]] == ["paris"]
    # Nothing changes: the poll waits out its timeout and says so with 204.
    held = {"state": revision, "routes": share["version"]}
    started = time.monotonic()
    assert httpx.get(url, params={**held, "timeout": 1}, headers=auth).status_code == 204
    assert time.monotonic() - started >= 0.9
    # A change wakes a waiting poll long before its timeout.
    answers: list[httpx.Response] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            httpx.get(url, params={**held, "timeout": 30}, timeout=40, headers=auth)
        )
    )
    waiter.start()
    time.sleep(0.5)
    with sqlite_fleet.client() as client:
        client.apply(make_app(placement={"replicas": 1}))
    waiter.join(timeout=20)
    assert answers and answers[0].status_code == 200
    state = answers[0].json()["desiredState"]
    assert state["revision"] != revision
    assert [(a["app"], a["replicas"]) for a in state["apps"]] == [("hello", 1)]
    nowhere = httpx.get(f"{base}/api/v1/agent/sites/nowhere/watch", headers=auth)
    assert nowhere.status_code == 404
