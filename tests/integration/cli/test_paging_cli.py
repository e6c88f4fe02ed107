"""``edgefleet get`` a page at a time and ``edgefleet apply`` through the bulk endpoint, run as a
user runs them: against a real hub, and against a hub that holds its second page back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from edgefleet.localfleet import LocalFleet, free_port, wait_for
from tests.factories import make_site
from tests.integration.cli.test_cli import run

pytestmark = pytest.mark.slow

COUNT = 300


def site_docs(count: int) -> str:
    """``count`` Site manifests in one YAML file."""
    return yaml.safe_dump_all(
        (
            {
                "apiVersion": "edgefleet.io/v1alpha1",
                "kind": "Site",
                "metadata": {"name": f"site-{i:04d}"},
                "spec": {
                    "region": ["eu-west", "us-east", "asia-east"][i % 3],
                    "zone": f"zone-{i % 7}",
                    "location": {"lat": 10 + i / 100, "lon": 20 - i / 100},
                    "addresses": {"ip": f"10.9.{i // 250}.{i % 250 + 1}"},
                },
            }
            for i in range(count)
        ),
        sort_keys=False,
    )


@pytest.fixture
def big_fleet(sqlite_fleet: LocalFleet, tmp_path: Path) -> Iterator[LocalFleet]:
    """A hub with ``COUNT`` sites, registered with ``edgefleet apply`` in chunks of 128."""
    path = tmp_path / "sites.yaml"
    path.write_text(site_docs(COUNT))
    applied = run(sqlite_fleet, "apply", "-f", str(path), "--chunk-size", "128")
    assert applied.returncode == 0, applied.stderr
    # Large inputs: a line per kind, and progress on stderr per request.
    assert applied.stdout.splitlines() == [f"site: {COUNT} created"]
    assert applied.stderr.splitlines() == [
        f"applied 128 of {COUNT} objects",
        f"applied 256 of {COUNT} objects",
        f"applied {COUNT} of {COUNT} objects",
    ]
    yield sqlite_fleet


def test_apply_sends_documents_through_the_bulk_endpoint(
    big_fleet: LocalFleet, tmp_path: Path
) -> None:
    with big_fleet.client() as admin:
        audit = [e for e in admin.audit(limit=1000) if e.method in ("POST", "PUT")]
    assert [(e.action, e.result) for e in audit] == [
        ("apply objects", "site: 128 created"),
        ("apply objects", "site: 128 created"),
        ("apply objects", f"site: {COUNT - 256} created"),
    ]
    path = tmp_path / "again.yaml"
    path.write_text(site_docs(COUNT).replace("zone-3", "zone-33"))
    again = run(big_fleet, "apply", "-f", str(path))
    assert again.returncode == 0, again.stderr
    changed = sum(1 for i in range(COUNT) if i % 7 == 3)
    assert again.stdout.splitlines() == [f"site: {changed} configured, {COUNT - changed} unchanged"]


def test_a_refused_document_is_named_with_what_was_applied(
    sqlite_fleet: LocalFleet, tmp_path: Path
) -> None:
    docs = list(yaml.safe_load_all(site_docs(250)))
    docs[200]["metadata"]["resourceVersion"] = "999999"  # an update of a site never created
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    result = run(sqlite_fleet, "apply", "-f", str(path), "--chunk-size", "100")
    assert result.returncode == 1
    assert (
        f"error: {path}, document 201: site 'site-0200' does not exist: drop "
        "metadata.resourceVersion to create it" in result.stderr
    )
    assert "200 of 250 objects were applied (by the requests before); the rest were not" in (
        result.stderr
    )
    with sqlite_fleet.client() as admin:
        assert len(admin.list_sites()) == 200


def test_get_pages_through_the_fleet(big_fleet: LocalFleet) -> None:
    names = [f"site-{i:04d}" for i in range(COUNT)]
    table = run(big_fleet, "get", "sites", "--chunk-size", "7")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "REGION", "ZONE", "PHASE", "REPLICAS", "HEARTBEAT", "AGE"]
    assert [line.split()[0] for line in lines[1:]] == names
    # Every page keeps the columns the first one set.
    region = lines[0].index("REGION")
    assert {line.index(line.split()[1]) for line in lines[1:]} == {region}
    whole = run(big_fleet, "get", "sites", "--chunk-size", "0").stdout.splitlines()
    # The same table from one request (but for AGE, which may have ticked).
    assert [line.rsplit(maxsplit=1)[0] for line in whole] == [
        line.rsplit(maxsplit=1)[0] for line in lines
    ]

    as_json = run(big_fleet, "get", "sites", "-o", "json", "--chunk-size", "7")
    assert as_json.returncode == 0, as_json.stderr
    listed = json.loads(as_json.stdout)
    assert (listed["apiVersion"], listed["kind"]) == ("edgefleet.io/v1alpha1", "SiteList")
    assert [i["metadata"]["name"] for i in listed["items"]] == names
    # The same text as the whole list dumped at once.
    assert as_json.stdout == json.dumps(listed, indent=2) + "\n"
    assert (
        run(big_fleet, "get", "sites", "-o", "json", "--chunk-size", "0").stdout == as_json.stdout
    )

    as_yaml = run(big_fleet, "get", "sites", "-o", "yaml", "--chunk-size", "7")
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert as_yaml.stdout == yaml.safe_dump(listed, sort_keys=False) + "\n"


def test_an_empty_list_is_one_valid_document(sqlite_fleet: LocalFleet) -> None:
    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        shown = run(sqlite_fleet, "get", "tenants", "-o", fmt, "--chunk-size", "3")
        assert shown.returncode == 0, shown.stderr
        assert load(shown.stdout) == {
            "apiVersion": "edgefleet.io/v1alpha1",
            "kind": "TenantList",
            "items": [],
        }
    table = run(sqlite_fleet, "get", "apps")
    assert table.stdout.split() == ["TENANT", "NAME", "READY", "SITES", "GENERATION", "AGE"]


class HeldHub:
    """A hub's site list that answers its first page at once and the rest only when released."""

    def __init__(self, first: int, rest: int) -> None:
        self.release = threading.Event()
        items = [make_site(f"s{i:03d}").to_wire() for i in range(first + rest)]
        pages: dict[str, dict[str, Any]] = {
            "": {"items": items[:first], "metadata": {"continue": "next"}},
            "next": {"items": items[first:], "metadata": {}},
        }
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                token = query.get("continue", [""])[0]
                if token:
                    # Longer than the test waits for the first rows: a CLI that waited for
                    # the whole list would fail the test, not pass it late.
                    release.wait(timeout=120)
                body = json.dumps({"kind": "SiteList", **pages[token]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("output", ["table", "json"])
def test_the_first_page_shows_before_the_rest_arrives(output: str) -> None:
    hub = HeldHub(first=5, rest=3)
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "edgefleet", "get", "sites", "--chunk-size", "5", "-o", output],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "EDGEFLEET_HUB": hub.url, "EDGEFLEET_TOKEN": "test"},
        ) as cli:
            seen: list[str] = []
            reader = threading.Thread(target=lambda: seen.extend(cli.stdout or []), daemon=True)
            reader.start()
            # The second page is held: the first five sites must show without it.
            wait_for(
                lambda: any("s004" in line for line in seen),
                timeout=30,
                what="the first page's rows",
            )
            assert not any("s005" in line for line in seen)
            hub.release.set()
            assert cli.wait(timeout=30) == 0
            reader.join(timeout=30)
        text = "".join(seen)
        if output == "json":
            assert [i["metadata"]["name"] for i in json.loads(text)["items"]] == [
                f"s{i:03d}" for i in range(8)
            ]
        else:
            assert [line.split()[0] for line in text.splitlines()[1:]] == [
                f"s{i:03d}" for i in range(8)
            ]
    finally:
        hub.close()
