"""The agent at a site: watch the hub, converge the driver, report, keep working without the hub.

Every connection is opened by the agent (long-poll watch, status, heartbeat), so a site behind NAT
works and the hub never dials ten thousand sites. The desired state is cached on disk before it is
applied; after a restart the agent converges from the cache before the hub answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import ssl
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import PlainTextResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from edgefleet._version import __version__
from edgefleet.agent.backoff import Backoff
from edgefleet.agent.cache import DesiredStateCache, RoutingTableCache
from edgefleet.agent.demand import DemandCounter, DemandReporter
from edgefleet.agent.drivers.base import Driver
from edgefleet.agent.edge import EdgeZone, NeighbourProber, app_id, nearest_neighbours
from edgefleet.agent.ingress import Ingress, LocalReplicas, Peer
from edgefleet.agent.offload import (
    offload_terms,
    offloaded_replicas,
    outside_regions,
    refuses,
    should_ask,
    to_drain,
)
from edgefleet.agent.scaling import Autoscaler
from edgefleet.dns.responder import Responder
from edgefleet.dns.server import DnsServer
from edgefleet.identity.credentials import CredentialClaims, CredentialError, Keyring, verify
from edgefleet.model import (
    AppAssignment,
    AppReport,
    DesiredState,
    Heartbeat,
    JoinRequest,
    JoinResponse,
    PublicKey,
    ReplicaState,
    RoutingTable,
    StatusReport,
)
from edgefleet.routing.convert import route_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentConfig:
    """How an agent runs. Every field has the documented default."""

    site: str
    """Name of the site this agent serves (a Site object on the hub)."""
    hub: str = "http://127.0.0.1:7700"
    """Hub URL."""
    state_dir: Path = Path("edgefleet-agent")
    """Where the cache, replica records and logs live."""
    address: str = "127.0.0.1"
    """Site address: replicas and the agent's local API bind it."""
    api_port: int = 8080
    """The site's ingress port: apps by ``Host``, and the agent's API (``/_edgefleet/...``)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token for the hub, used when this site has no credential and no join token."""
    join_token: str | None = field(default=None, repr=False)
    """One-time token the hub made for this site (``edgefleet site join-token SITE``): traded
    for the site's credential when this state dir has none, or has not used this token yet."""
    hub_ca: Path | None = None
    """CA bundle (PEM) to check an https hub's certificate with; unset: the system's CAs."""
    heartbeat_interval: float = 2.0
    """Seconds between heartbeats."""
    watch_timeout: float = 30.0
    """Seconds a long-poll waits at the hub."""
    report_resync: float = 60.0
    """Seconds between full status reports when nothing changed."""
    stop_replicas_on_exit: bool = False
    """Stop every replica when the agent exits (default: leave them for the next agent)."""
    dns_port: int = 5353
    """Port of the edge DNS on the site address (UDP and TCP); -1 turns it off."""
    dns_anycast: tuple[str, ...] = ()
    """More addresses the edge DNS answers on, at ``dns_port``: the anycast address that every
    site announces, so that clients reach the nearest working edge DNS at one address."""
    dns_ttl: int = 5
    """TTL of DNS answers, seconds."""
    dns_answers: int = 2
    """Most addresses in one answer, nearest first."""
    probe_interval: float = 0.5
    """Seconds between probes of each neighbour."""
    neighbours: int = 8
    """How many of the nearest sites to probe."""
    demand_window: float = 10.0
    """Seconds per demand report."""
    scale_interval: float = 0.5
    """Seconds between local scaling decisions."""
    hold_timeout: float = 30.0
    """Seconds the activator holds a request while a replica starts."""
    hold_limit: int = 1000
    """Requests held per app at most; beyond, 503 with Retry-After (or a neighbour)."""
    drain: float = 15.0
    """Seconds an app that scales keeps being served here after the hub moved it away, while
    clients with cached DNS answers still come (three DNS TTLs by default)."""
    offload_ttl: float = 60.0
    """Seconds a neighbour keeps replicas started at our request unless asked again."""
    max_offload_replicas: int = 8
    """Most replicas this site runs at neighbours' requests, all apps together."""
    kubeconfig: Path | None = None
    """Kubernetes driver: the kubeconfig file of the site's cluster when the agent runs outside
    it; unset: the service account of the agent's pod (in-cluster)."""
    kube_context: str | None = None
    """Kubernetes driver: the kubeconfig context to use; unset: the file's current context."""
    kube_namespace_prefix: str = "ef-"
    """Kubernetes driver: each tenant's apps live in the namespace ``<prefix><tenant>``."""


