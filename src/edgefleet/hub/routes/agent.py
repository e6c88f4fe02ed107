"""/api/v1/agent: the calls agents make. Every connection is opened by the agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response, status
from fastapi.responses import StreamingResponse

from edgefleet.hub.auth import still_proven
from edgefleet.hub.demand import ORIGIN_MAX, place_origins
from edgefleet.hub.runtime import Hub, get_hub
from edgefleet.hub.store import NotFound
from edgefleet.model import (
    DemandReport,
    Heartbeat,
    HeartbeatAnswer,
    StatusReport,
    WatchAnswer,
)

router = APIRouter(prefix="/api/v1/agent/sites/{site}", tags=["agent"])
HubDep = Annotated[Hub, Depends(get_hub)]

TABLE_WAIT = 2.0
"""Seconds a watch waits for the routing table to hold a site just created."""

KEEPALIVE = 15.0
"""Seconds of quiet after which a watch stream sends an empty line."""

STREAM = "application/x-ndjson"
"""The media type of a watch stream: one JSON answer a line."""


async def _known(hub: Hub, site: str) -> None:
    """404 unless ``site`` exists: from the hub's picture of the fleet, else from the store (a
    site created at another hub a moment ago)."""
    if site not in hub.fleet.sites:
        await asyncio.to_thread(hub.store.objects.get_site, site)


@router.get(
    "/watch",
    response_model=WatchAnswer,
    responses={
        200: {
            "description": "The news (a stream of it, one JSON answer a line, with `stream`).",
            "content": {STREAM: {}},
        },
        204: {"description": "Nothing changed before the timeout."},
        503: {"description": "The hub is catching up with the fleet's changes: ask again."},
    },
)
async def watch(
    site: str,
    hub: HubDep,
    state: int = -1,
    routes: str = "",
    timeout: Annotated[float, Query(ge=0)] = 30.0,
    stream: bool = False,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """Long-poll: as soon as the site's desired state has a revision other than ``state``, or
    its share of the routing table changed since version ``routes`` (whole when ``routes`` is
    not the version this hub sent it last, else a delta), the news; 204 if nothing changed
    before ``timeout`` seconds (capped by the hub). A waiting agent holds no thread.

    With ``stream``, the answer goes on for ``timeout`` seconds (capped by the hub): each news
    is one line of JSON as the long-poll would answer it, sent as it comes, and an empty line
    when nothing came for ``KEEPALIVE`` seconds (the agent knows the hub is there). A
    stream costs the hub one line per news where a long-poll costs an answer and a new request,
    which is what sends an app's desired state to ten thousand sites in seconds.

    "Other than", not "above": an agent whose cached revision is ahead of the hub (the hub's
    database was restored from a backup) must still get the hub's state.
    """
    await _known(hub, site)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, hub.config.max_watch_timeout)
    await _table_holds(hub, site)
    if stream:
        # The first news is found before the answer starts: a 503 or 404 is a status.
        first, state, routes = await _news(hub, site, state, routes)
        lines = news_stream(
            hub,
            site,
            first=first,
            state=state,
            routes=routes,
            timeout=timeout,
            allowed=lambda: still_proven(hub, authorization),
        )
        return StreamingResponse(lines, media_type=STREAM)
    while True:
        body, _, _ = await _news(hub, site, state, routes)
        if body is not None:
            return Response(body, media_type="application/json")
        left = deadline - loop.time()
        if left <= 0 or not await hub.bells.wait(site, left):
            return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _table_holds(hub: Hub, site: str) -> None:
    """Wait up to ``TABLE_WAIT`` seconds for the routing table to hold a site created a moment
    ago: its share is sent once the table holds the site itself."""
    loop = asyncio.get_running_loop()
    settled = loop.time() + TABLE_WAIT
    while hub.routing.route_site(site) is None and loop.time() < settled:
        await hub.routing.wait(hub.routing.version, settled - loop.time())


async def _news(hub: Hub, site: str, state: int, routes: str) -> tuple[bytes | None, int, str]:
    """What a site that holds desired-state revision ``state`` and share version ``routes``
    has not heard (a ``WatchAnswer`` body), or None; and the revision and share version it
    will then hold.
    404 for a site deleted meanwhile, 503 while the hub catches up with the store."""
    if site not in hub.fleet.sites:
        await _known(hub, site)  # deleted meanwhile: 404
    desired = None
    revision = hub.watch.revision(site)
    if revision != state:
        # The answer for revision R is built from a picture that includes R.
        if not await hub.follower.caught_up(revision, timeout=5.0):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "the hub is catching up with the fleet's changes: ask again",
                headers={"Retry-After": "1"},
            )
        desired = hub.desired.body(site, revision)
    share = hub.shares.answer(site, routes)
    if desired is None and share is None:
        return None, state, routes
    body = b'{"desiredState":' + (desired or b"null") + b',"routes":' + (share or b"null") + b"}"
    return body, revision if desired is not None else state, hub.shares.sent(site)


async def news_stream(
    hub: Hub,
    site: str,
    *,
    first: bytes | None,
    state: int,
    routes: str,
    timeout: float,
    allowed: Callable[[], bool] = lambda: True,
) -> AsyncIterator[bytes]:
    """The lines of a watch ``stream`` (see ``watch``): ``first`` (the news found before the
    answer started, if any), then the news as it comes, an empty line every ``KEEPALIVE``
    seconds of quiet, for ``timeout`` seconds (at most the hub's ``max_stream``). ``state`` and
    ``routes`` are what the site holds once it has ``first``. The stream ends early when the
    hub stops, the site is deleted, the hub must catch up first, or ``allowed`` says the caller
    may no longer (its credential was revoked or expired): the agent opens the next one, and is
    authenticated again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(timeout, hub.config.max_stream)
    if first is not None:
        yield first + b"\n"
    while True:
        if not allowed():
            return
        try:
            body, state, routes = await _news(hub, site, state, routes)
        except (HTTPException, NotFound):
            return
        if body is not None:
            yield body + b"\n"
            continue
        left = deadline - loop.time()
        if left <= 0:
            return
        rang = await hub.bells.wait(site, min(left, KEEPALIVE))
        if hub.bells.closed:
            return
        if not rang:
            yield b"\n"


@router.post(
    "/status",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={503: {"description": "The hub could not write the report now; send it again."}},
)
async def report_status(site: str, report: StatusReport, hub: HubDep) -> None:
    """Replace the site's observed replicas with the agent's report; answered once written
    (reports are written in batches, a transaction for all those of a moment)."""
    if report.site != site:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"report is for site {report.site!r}, URL names {site!r}",
        )
    await _known(hub, site)
    if not await hub.reports.submit(report):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the hub could not write this status report now: send it again later",
            headers={"Retry-After": "2"},
        )
    hub.heartbeats.beat(site, report.observed_revision, hub.heartbeats.problem(site))
    hub.wrote()


