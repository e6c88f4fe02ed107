"""A site's link to the hub: join, watch, report, beat. The whole agent protocol, in one place.

Every connection is opened by the site (so a site behind NAT works, and the hub never dials ten
thousand sites):

- ``POST /api/v1/agent/join`` once, with the one-time join token, for the site's credential;
- ``GET .../watch?state=REV&routes=VERSION&stream=true``: one stream of news, a line of JSON
  each time the site's desired state or its share of the routing table changed (the share
  comes whole the first time, then as deltas), open for minutes and opened again when it ends
  (a hub that answers it as a long-poll, with one answer, is heard the same);
- ``POST .../status`` when the site's replicas change (and every ``report_resync`` seconds);
- ``POST .../heartbeat`` every ``heartbeat_interval`` seconds, or the longer interval the hub
  asks for (a big fleet beats more slowly), and at once when a neighbour's probe verdict changes;
- ``POST .../demand`` every demand window (``edgefleet.agent.demand.DemandReporter``).

The real agent and the simulator (``edgefleet.sim``) both speak through ``HubLink``, so the hub
cannot tell a simulated site from a real one. What the link needs of the site it speaks for is
``LinkedSite``: take a desired state, take a routing table, say what runs, say how it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError

from edgefleet.agent.backoff import Backoff
from edgefleet.agent.demand import DemandReporter
from edgefleet.agent.hubclient import HubClient, HubRefused, HubReply, HubUnreachable, lines
from edgefleet.agent.identity import (
    JOIN_PATH,
    JoinRefused,
    SavedCredential,
    SiteIdentity,
    join_needed,
    problems,
    token_digest,
)
from edgefleet.identity.credentials import CredentialError, verify
from edgefleet.model import (
    DesiredState,
    Heartbeat,
    HeartbeatAnswer,
    JoinRequest,
    JoinResponse,
    RoutingTable,
    RoutingUpdate,
    StatusReport,
    WatchAnswer,
)
from edgefleet.routing.delta import apply_delta

log = logging.getLogger(__name__)


BEAT_JITTER = 0.05
"""Each wait between two heartbeats is the interval give or take this fraction, drawn afresh:
sites that one stall lined up (of the hub, of a network, of a simulator's process) drift apart
again instead of beating together from then on."""


def beat_wait(interval: float, draw: Callable[[], float] = random.random) -> float:
    """Seconds to wait before the next heartbeat: ``interval`` give or take ``BEAT_JITTER``."""
    return interval * (1.0 + BEAT_JITTER * (2.0 * draw() - 1.0))


@dataclass(frozen=True)
class LinkConfig:
    """How a site talks to the hub. Every field has the documented default."""

    site: str
    """The site this link speaks for."""
    watch_timeout: float = 30.0
    """Seconds a watch stream's head may take to come from the hub (and a long-poll waits)."""
    stream_for: float = 300.0
    """Seconds a watch stream is asked to stay open (the hub may end it sooner)."""
    heartbeat_interval: float = 2.0
    """Seconds between heartbeats (the hub may ask for longer)."""
    report_resync: float = 60.0
    """Seconds between full status reports when nothing changed."""
    join_token: str | None = None
    """One-time join token, traded for the site's credential when needed (``join_needed``)."""
    settle: float = 0.1
    """Seconds a burst of replica changes settles before one status report says them all."""


class LinkedSite(Protocol):
    """What the link asks of the site it speaks for."""

    async def take_desired(self, state: DesiredState) -> None:
        """The hub's newest desired state for the site: keep it and converge to it."""

    async def take_routes(self, table: RoutingTable) -> None:
        """The site's newest share of the routing table: keep it and answer from it."""

    async def status_report(self, observed_revision: int) -> StatusReport:
        """What runs at the site now."""

    def heartbeat(self, observed_revision: int) -> Heartbeat:
        """How the site is now: its neighbours as its probes see them, what keeps it from
        running replicas."""


class HubLink:
    """The site's side of the agent protocol (see the module)."""

    def __init__(
        self,
        config: LinkConfig,
        client: HubClient,
        identity: SiteIdentity,
        site: LinkedSite,
        *,
        demand: DemandReporter | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.identity = identity
        self.site = site
        self.demand = demand
        self.revision = -1
        """Desired-state revision applied."""
        self.routes = RoutingTable(version="")
        """The site's share of the routing table, as last taken."""
        self.routes_taken = 0
        """Routing updates taken (whole shares and deltas)."""
        self.routes_bytes = 0
        """Bytes of the watch's news that brought routing updates only."""
        self.report_dirty = asyncio.Event()
        """Set when what runs at the site changed: a status report goes out."""
        self.beat_now = asyncio.Event()
        """Set to send a heartbeat at once (a probe verdict changed)."""
        self.hub_interval: float | None = None
        """The heartbeat interval the hub last asked for."""
        self._hub_back = asyncio.Event()
        self._refused_since: float | None = None
        self.failing = False
        """True while heartbeats do not reach the hub."""
        path = f"/api/v1/agent/sites/{config.site}"
        self._paths = {
            "watch": f"{path}/watch",
            "status": f"{path}/status",
            "heartbeat": f"{path}/heartbeat",
        }
        client.on_answer = self._answered

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats: the configured interval, or the hub's if longer."""
        return max(self.config.heartbeat_interval, self.hub_interval or 0.0)

    # -- joining ---------------------------------------------------------------------------------

    async def join(self) -> None:
        """Trade the join token for this site's credential when ``join_needed``, retrying while
        the hub cannot be reached; then every hub call carries the credential. A site that has a
        credential already goes on using it meanwhile.

        Raises ``JoinRefused`` when the hub says no and the site has no earlier credential; with
        one, says so and goes on with it.
        """
        token = self.config.join_token
        identity = self.identity
        if not join_needed(identity.saved, token):
            if identity.saved is None:
                log.info(
                    "site %s has no credential and no join token: calling the hub with %s",
                    self.config.site,
                    "its configured token" if self.client.token else "no token",
                )
            return
        assert token is not None
        # One id for every try of this join: a try whose answer is lost (the hub spent the
        # token, the reply never came) is answered again on the next.
        attempt = secrets.token_urlsafe(24)
        body = (
            JoinRequest(site=self.config.site, attempt=attempt)
            .model_dump_json(by_alias=True)
            .encode()
        )
        backoff = Backoff()
        while True:
            try:
                reply = await self.client.post(JOIN_PATH, body, token=token)
            except HubUnreachable as exc:
                reason = str(exc)
            else:
                if reply.status != 429 and reply.status < 500:
                    break
                reason = reply.reason()
            delay = backoff.next()
            log.warning("joining the fleet failed (%s); retrying in %.1fs", reason, delay)
            await self.backoff_sleep(delay)
        try:
            saved = self._joined(reply, token)
        except ValueError as exc:
            if identity.saved is None:
                raise JoinRefused(
                    f"site {self.config.site} cannot join the fleet: {exc}. Make a new join "
                    f"token with `edgefleet site join-token {self.config.site}` and start the "
                    "agent with it (EDGEFLEET_JOIN_TOKEN)"
                ) from None
            log.error(
                "site %s could not join again: %s; going on with the credential it has "
                "(expires at %s)",
                self.config.site,
                exc,
                f"{identity.saved.expires_at:%Y-%m-%dT%H:%M:%SZ}",
            )
            return
        await asyncio.to_thread(identity.file.save, saved)
        self.use(saved)
        log.info(
            "site %s joined the fleet; its credential expires at %s",
            self.config.site,
            f"{saved.expires_at:%Y-%m-%dT%H:%M:%SZ}",
        )

    def use(self, saved: SavedCredential) -> None:
        """Take ``saved`` as the site's credential, for the hub and for neighbours."""
        self.identity.use(saved)
        self.client.token = saved.credential

    def _joined(self, reply: HubReply, token: str) -> SavedCredential:
        """The credential in the hub's answer to a join; ValueError saying what is wrong."""
        site = self.config.site
        if reply.status != 200:
            raise ValueError(f"the hub refused the join ({reply.reason()})")
        try:
            answer = JoinResponse.model_validate_json(reply.body)
        except ValidationError as exc:
            raise ValueError(f"the hub's answer is not a join answer ({problems(exc)})") from None
        try:
            claims = verify(answer.credential, answer.signing_keys, now=datetime.now(UTC))
        except CredentialError as exc:
            raise ValueError(
                f"the credential the hub gave does not check out with the keys it gave: "
                f"{exc.reason} (is this machine's clock right?)"
            ) from None
        if answer.site != site or claims.site != site:
            raise ValueError(f"the hub gave a credential for site {claims.site}, not {site}")
        return SavedCredential(
            credential=answer.credential,
            expires_at=answer.expires_at,
            signing_keys=answer.signing_keys,
            join_token_sha256=token_digest(token),
        )

    async def _answered(self, used: str | None, reply: HubReply, sent: float) -> None:
        """Say once, as an error, that the hub refuses this site's credential, and what to do;
        the loops go on backing off and the replicas keep running."""
        credential = self.identity.credential
        if reply.status == 401 and credential is not None:
            # Not a join (its own token), nor a call made with a credential a join replaced.
            if used != credential or self._refused_since is not None:
                return
            self._refused_since = time.monotonic()
            log.error(
                "the hub refused this site's credential (%s): make a new join token with "
                "`edgefleet site join-token %s` and restart the agent with it",
                reply.reason(),
                self.config.site,
            )
        elif reply.ok and self._refused_since is not None and sent > self._refused_since:
            # Only a call made since: a watch opened before the refusal may still succeed.
            self._refused_since = None
            log.info("the hub takes this site's credential again")

    # -- watching --------------------------------------------------------------------------------

    async def watch_stream(self) -> int:
        """One watch stream: the news as the hub sends it, for as long as the hub keeps it open
        (``stream_for`` seconds, or less); returns how many lines came (keep-alives too). A
        delta that does not follow from the share held ends the stream, and the next asks for
        the share whole. A hub that answers the stream as a long-poll (one answer, or 204) is
        heard the same."""
        stream = await self.client.stream(
            self._paths["watch"],
            params={
                "state": self.revision,
                "routes": self.routes.version,
                "timeout": self.config.stream_for,
                "stream": "true",
            },
            timeout=self.config.watch_timeout + 10.0,
            lane="long",
        )
        heard = 0
        try:
            async for line in lines(stream.chunks()):
                heard += 1
                if not line.strip():
                    continue  # the hub is there; nothing changed
                answer = WatchAnswer.model_validate_json(line)
                if not await self._take(answer, len(line)):
                    break
        finally:
            await stream.aclose()
        return heard

    async def _take(self, answer: WatchAnswer, size: int) -> bool:
        """Take one news: the desired state first (the site converges to it), then the share
        of the routing table; False when a delta did not follow from the share held (it is
        asked for whole next)."""
        if answer.desired_state is not None:
            state = answer.desired_state
            await self.site.take_desired(state)
            self.revision = state.revision
            self.report_dirty.set()
        if answer.routes is not None:
            self.routes_taken += 1
            if answer.desired_state is None:
                self.routes_bytes += size
            await self._take_routes(answer.routes)
            return bool(self.routes.version)
        return True

    async def _watch_loop(self) -> None:
        """Watch streams one after another; after a failure, or a stream that ended with
        nothing in it (the hub could not serve it now), the next waits out a backoff."""
        backoff = Backoff()
        while True:
            try:
                heard = await self.watch_stream()
            except (HubUnreachable, HubRefused, ValueError) as exc:
                delay = backoff.next()
                log.warning("hub watch failed (%s); retrying in %.1fs", exc, delay)
                await self.backoff_sleep(delay)
                continue
            if heard:
                backoff.reset()
            else:
                await self.backoff_sleep(backoff.next())

    async def _take_routes(self, update: RoutingUpdate) -> None:
        if update.delta is not None:
            delta = update.delta
            if delta.since != self.routes.version:
                log.warning(
                    "routing delta from %s does not follow the table held (%s): asking whole",
                    delta.since,
                    self.routes.version,
                )
                self.routes = RoutingTable(version="")
                return
            table = apply_delta(self.routes, delta)
        elif update.table is not None:
            table = update.table
        else:
            return
        await self.site.take_routes(table)
        self.routes = table

    async def backoff_sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until a heartbeat finds the hub reachable again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hub_back.wait(), delay)

    # -- reporting -------------------------------------------------------------------------------

    async def report_loop(self) -> None:
        """A status report for every burst of replica changes, and every ``report_resync``
        seconds; a report that does not get through is sent again after a backoff."""
        backoff = Backoff()
        dirty = self.report_dirty
        dirty.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dirty.wait(), self.config.report_resync)
            await asyncio.sleep(self.config.settle)  # a burst of changes becomes one report
            dirty.clear()
            report = await self.site.status_report(self.revision)
            try:
                reply = await self.client.post(
                    self._paths["status"], report.model_dump_json(by_alias=True).encode()
                )
                reply.raise_for_status()
                backoff.reset()
            except (HubUnreachable, HubRefused) as exc:
                dirty.set()  # unsent: try again after the backoff
                delay = backoff.next()
                log.warning("status report failed (%s); retrying in %.1fs", exc, delay)
                await self.backoff_sleep(delay)

    async def beat_once(self) -> bool:
        """One heartbeat; True if the hub took it."""
        beat = self.site.heartbeat(self.revision)
        try:
            reply = await self.client.post(
                self._paths["heartbeat"], beat.model_dump_json(by_alias=True).encode(), lane="beat"
            )
            reply.raise_for_status()
        except (HubUnreachable, HubRefused) as exc:
            if not self.failing:
                log.warning("heartbeat failed (%s); running autonomously", exc)
            self.failing = True
            return False
        if reply.body:
            with contextlib.suppress(ValidationError):
                self.hub_interval = HeartbeatAnswer.model_validate_json(
                    reply.body
                ).heartbeat_interval
        if self.failing:
            log.info("hub reachable again")
            # The hub may have lost what we told it: report everything again.
            self.report_dirty.set()
            # Loops backing off after the outage try again now, not up to 30 s later.
            self._hub_back.set()
            self._hub_back = asyncio.Event()
        self.failing = False
        return True

    async def heartbeat_loop(self) -> None:
        """Beat every ``heartbeat_interval`` seconds, and at once when asked (``beat_now``)."""
        while True:
            await self.beat_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.beat_now.wait(), beat_wait(self.heartbeat_interval))
            self.beat_now.clear()

    async def run(self) -> None:
        """Join if needed, then every loop that talks to the hub, until cancelled. A site
        waiting for the hub keeps serving meanwhile: none of this blocks its data plane."""
        rejoin = self.identity.saved is not None
        if not rejoin:
            await self.join()
        async with asyncio.TaskGroup() as group:
            if rejoin:
                # The credential the site has serves meanwhile: a new join token that the hub
                # cannot take yet never holds up the watch or the heartbeats.
                group.create_task(self.join())
            group.create_task(self._watch_loop())
            group.create_task(self.report_loop())
            group.create_task(self.heartbeat_loop())
            if self.demand is not None:
                group.create_task(self.demand.run())