@dataclass
class _Progress:
    revision: int = -1
    """Desired-state revision applied."""
    report_dirty: asyncio.Event = field(default_factory=asyncio.Event)


def ready_counts(observed: Mapping[str, Sequence[ReplicaState]]) -> dict[str, int]:
    """Ready replicas per ``tenant/app``."""
    return {key: sum(r.ready for r in replicas) for key, replicas in observed.items()}


class OffloadRequest(BaseModel):
    """A neighbour asks this site to run replicas of an app it cannot serve alone."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    requester: str = Field(description="Site asking.")
    assignment: AppAssignment = Field(description="The app, with its local scaling bounds.")


JOIN_PATH = "/api/v1/agent/join"
"""Where an agent trades its join token for the site's credential."""
CREDENTIAL_FILE = "credential.json"
"""The site's credential, in the state dir (mode 0600)."""


class SavedCredential(BaseModel):
    """What ``credential.json`` holds: the site's credential and what came with it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    credential: str = Field(repr=False, description="The site's credential (a JWT): a secret.")
    expires_at: AwareDatetime = Field(description="When the credential stops working.")
    signing_keys: list[PublicKey] = Field(
        default_factory=list,
        description="The hub's public keys at join: peers are checked with them until a "
        "routing table brings its own.",
    )
    join_token_sha256: str | None = Field(
        default=None,
        description="SHA-256 (hex) of the join token traded for the credential, to know it "
        "again; the token itself is never kept.",
    )


class JoinRefused(Exception):
    """The hub refused this site's join and the site has no earlier credential: the agent
    cannot talk to the hub, and stops."""


def token_digest(token: str) -> str:
    """SHA-256 of a join token, hex: what the state dir keeps to know the token again."""
    return hashlib.sha256(token.encode()).hexdigest()


def join_needed(saved: SavedCredential | None, join_token: str | None) -> bool:
    """Whether to trade ``join_token`` for a credential: there is one, and the state dir holds
    no credential or one traded for another join token."""
    if not join_token:
        return False
    return saved is None or saved.join_token_sha256 != token_digest(join_token)


def peer_keys(table: Sequence[PublicKey], joined: Sequence[PublicKey]) -> list[PublicKey]:
    """The keys neighbours' credentials are checked with: the newest routing table's, else the
    ones the hub gave at join (before the first table, or from a hub that publishes none)."""
    return list(table or joined)


class CredentialFile:
    """``credential.json``: replaced atomically, readable by its owner only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> SavedCredential | None:
        """The saved credential, or None if there is none or it is unreadable."""
        try:
            return SavedCredential.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError as exc:
            log.warning("ignoring unreadable site credential %s: %s", self.path, _problems(exc))
            return None
        except OSError as exc:
            log.warning("ignoring unreadable site credential %s: %s", self.path, exc)
            return None

    def save(self, saved: SavedCredential) -> None:
        """Write ``saved`` durably with mode 0600: temp file, fsync, rename, fsync the dir."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(fd, "wb") as handle:
            os.fchmod(fd, 0o600)  # a temp file left by a crash keeps its mode otherwise
            handle.write(saved.model_dump_json(by_alias=True, indent=1).encode())
            handle.flush()
            os.fsync(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def local_api(
    driver: Driver,
    site: str,
    replicas_view: LocalReplicas,
    offload: Callable[[OffloadRequest], str | None] | None = None,
    *,
    verify_credential: Callable[[str], CredentialClaims],
) -> FastAPI:
    """The agent's own HTTP API on the site address: health, replicas, logs, offload.

    Health is open (neighbours probe it). Replicas and logs answer a credential of any site or
    of the hub (``Authorization: Bearer``); an offload, only the credential of the site asking.
    ``verify_credential`` checks a credential against the fleet's keys (``CredentialError``).
    """
    api = FastAPI(title=f"edgefleet agent {site}", version=__version__)
    challenge = {"WWW-Authenticate": "Bearer"}

    def caller(authorization: str | None) -> CredentialClaims:
        token = bearer(authorization)
        if token is None:
            raise HTTPException(
                401,
                f"site {site} answers only a site or hub credential "
                "(Authorization: Bearer <credential>)",
                headers=challenge,
            )
        try:
            return verify_credential(token)
        except CredentialError as exc:
            raise HTTPException(
                401, f"site {site} refused the credential: {exc.reason}", headers=challenge
            ) from None

    # async, here and below: credentials are checked on the agent's loop, which owns the keyring.
    async def fleet_member(authorization: Annotated[str | None, Header()] = None) -> None:
        claims = caller(authorization)
        if claims.site is None and not claims.is_hub:
            raise HTTPException(403, f"site {site} answers sites and the hub only")

    @api.post("/_edgefleet/offload", status_code=202)
    async def accept_offload(
        request: OffloadRequest, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, str]:
        # async: runs on the agent's loop, which owns the offloads.
        claims = caller(authorization)
        if claims.site is None:
            raise HTTPException(403, f"site {site} takes offloads from sites, not the hub")
        if claims.site != request.requester:
            raise HTTPException(
                403,
                f"the credential of site {claims.site} cannot ask for an offload on behalf "
                f"of site {request.requester}",
            )
        refusal = "this site takes no offload" if offload is None else offload(request)
        if refusal is not None:
            raise HTTPException(409, refusal)
        return {"status": "accepted", "site": site}

    @api.get("/_edgefleet/healthz")
    def healthz() -> dict[str, Any]:
        # Neighbours' probes read the ready counts: their edge DNS learns of our replicas
        # without the hub.
        # Served from the same cached view as the ingress: every neighbour probes twice a second.
        return {"status": "ok", "site": site, "ready": ready_counts(replicas_view.get())}

    @api.get("/_edgefleet/replicas", dependencies=[Depends(fleet_member)])
    def replicas() -> dict[str, list[ReplicaState]]:
        return driver.observe()

    @api.get(
        "/_edgefleet/logs/{tenant}/{app}",
        response_class=PlainTextResponse,
        dependencies=[Depends(fleet_member)],
    )
    def logs(
        tenant: str,
        app: str,
        tail: Annotated[int, Query(ge=1, le=10_000)] = 100,
        replica: str | None = None,
    ) -> str:
        return driver.logs(tenant, app, replica=replica, tail=tail)

    return api


class Agent:
    """One site's agent."""

    def __init__(self, config: AgentConfig, driver: Driver) -> None:
        self.config = config
        self.driver = driver
        self.cache = DesiredStateCache(config.state_dir / "desired-state.json")
        self.routing_cache = RoutingTableCache(config.state_dir / "routing-table.json")
        self.routing_version = ""
        self.zone = EdgeZone(config.site, address=config.address, max_answers=config.dns_answers)
        self.prober = NeighbourProber(
            config.site,
            interval=config.probe_interval,
            timeout=max(0.2, config.probe_interval),
            neighbours=config.neighbours,
        )
        self.dns: DnsServer | None = None
        self.anycast_dns: list[DnsServer] = []
        self._hub_back = asyncio.Event()
        """Set (then replaced) when the hub answers again after heartbeats failed."""
        self._beat_now = asyncio.Event()
        self.progress = _Progress()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.credentials = CredentialFile(config.state_dir / CREDENTIAL_FILE)
        self.saved: SavedCredential | None = None
        """This site's credential, once loaded from the state dir or traded for a join token."""
        self.keyring = Keyring()
        """The keys and revocations neighbours' credentials are checked against."""
        self._table_keys: list[PublicKey] = []
        self._revoked: list[str] = []
        self._credential_refused: float | None = None
        """When the hub last began refusing this site's credential (monotonic), if it does."""
        self._sent: weakref.WeakKeyDictionary[httpx.Request, float] = weakref.WeakKeyDictionary()
        self._warned_no_credential = False
        # Until the site has a credential (or if it never gets one): the configured token.
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self._http = httpx.AsyncClient(
            base_url=config.hub.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(10.0, read=config.watch_timeout + 10.0),
            verify=_hub_tls(config.hub_ca),
            event_hooks={"request": [self._hub_asked], "response": [self._hub_answered]},
        )
        self._peer_http = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(3.0))
        self._api_server: uvicorn.Server | None = None
        self.replicas = LocalReplicas(driver.observe)
        """The one cached view of the driver's replicas: ingress, health answers, edge DNS."""
        self.scaler = Autoscaler()
        """Local scaling of apps with bounds (traffic placement), with or without the hub."""
        self.desired: DesiredState | None = None
        """The hub's last word (or the cache's)."""
        self.offloads: dict[str, tuple[AppAssignment, float]] = {}
        """Apps run at neighbours' request: assignment and when it lapses (monotonic)."""
        self.draining: dict[str, tuple[AppAssignment, float]] = {}
        """Apps the hub moved away, still served until then (monotonic)."""
        self.placed: dict[str, AppAssignment] = {}
        """Every app this site runs or may wake, as last handed to the driver."""
        self._converged: list[AppAssignment] | None = None
        self._converge_lock = asyncio.Lock()
        self._asked: dict[str, float] = {}
        """When we last asked a neighbour to take an app (monotonic), per app."""
        self.demand = DemandCounter()
        """Requests and DNS queries per app and origin site, in the current window."""
        self.dns_tally: Counter[bytes] = Counter()
        """Edge DNS queries per question name, moved into ``demand`` once per window."""
        self.demand_reporter = DemandReporter(
            config.site,
            self.demand,
            self._http,
            config.state_dir,
            window=config.demand_window,
            dns_tally=self.dns_tally,
        )
        self.ingress = Ingress(
            local_api(
                driver,
                config.site,
                self.replicas,
                self.accept_offload,
                verify_credential=self.verify_credential,
            ),
            site=config.site,
            address=config.address,
            replicas=self.replicas,
            assignments=lambda: self.placed,
            wake=self.wake,
            peers=self.spill_peers,
            locate=self.zone.locate,
            admit=self.zone.admit,
            on_load=self._on_load,
            on_request=self.demand.request,
            on_saturated=self._on_saturated,
            hold_limit=config.hold_limit,
            hold_timeout=config.hold_timeout,
            credential=lambda: self.credential,
            verify_credential=self.verify_credential,
        )

    @property
    def endpoint(self) -> str:
        """URL of the local API, as reported to the hub."""
        return f"http://{self.config.address}:{self.config.api_port}/_edgefleet"

    # -- identity --------------------------------------------------------------------------------

    @property
    def credential(self) -> str | None:
        """This site's credential, shown to the hub and to neighbours; None before joining."""
        return self.saved.credential if self.saved is not None else None

    def verify_credential(self, token: str) -> CredentialClaims:
        """The claims of a neighbour's or the hub's credential, checked against the fleet's
        keys and revocations; ``CredentialError`` saying why it does not hold."""
        return self.keyring.verify(token, now=datetime.now(UTC))

    def _use_credential(self, saved: SavedCredential) -> None:
        self.saved = saved
        self._http.headers["Authorization"] = f"Bearer {saved.credential}"
        self._trust_changed()
        if saved.expires_at <= datetime.now(UTC):
            log.error(
                "this site's credential expired at %s: make a new join token with "
                "`edgefleet site join-token %s` and restart the agent with it",
                f"{saved.expires_at:%Y-%m-%dT%H:%M:%SZ}",
                self.config.site,
            )

    def _take_trust(self, table: RoutingTable) -> None:
        """The routing table's keys and revocations are the fleet's newest word on them."""
        self._table_keys = list(table.signing_keys)
        self._revoked = list(table.revoked_credentials)
        self._trust_changed()

    def _trust_changed(self) -> None:
        joined = self.saved.signing_keys if self.saved is not None else []
        self.keyring.update(peer_keys(self._table_keys, joined), self._revoked)

    def _no_credential(self, refused: str) -> bool:
        """True (and said once) when this site has no credential, so neighbours refuse it."""
        if self.credential is not None:
            return False
        if not self._warned_no_credential:
            self._warned_no_credential = True
            log.warning(
                "site %s has no credential, so neighbours would refuse %s: start the agent "
                "with a join token (EDGEFLEET_JOIN_TOKEN; `edgefleet site join-token %s`)",
                self.config.site,
                refused,
                self.config.site,
            )
        return True

    async def join(self) -> None:
        """Trade the join token for this site's credential when ``join_needed``, retrying while
        the hub cannot be reached; then every hub call carries the credential. A site that has a
        credential already goes on using it meanwhile.

        Raises ``JoinRefused`` when the hub says no and the site has no earlier credential; with
        one, says so and goes on with it.
        """
        token = self.config.join_token
        if not join_needed(self.saved, token):
            if self.saved is None:
                log.info(
                    "site %s has no credential and no join token: calling the hub with %s",
                    self.config.site,
                    "EDGEFLEET_TOKEN" if self.config.token else "no token",
                )
            return
        assert token is not None
        body = JoinRequest(site=self.config.site).model_dump_json(by_alias=True)
        backoff = Backoff()
        while True:
            try:
                reply = await self._http.post(
                    JOIN_PATH,
                    content=body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
            except httpx.HTTPError as exc:
                reason = _reason(exc)
            else:
                if reply.status_code != 429 and reply.status_code < 500:
                    break
                reason = _reason_text(reply)
            delay = backoff.next()
            log.warning("joining the fleet failed (%s); retrying in %.1fs", reason, delay)
            await self._backoff_sleep(delay)
        try:
            saved = self._joined(reply, token)
        except ValueError as exc:
            if self.saved is None:
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
                f"{self.saved.expires_at:%Y-%m-%dT%H:%M:%SZ}",
            )
            return
        await asyncio.to_thread(self.credentials.save, saved)
        self._use_credential(saved)
        log.info(
            "site %s joined the fleet; its credential expires at %s",
            self.config.site,
            f"{saved.expires_at:%Y-%m-%dT%H:%M:%SZ}",
        )

    def _joined(self, reply: httpx.Response, token: str) -> SavedCredential:
        """The credential in the hub's answer to a join; ValueError saying what is wrong."""
        site = self.config.site
        if reply.status_code != 200:
            raise ValueError(f"the hub refused the join ({_reason_text(reply)})")
        try:
            answer = JoinResponse.model_validate_json(reply.content)
        except ValidationError as exc:
            raise ValueError(f"the hub's answer is not a join answer ({_problems(exc)})") from None
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

    async def _hub_asked(self, request: httpx.Request) -> None:
        self._sent[request] = time.monotonic()

    async def _hub_answered(self, response: httpx.Response) -> None:
        """Say once, as an error, that the hub refuses this site's credential, and what to do;
        the loops go on backing off and the replicas keep running."""
        refused = self._credential_refused
        if response.status_code == 401 and self.credential is not None:
            # Not a join (its own token), nor a call made with the credential a join replaced.
            sent_with = response.request.headers.get("authorization")
            if sent_with != f"Bearer {self.credential}" or refused is not None:
                return
            self._credential_refused = time.monotonic()
            await response.aread()
            log.error(
                "the hub refused this site's credential (%s): make a new join token with "
                "`edgefleet site join-token %s` and restart the agent with it",
                _reason_text(response),
                self.config.site,
            )
        elif (
            response.is_success
            and refused is not None
            # Only a call made since: a long-poll sent before the refusal may still succeed.
            and self._sent.get(response.request, 0.0) > refused
        ):
            self._credential_refused = None
            log.info("the hub takes this site's credential again")

    # -- driver side -----------------------------------------------------------------------------

    def _replicas_changed(self) -> None:
        # Called from the driver's thread.
        self.replicas.changed()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.ingress.replicas_changed)
            self._loop.call_soon_threadsafe(self.progress.report_dirty.set)
            self._loop.call_soon_threadsafe(self.refresh_zone)

    # -- local scaling, activator, spill-over ------------------------------------------------------

    def assignments(self, now: float) -> list[AppAssignment]:
        """What this site must run before local scaling: the hub's share, then offloads, then
        apps being drained."""
        hub = list(self.desired.apps) if self.desired is not None else []
        keys = {a.key for a in hub}
        for key, (assignment, until) in list(self.offloads.items()):
            if until <= now:
                log.info("offload of %s lapsed: nobody asked again", key)
                del self.offloads[key]
            elif key not in keys:
                hub.append(assignment)
                keys.add(key)
        for key, (assignment, until) in list(self.draining.items()):
            if until <= now or key in keys:
                del self.draining[key]
            else:
                hub.append(assignment)
        return hub

    def _start_draining(self, before: Sequence[AppAssignment], now: float) -> None:
        """Keep serving, for cached DNS answers, what the hub just took away (``to_drain``)."""
        if self.config.drain <= 0 or self.desired is None:
            return
        for drained in to_drain(
            before,
            kept={a.key for a in self.desired.apps},
            offloads=self.offloads.keys(),
            draining=self.draining.keys(),
            existing=self.zone.hub_table.apps.keys(),
        ):
            log.info(
                "draining %s for %g s: the hub placed it elsewhere", drained.key, self.config.drain
            )
            self.draining[drained.key] = (drained, now + self.config.drain)

    def effective(self, now: float) -> list[AppAssignment]:
        """The assignments with the local scaler's counts: what the driver runs."""
        wanted = self.assignments(now)
        ready = ready_counts(self.replicas.get())
        out = self.scaler.effective(wanted, now, ready)
        self.placed = {a.key: a for a in out}
        return out

    async def converge(self) -> None:
        """Hand the driver the current effective assignments, if they changed."""
        async with self._converge_lock:
            now = time.monotonic()
            effective = self.effective(now)
            if effective == self._converged:
                return
            before = {a.key: a.replicas for a in self._converged or ()}
            for a in effective:
                if a.scaling is not None and before.get(a.key) != a.replicas:
                    log.info("scaling %s", self.scaler.explain(a.key))
            await asyncio.to_thread(self.driver.converge, effective)
            self._converged = effective

    def wake(self, key: str) -> None:
        """The activator holds a request for ``key``: start a replica now if it sleeps."""
        if self.scaler.wake(key, time.monotonic()) and self._loop is not None:
            log.info("waking %s for a held request", key)
            self._loop.create_task(self.converge())

    def _on_load(self, key: str, in_flight: int) -> None:
        now = time.monotonic()
        self.scaler.record(key, now, in_flight)
        self.scaler.request_seen(key, now)

    def spill_peers(self, key: str) -> list[Peer]:
        """Neighbours serving ``key`` with ready replicas, nearest first.

        For an app not placed here (a client with a stale DNS answer), a neighbour where it
        sleeps will do too: its activator wakes it.
        """
        if self._no_credential("requests passed on to them"):
            return []
        tenant, app = app_id(key)
        found = self.zone.peers(tenant, app)
        if not found and key not in self.placed:
            found = self.zone.peers(tenant, app, wakeable=True)
        return [Peer(site=p.name, address=p.ip, port=p.ingress_port) for p in found]

    def _on_saturated(self, key: str) -> None:
        """Local replicas are full and no neighbour serves ``key``: ask one to, if we are at
        our own ceiling (below it the local scaler adds replicas first)."""
        assignment = self.placed.get(key)
        now = time.monotonic()
        if self._loop is None or not should_ask(
            assignment,
            self.scaler.desired(key),
            last_asked=self._asked.get(key),
            now=now,
            interval=self.config.offload_ttl / 4,
        ):
            return
        assert assignment is not None
        self._asked[key] = now
        self._loop.create_task(self._ask_neighbours(assignment))

    async def _ask_neighbours(self, assignment: AppAssignment) -> None:
        """Ask the nearest neighbours, in turn, to run ``assignment``, until one accepts."""
        credential = self.credential
        if credential is None:
            self._no_credential("offload requests")
            return
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {credential}"}
        table = self.zone.table
        health = self.prober.health()
        request = OffloadRequest(requester=self.config.site, assignment=assignment)
        body = request.model_dump_json(by_alias=True)
        for name in nearest_neighbours(table, self.config.site, self.config.neighbours):
            point = table.sites.get(name)
            if point is None or not point.reachable or health.get(name) is False:
                continue
            if assignment.selector is not None and refuses(assignment.selector, point):
                continue
            if outside_regions(assignment.regions, point) is not None:
                continue  # residency: the app never runs outside its regions
            url = f"http://{point.ip}:{point.ingress_port}/_edgefleet/offload"
            try:
                reply = await self._peer_http.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("offload of %s to %s failed: %s", assignment.key, name, exc)
                continue
            if reply.status_code == 202:
                log.info("site %s runs %s for us now", name, assignment.key)
                return
            log.info("site %s declined %s: %s", name, assignment.key, _reason_text(reply))
        log.warning("no neighbour took %s: local replicas stay saturated", assignment.key)

    def accept_offload(self, request: OffloadRequest) -> str | None:
        """A neighbour asks us to run an app; None when accepted, else why not."""
        key = request.assignment.key
        terms = offload_terms(
            request.assignment,
            me=self.zone.table.sites.get(self.config.site),
            placed_here=self.desired is not None and any(a.key == key for a in self.desired.apps),
            taken=offloaded_replicas({k: a for k, (a, _) in self.offloads.items()}, besides=key),
            cap=self.config.max_offload_replicas,
        )
        if isinstance(terms, str):
            return terms
        if key not in self.offloads:
            log.info(
                "running %s for site %s (up to %d replicas)",
                key,
                request.requester,
                terms.scaling.max_replicas if terms.scaling else terms.replicas,
            )
        now = time.monotonic()
        self.offloads[key] = (terms, now + self.config.offload_ttl)
        # A neighbour's request for capacity is demand: an app that slept here (drained, say)
        # must not go back to sleep before the spilled requests arrive.
        self.scaler.request_seen(key, now)
        if self._loop is not None:
            self._loop.create_task(self.converge())
        return None

    async def _scale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.scale_interval)
            try:
                await self.converge()
            except Exception:
                log.exception("local scaling failed")

    def _probes_changed(self) -> None:
        self.refresh_zone()
        # Tell the hub at once: the central DNS leaves out sites its probers call down.
        self._beat_now.set()

    def refresh_zone(self, table: RoutingTable | None = None) -> None:
        """Give the edge DNS the newest routing table, our own replicas and the probe verdicts."""
        hub_table = None
        if table is not None:
            hub_table = route_table(table)
            self.prober.set_table(hub_table)
        local = {app_id(key): n for key, n in ready_counts(self.replicas.get()).items()}
        self.zone.update(
            hub_table=hub_table,
            ready={**self.prober.ready_counts(), self.config.site: local},
            health=self.prober.health(),
            rtt_ms=self.prober.rtt_ms(),
        )

    async def _apply(self, state: DesiredState) -> None:
        before = list(self.placed.values())
        self.desired = state
        self._start_draining(before, time.monotonic())
        await self.converge()
        self.progress.revision = state.revision
        self.progress.report_dirty.set()

    def resume(self) -> DesiredState | None:
        """Adopt what runs and converge from the cached state, before any hub call."""
        self.driver.start(self._replicas_changed)
        saved = self.credentials.load()
        if saved is not None:
            self._use_credential(saved)
        routes = self.routing_cache.load()
        if routes is not None:
            self.routing_version = routes.version
            self._take_trust(routes)
            self.refresh_zone(routes)
        cached = self.cache.load()
        if cached is not None:
            log.info(
                "resuming from cached revision %d (%d apps)", cached.revision, len(cached.apps)
            )
            self.desired = cached
            effective = self.effective(time.monotonic())
            self.driver.converge(effective)
            self._converged = effective
            self.progress.revision = cached.revision
        return cached

    # -- hub side --------------------------------------------------------------------------------

    async def watch_once(self) -> bool:
        """One long-poll; True when a new desired state was applied."""
        reply = await self._http.get(
            f"/api/v1/agent/sites/{self.config.site}/desired-state",
            params={"since": self.progress.revision, "timeout": self.config.watch_timeout},
        )
        if reply.status_code == 204:
            return False
        reply.raise_for_status()
        state = DesiredState.model_validate(reply.json())
        # Cache first: a crash between the two leaves a state we can resume from.
        await asyncio.to_thread(self.cache.save, state)
        await self._apply(state)
        log.info(
            "applied revision %d: %s",
            state.revision,
            ", ".join(f"{a.key}={a.replicas}" for a in state.apps) or "nothing",
        )
        return True

    async def watch_routing_once(self) -> bool:
        """One long-poll for the routing table; True when a new one was taken."""
        reply = await self._http.get(
            f"/api/v1/agent/sites/{self.config.site}/routing-table",
            params={"since": self.routing_version, "timeout": self.config.watch_timeout},
        )
        if reply.status_code == 204:
            return False
        reply.raise_for_status()
        table = RoutingTable.model_validate(reply.json())
        await asyncio.to_thread(self.routing_cache.save, table)
        self.routing_version = table.version
        self._take_trust(table)
        self.refresh_zone(table)
        return True

    async def _backoff_sleep(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until the heartbeat finds the hub reachable again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hub_back.wait(), delay)

    async def _routing_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.watch_routing_once()
                backoff.reset()
            except (httpx.HTTPError, ValueError) as exc:
                delay = backoff.next()
                log.warning("routing watch failed (%s); retrying in %.1fs", _reason(exc), delay)
                await self._backoff_sleep(delay)

    async def _watch_loop(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self.watch_once()
                backoff.reset()
            except (httpx.HTTPError, ValueError) as exc:
                delay = backoff.next()
                log.warning("hub watch failed (%s); retrying in %.1fs", _reason(exc), delay)
                await self._backoff_sleep(delay)

    def status_report(self) -> StatusReport:
        """What runs here now."""
        observed = self.driver.observe()
        apps = []
        for key, replicas in sorted(observed.items()):
            tenant, _, app = key.partition("/")
            apps.append(AppReport(tenant=tenant, app=app, replicas=replicas))
        return StatusReport(
            site=self.config.site,
            agent_version=__version__,
            agent_endpoint=self.endpoint,
            observed_revision=self.progress.revision,
            apps=apps,
        )

    async def _report_loop(self) -> None:
        backoff = Backoff()
        dirty = self.progress.report_dirty
        dirty.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dirty.wait(), self.config.report_resync)
            await asyncio.sleep(0.1)  # let a burst of replica changes settle into one report
            dirty.clear()
            report = await asyncio.to_thread(self.status_report)
            try:
                reply = await self._http.post(
                    f"/api/v1/agent/sites/{self.config.site}/status",
                    content=report.model_dump_json(by_alias=True),
                    headers={"Content-Type": "application/json"},
                )
                reply.raise_for_status()
                backoff.reset()
            except httpx.HTTPError as exc:
                dirty.set()  # unsent: try again after the backoff
                delay = backoff.next()
                log.warning("status report failed (%s); retrying in %.1fs", _reason(exc), delay)
                await self._backoff_sleep(delay)

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            beat = Heartbeat(
                site=self.config.site,
                observed_revision=self.progress.revision,
                probes=self.prober.health(),
                problem=self.driver.problem(),
            )
            try:
                reply = await self._http.post(
                    f"/api/v1/agent/sites/{self.config.site}/heartbeat",
                    content=beat.model_dump_json(by_alias=True),
                    headers={"Content-Type": "application/json"},
                )
                reply.raise_for_status()
                if failing:
                    log.info("hub reachable again")
                    # The hub may have lost what we told it: report everything again.
                    self.progress.report_dirty.set()
                    # Loops backing off after the outage try again now, not up to 30 s later.
                    self._hub_back.set()
                    self._hub_back = asyncio.Event()
                failing = False
            except httpx.HTTPError as exc:
                if not failing:
                    log.warning("heartbeat failed (%s); running autonomously", _reason(exc))
                failing = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.config.heartbeat_interval)
            self._beat_now.clear()

    # -- process ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled or signalled."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.resume)
        self._api_server = _EmbeddedServer(
            uvicorn.Config(
                self.ingress,
                host=self.config.address,
                port=self.config.api_port,
                log_level="warning",
                access_log=False,
            )
        )
        if self.config.dns_port >= 0:
            responder = Responder(
                self.zone,
                ttl=self.config.dns_ttl,
                max_answers=self.config.dns_answers,
                tally=self.dns_tally,
            )
            self.dns = DnsServer(responder, self.config.address, self.config.dns_port)
            await self.dns.start()
            for address in self.config.dns_anycast:
                server = DnsServer(responder, address, self.config.dns_port)
                await server.start()
                self.anycast_dns.append(server)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, stop.set)
        serving = asyncio.create_task(self._api_server.serve())
        tasks: list[asyncio.Task[Any]] = [
            serving,
            asyncio.create_task(self._hub_loops()),
            asyncio.create_task(self.prober.run(self._probes_changed)),
            asyncio.create_task(self._scale_loop()),
        ]
        log.info("agent for site %s started (hub %s)", self.config.site, self.config.hub)
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if task is not stopper and error is not None:
                    raise error
        finally:
            await self.shutdown(serving, [*tasks[1:], stopper])

    async def _hub_loops(self) -> None:
        """Join if needed, then the loops that talk to the hub. Replicas, the ingress and the
        edge DNS run meanwhile: a site waiting for the hub keeps serving."""
        rejoin = self.saved is not None
        if not rejoin:
            await self.join()
        async with asyncio.TaskGroup() as group:
            if rejoin:
                # The credential the site has serves meanwhile: a new join token that the hub
                # cannot take yet never holds up the watch or the heartbeats.
                group.create_task(self.join())
            group.create_task(self._watch_loop())
            group.create_task(self._routing_loop())
            group.create_task(self._report_loop())
            group.create_task(self._heartbeat_loop())
            group.create_task(self.demand_reporter.run())

    async def shutdown(self, serving: asyncio.Task[Any], tasks: list[asyncio.Task[Any]]) -> None:
        """Stop loops and the local API; stop replicas only when configured to."""
        if self._api_server is not None:
            # Let uvicorn close its sockets itself; cancelling it mid-serve logs a traceback.
            self._api_server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(serving), 5.0)
        tasks.append(serving)
        if self.dns is not None:
            await self.dns.stop()
        for server in self.anycast_dns:
            await server.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._http.aclose()
        await self._peer_http.aclose()
        await self.ingress.aclose()
        if self.config.stop_replicas_on_exit:
            await asyncio.to_thread(self.driver.stop_all)
        else:
            await asyncio.to_thread(self.driver.close)
        log.info("agent for site %s stopped", self.config.site)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the agent's loop: the agent, not uvicorn, owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _reason_text(reply: httpx.Response) -> str:
    try:
        detail = reply.json().get("detail")
    except ValueError:
        detail = reply.text[:200]
    return f"HTTP {reply.status_code}: {detail}"