@router.post("/heartbeat", response_model=HeartbeatAnswer)
async def heartbeat(site: str, beat: Heartbeat, hub: HubDep) -> HeartbeatAnswer:
    """I am alive. Buffered in memory and written in batches; the answer says how often to
    beat (less often in a big fleet)."""
    if beat.site != site:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"heartbeat is for site {beat.site!r}, URL names {site!r}",
        )
    await _known(hub, site)
    hub.heartbeats.beat(site, beat.observed_revision, beat.problem)
    if beat.probes:
        hub.peers.record(site, beat.probes)
    return HeartbeatAnswer(heartbeat_interval=hub.heartbeat_interval())


@router.post(
    "/demand",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={503: {"description": "Too many reports wait to be written; send it again."}},
)
async def report_demand(site: str, report: DemandReport, hub: HubDep) -> None:
    """One window's demand counts, answered once written (reports are written in batches, one
    transaction a period); a report whose ``seq`` was already taken is ignored, so an agent
    resends whatever it is unsure of."""
    if report.site != site:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"demand report is for site {report.site!r}, URL names {site!r}",
        )
    try:
        report = place_origins(report, hub.networks)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    for index, row in enumerate(report.rows):
        if len(row[1]) > ORIGIN_MAX:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"rows[{index}]: the origin is {len(row[1])} characters long; a site name "
                f"has at most {ORIGIN_MAX}",
            )
    await _known(hub, site)
    if not await hub.demand.submit(report):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the hub could not write this demand report (too many wait, or the store failed): "
            "keep it and send it again later",
            headers={"Retry-After": "10"},
        )
