"""The Python client against a real hub: lists read page by page, objects applied in chunks."""

from __future__ import annotations

import httpx
import pytest

from edgefleet.client import Client, HubError
from edgefleet.localfleet import LocalFleet
from edgefleet.model import Site, Tenant
from tests.factories import make_app, make_site


class Recording(httpx.HTTPTransport):
    """A real transport that remembers each request it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return super().handle_request(request)


def sites(count: int) -> list[Site]:
    return [make_site(f"s{i:03d}", ip=f"127.0.5.{i + 1}") for i in range(count)]


def test_lists_are_read_a_page_at_a_time(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    with fleet.client() as admin:
        admin.apply_many(sites(30) + [make_app(f"a{i}", tenant="t1") for i in range(3)])
        admin.apply(Tenant.model_validate({"metadata": {"name": "t1"}, "spec": {}}))
    recording = Recording()
    with Client(fleet.hub_url, token=fleet.admin_token, transport=recording) as client:
        pages = list(client.site_pages(page_size=7))
        assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
        assert [r.url.params.get("limit") for r in recording.sent] == ["7"] * 5
        assert "continue" not in recording.sent[0].url.params
        assert all("continue" in r.url.params for r in recording.sent[1:])
        assert [s.metadata.name for s in client.iter_sites(page_size=7)] == [
            f"s{i:03d}" for i in range(30)
        ]
        recording.sent.clear()
        # list_* keep answering everything, by pages of 500 under the hood.
        assert len(client.list_sites()) == 30
        assert [r.url.params.get("limit") for r in recording.sent] == ["500"]
        recording.sent.clear()
        assert len(list(client.iter_sites(page_size=0))) == 30
        assert [dict(r.url.params) for r in recording.sent] == [{}]
        assert [a.metadata.name for a in client.iter_apps("t1", page_size=2)] == ["a0", "a1", "a2"]
        assert [t.metadata.name for t in client.iter_tenants(page_size=1)] == ["t1"]
        with pytest.raises(ValueError, match="page_size 5001: use 1 to 5000"):
            list(client.site_pages(page_size=5001))


def test_many_objects_are_applied_in_chunks(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    recording = Recording()
    with Client(fleet.hub_url, token=fleet.admin_token, transport=recording) as client:
        applied = client.apply_many(sites(10), chunk=4)
        assert [r.url.path for r in recording.sent] == ["/api/v1/apply"] * 3
        assert [(a.kind, a.name, a.outcome) for a in applied] == [
            ("Site", f"s{i:03d}", "created") for i in range(10)
        ]
        assert applied[3].resource_version == client.get_site("s003").metadata.resource_version
        changed = sites(10)
        changed[6] = make_site("s006", ip="127.0.6.6")
        again = client.apply_many(changed, chunk=4)
        assert [a.outcome for a in again].count("configured") == 1
        assert again[6].outcome == "configured"
        with pytest.raises(ValueError, match="chunk 1001: use 1 to 1000"):
            client.apply_many(sites(1), chunk=1001)


def test_a_refusal_names_the_object_and_stops_at_its_chunk(sqlite_fleet: LocalFleet) -> None:
    fleet = sqlite_fleet
    objects = sites(10)
    objects[6].metadata.resource_version = "12345"  # s006 does not exist yet
    with fleet.client() as client:
        with pytest.raises(HubError) as refused:
            client.apply_many(objects, chunk=4)
        assert refused.value.status == 404 and refused.value.item == 6
        assert "site 's006' does not exist" in refused.value.message
        # The first chunk was applied; the refused one and those after it were not.
        assert [s.metadata.name for s in client.list_sites()] == [f"s{i:03d}" for i in range(4)]
