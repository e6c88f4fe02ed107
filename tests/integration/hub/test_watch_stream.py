"""An agent's watch as a stream (``GET .../watch?stream=true``): its news a line at a time on
one open answer, against a real hub process, and the end of the stream when the credential it
was opened with is revoked."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edgefleet.hub.routes.agent import KEEPALIVE
from edgefleet.localfleet import LocalFleet, free_port
from tests.factories import make_app, make_site

END = object()
"""What the reader puts in its queue when the stream ended."""


class Reader:
    """Reads a watch stream's lines in a thread, into a queue (``END`` when it ends)."""

    def __init__(self, fleet: LocalFleet, site: str, credential: str, **params: Any) -> None:
        self.lines: queue.Queue[object] = queue.Queue()
        self.status: int | None = None
        self._url = f"{fleet.hub_url}/api/v1/agent/sites/{site}/watch"
        self._params = {"stream": "true", "timeout": 120, **params}
        self._headers = {"Authorization": f"Bearer {credential}"}
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._opened.wait(30), "the stream's head never came"

    def _read(self) -> None:
        try:
            with httpx.stream(
                "GET", self._url, params=self._params, headers=self._headers, timeout=60
            ) as reply:
                self.status = reply.status_code
                self.media = reply.headers.get("content-type", "")
                self._opened.set()
                for line in reply.iter_lines():
                    self.lines.put(line)
        finally:
            self._opened.set()
            self.lines.put(END)

    def news(self, timeout: float) -> dict[str, Any]:
        """The next line that carries news (keep-alives skipped)."""
        while True:
            line = self.lines.get(timeout=timeout)
            assert line is not END, "the stream ended"
            assert isinstance(line, str)
            if line.strip():
                news: dict[str, Any] = json.loads(line)
                return news

    def ends_within(self, timeout: float) -> bool:
        """Whether the stream ends within ``timeout`` seconds (news before the end skipped)."""
        try:
            while self.lines.get(timeout=timeout) is not END:
                pass
        except queue.Empty:
            return False
        return True


@pytest.fixture
def hub(tmp_path: Any) -> Iterator[LocalFleet]:
    fleet = LocalFleet(workdir=tmp_path, hub_port=free_port(), dns_port=free_port())
    with fleet.running():
        fleet.start_hub()
        with fleet.client() as client:
            client.apply(make_site("paris"))
            client.apply(make_site("lyon", lat=45.76, lon=4.83))
        yield fleet


def test_a_stream_brings_each_news_on_the_answer_it_opened(hub: LocalFleet) -> None:
    reader = Reader(hub, "paris", hub.site_credential("paris"))
    assert reader.status == 200 and reader.media.startswith("application/x-ndjson")
    first = reader.news(timeout=30)
    # The first line: what a long-poll from nothing would answer (the state, the whole share).
    assert first["routes"]["table"]["sites"]
    held = first["desiredState"]["revision"] if first.get("desiredState") else -1
    with hub.client() as client:
        client.apply(make_app("shop", placement={"replicasPerSite": 1}))
    # The app's desired state comes down the same stream, as a later line.
    while True:
        news = reader.news(timeout=30)
        state = news.get("desiredState")
        if state is not None and any(a["app"] == "shop" for a in state["apps"]):
            break
    assert state["revision"] > held
    # Opened again from what it holds, a stream sends nothing old.
    again = Reader(
        hub,
        "paris",
        hub.site_credential("paris"),
        state=state["revision"],
        routes="not-a-version-this-hub-sent",
    )
    news = again.news(timeout=30)
    assert news.get("desiredState") is None and news["routes"]["table"] is not None


def test_a_revoked_credential_ends_its_stream_and_opens_no_other(hub: LocalFleet) -> None:
    old = hub.site_credential("paris")
    reader = Reader(hub, "paris", old)
    reader.news(timeout=30)
    hub.site_credential("paris")  # joining again revokes the site's earlier credentials
    # Ended at the next wake of the stream: news for the site, or a keep-alive at the latest.
    assert reader.ends_within(KEEPALIVE + 10)
    refused = httpx.get(
        f"{hub.hub_url}/api/v1/agent/sites/paris/watch",
        params={"stream": "true", "timeout": 0},
        headers={"Authorization": f"Bearer {old}"},
    )
    assert refused.status_code == 401