def _problems(exc: ValidationError) -> str:
    """Field paths and messages of a validation error; pydantic's own text quotes the input,
    which may be a secret."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


def _hub_tls(ca: Path | None) -> ssl.SSLContext | bool:
    """How to check the hub's certificate: with ``ca`` when given, else the system's CAs."""
    if ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"--hub-ca {ca}: not a readable CA bundle (PEM): {exc}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            detail = exc.response.json().get("detail")
        except ValueError:
            detail = exc.response.text[:200]
        return f"HTTP {exc.response.status_code}: {detail}"
    return str(exc) or type(exc).__name__


def make_driver(name: str, config: AgentConfig) -> Driver:
    """The driver called ``name`` for this agent."""
    if name == "process":
        from edgefleet.agent.drivers.process import ProcessDriver

        return ProcessDriver(config.site, config.state_dir / "process", config.address)
    if name == "kubernetes":
        from edgefleet.agent.drivers.kube_objects import check_namespace_prefix
        from edgefleet.agent.drivers.kubernetes import KubernetesDriver, connect

        prefix = check_namespace_prefix(config.kube_namespace_prefix)
        api = connect(kubeconfig=config.kubeconfig, context=config.kube_context)
        return KubernetesDriver(config.site, api, namespace_prefix=prefix)
    raise ValueError(f"driver {name!r} is not available here: use 'process' or 'kubernetes'")
