"""The site ingress: HTTP for ``<app>.<tenant>.edge.internal`` goes to a ready local replica.

The agent's HTTP server on the site address and ingress port serves two things: requests whose
``Host`` names an app go to one of the app's ready replicas at this site; everything else (the
agent's own ``/_edgefleet/...`` API) goes to the local API.

The decisions are pure functions (``parse_app_host``, ``pick_replica``, the header rewriting);
``Ingress`` is the thin ASGI shell that applies them, forwarding over kept-alive HTTP/1.1
connections (``UpstreamPool``, ``edgefleet.agent.upstream``). Bodies are
streamed both ways, never held whole.

Answers of the ingress itself (plain text):

- 404: no replica of the app is placed at this site;
- 503 with ``Retry-After: 1``: the app is placed here but no replica is ready;
- 502: the chosen replica refused the connection, and so did another one tried once more;
- 504: the replica accepted the request but did not answer in time;
- 403: a request a neighbour passed on (``x-edgefleet-hops``) without a valid site credential;
- 403: a client the app's access rules do not let in (``admit``; the body says who and why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefleet.agent.upstream import (
    CONNECT_TIMEOUT,
    HEAD_TIMEOUT,
    READ_TIMEOUT,
    ConnectFailed,
    HeadTimeout,
    HttpxUpstream,
    ResponseBroken,
    Upstream,
    UpstreamError,
    UpstreamPool,
)
from edgefleet.asgi import header
from edgefleet.identity.credentials import CredentialClaims, CredentialError
from edgefleet.model import AppAssignment, ReplicaState
from edgefleet.routing.origins import network_origin

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

ZONE = "edge.internal"
"""DNS zone apps are named in: ``<app>.<tenant>.edge.internal``."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection, not the message (RFC 9110 7.6.1); never forwarded."""

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PORT = re.compile(r"^[0-9]{0,5}$")
_STOPPED = "stopped"


# ---------------------------------------------------------------------------------------------
# Pure decisions


def parse_app_host(host: str, zone: str = ZONE) -> tuple[str, str] | None:
    """``(tenant, app)`` named by a ``Host`` header value, or None when it names no app.

    Accepts ``<app>.<tenant>.<zone>`` with an optional ``:port`` and an optional trailing dot,
    in any case (host names are case-insensitive, RFC 9110 4.2.3). Each name must be a valid DNS
    label, as app and tenant names are.
    """
    name = host.strip().lower()
    if name.startswith("["):
        return None  # an IPv6 literal, never an app
    name, _, port = name.partition(":")
    if not _PORT.match(port):
        return None
    name = name.removesuffix(".")
    suffix = "." + zone.lower().strip(".")
    if not name.endswith(suffix):
        return None
    labels = name.removesuffix(suffix).split(".")
    if len(labels) != 2 or not all(_LABEL.match(label) for label in labels):
        return None
    app, tenant = labels
    return tenant, app


def pick_replica(
    replicas: Sequence[ReplicaState], outstanding: Mapping[str, int]
) -> ReplicaState | None:
    """The ready replica with the fewest outstanding requests (ties: lowest index), or None.

    ``outstanding`` counts requests in flight per replica id; a missing id counts 0. Replicas
    without a port cannot be called and are skipped.
    """
    ready = [r for r in replicas if r.ready and r.port is not None]
    if not ready:
        return None
    return min(ready, key=lambda r: (outstanding.get(r.id, 0), r.index))


LOCAL = "local"
"""Serve the request with a local replica."""
HOLD = "hold"
"""Hold the request until a local replica is ready (the activator)."""
SPILL = "spill"
"""Send the request to the nearest neighbour serving the app."""
REFUSE = "refuse"
"""Answer 503 with Retry-After: too many requests wait already."""

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods a failed request may be repeated with (RFC 9110 9.2.2)."""

HOPS_HEADER = b"x-edgefleet-hops"
"""How many sites passed the request on before this one."""
ORIGIN_HEADER = b"x-edgefleet-origin"
"""The site the client is nearest to, as the first site located it (demand counting)."""
CREDENTIAL_HEADER = b"x-edgefleet-site-credential"
"""The credential of the site that passed the request on; never forwarded further."""


def ready_replicas(replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
    """The replicas a request can go to: ready, with a port."""
    return [r for r in replicas if r.ready and r.port is not None]


def saturation_limit(assignment: AppAssignment | None) -> int | None:
    """Requests in flight at which a replica counts as full, or None for no limit.

    Apps that scale (traffic placement) size replicas for ``targetConcurrency``; a replica at
    ``panicThreshold`` times that is what the local scaler panics at, so beyond it requests are
    better served by a neighbour. Fixed-size apps have no such figure: they never spill for load.
    """
    if assignment is None or assignment.scaling is None:
        return None
    scaling = assignment.scaling
    return max(1, math.ceil(scaling.target_concurrency * scaling.panic_threshold))


def route(
    *,
    placed: bool,
    ready: Sequence[ReplicaState],
    outstanding: Mapping[str, int],
    saturation: int | None,
    held: int,
    hold_limit: int,
    can_spill: bool,
) -> str:
    """What to do with a request for an app; one of ``LOCAL``, ``HOLD``, ``SPILL``, ``REFUSE``.

    1. Not placed here: ``SPILL`` (the shell answers 404 when no neighbour serves it either).
    2. Ready replicas and one below ``saturation`` in flight (or no limit): ``LOCAL``.
    3. Every ready replica at ``saturation``: ``SPILL`` if the request may move on, else
       ``LOCAL`` (it queues at the least busy replica).
    4. No ready replica: ``HOLD`` while fewer than ``hold_limit`` wait, else ``SPILL`` if it may
       move on, else ``REFUSE``.
    """
    if not placed:
        return SPILL
    if ready:
        if saturation is None or any(outstanding.get(r.id, 0) < saturation for r in ready):
            return LOCAL
        return SPILL if can_spill else LOCAL
    if held < hold_limit:
        return HOLD
    return SPILL if can_spill else REFUSE


def spilled_refusal(
    credential: str | None, verify_credential: Callable[[str], CredentialClaims]
) -> str | None:
    """Why a request a neighbour passed on is refused, or None when it carries a credential
    that holds (``verify_credential``) and names a site: the hub's own credential does not
    pass requests on, and nobody else may claim to be a site."""
    if not credential:
        return "no site credential"
    try:
        claims = verify_credential(credential)
    except CredentialError as exc:
        return f"site credential {exc.reason}"
    if claims.site is None:
        return "the credential is not a site's"
    return None


def client_address(scope: Scope, hops: int) -> str | None:
    """The address a request is judged by: the client's own, or for a request a neighbour
    passed on (``hops`` > 0) the one that neighbour saw, the last ``X-Forwarded-For`` entry
    (the neighbour appended it)."""
    if hops > 0:
        forwarded: list[str] = [
            entry.strip()
            for name, value in scope.get("headers", ())
            if name.lower() == b"x-forwarded-for"
            for entry in bytes(value).decode("latin-1").split(",")
            if entry.strip()
        ]
        if forwarded:
            return forwarded[-1]
    client = scope.get("client")
    return str(client[0]) if client else None


def _connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in ``Connection`` (hop-by-hop as well, RFC 9110 7.6.1)."""
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return named


def _end_to_end(
    headers: Sequence[tuple[bytes, bytes]], *, drop: Iterable[str] = ()
) -> list[tuple[bytes, bytes]]:
    """``headers`` without hop-by-hop ones and without ``drop``; names lowercased."""
    banned = {h.encode() for h in (*HOP_BY_HOP, *drop)} | _connection_named(headers)
    return [(n.lower(), v) for n, v in headers if n.lower() not in banned]


def forward_request_headers(
    headers: Sequence[tuple[bytes, bytes]], *, client: str | None, scheme: str, via: str
) -> list[tuple[bytes, bytes]]:
    """The headers to send a replica for a client's request.

    Hop-by-hop headers go; ``Host`` stays (apps may serve several names); ``X-Forwarded-For``
    gets the client's address appended, ``X-Forwarded-Host`` is the original ``Host``,
    ``X-Forwarded-Proto`` the client's scheme, and ``Via`` names this hop (RFC 9110 7.6.3).
    ``Expect`` goes too: the server in front has answered ``100-continue`` already.
    """
    kept = _end_to_end(
        headers, drop=("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "expect")
    )
    chain = [v.strip() for n, v in headers if n.lower() == b"x-forwarded-for" and v.strip()]
    if client:
        chain.append(client.encode("latin-1"))
    host = next((v for n, v in headers if n.lower() == b"host"), b"")
    kept.extend(
        [
            *([(b"x-forwarded-for", b", ".join(chain))] if chain else []),
            *([(b"x-forwarded-host", host)] if host else []),
            (b"x-forwarded-proto", scheme.encode("latin-1")),
            (b"via", via.encode("latin-1")),
        ]
    )
    return kept


def forward_response_headers(
    headers: Sequence[tuple[bytes, bytes]], *, via: str
) -> list[tuple[bytes, bytes]]:
    """The headers to send the client for a replica's response: end-to-end ones plus ``Via``."""
    return [*_end_to_end(headers), (b"via", via.encode("latin-1"))]


# ---------------------------------------------------------------------------------------------
# The replicas, observed


class LocalReplicas:
    """The driver's replicas per app key, observed again after a change or when ``max_age`` old.

    ``observe()`` is thread-safe but not free (a lock and a model per replica): once per request
    would tax every request. ``changed()`` may be called from any thread (the driver's).
    """

    def __init__(
        self,
        observe: Callable[[], Mapping[str, Sequence[ReplicaState]]],
        *,
        max_age: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wrap ``observe``; the first ``get()`` observes."""
        self._observe = observe
        self._max_age = max_age
        self._clock = clock
        self._view: Mapping[str, Sequence[ReplicaState]] = {}
        self._taken_at: float | None = None
        self._stale = True

    def changed(self) -> None:
        """The replicas changed: the next ``get()`` observes again."""
        self._stale = True

    def get(self) -> Mapping[str, Sequence[ReplicaState]]:
        """Replicas per ``tenant/app``, at most ``max_age`` seconds old and newer than a change."""
        now = self._clock()
        if self._stale or self._taken_at is None or now - self._taken_at >= self._max_age:
            # Cleared before observing: a change during observe() marks the view stale again.
            self._stale = False
            self._view = self._observe()
            self._taken_at = now
        return self._view


# ---------------------------------------------------------------------------------------------
# The ASGI shell


class _ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


@dataclass
class _Body:
    """The client's request body as an async iterator, and how far it was read."""

    receive: Receive
    started: bool = False
    """Some of the body was handed on: the request can no longer be sent elsewhere."""
    done: bool = False
    """The whole body was read."""

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as the client sends them."""
        self.started = True
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.done = True
                return


_DONE = "done"
_REFUSED = "refused"
_BUSY = "busy"


@dataclass
class _Request:
    """A client's request on its way through the ingress."""

    scope: Scope
    key: str
    hops: int
    origin: str
    counted: str
    """The origin the request's demand is counted under (``Ingress._origins``)."""
    located: str | None
    """The site the client is nearest to as known (named by the spilling neighbour, or holding
    the client's address), None when no site of this share holds it: what access is judged by."""
    body: _Body
    receive: Receive

    @property
    def target(self) -> bytes:
        """The request target: raw path and query."""
        target: bytes = self.scope.get("raw_path") or self.scope["path"].encode()
        if self.scope.get("query_string"):
            target += b"?" + self.scope["query_string"]
        return target


def _all_full(ready: Sequence[ReplicaState], outstanding: Mapping[str, int], limit: int) -> bool:
    return bool(ready) and all(outstanding.get(r.id, 0) >= limit for r in ready)


def _hops(scope: Scope) -> int:
    value = header(scope, HOPS_HEADER)
    if value is None:
        return 0
    try:
        return max(0, int(value))
    except ValueError:
        return 0


_INTERNAL_HEADERS = (HOPS_HEADER, ORIGIN_HEADER, CREDENTIAL_HEADER)
"""Headers between the fleet's sites: a replica or a further site never sees them as sent."""


def _passed_on(scope: Scope) -> bool:
    """Whether the request says a neighbour passed it on (hops or origin, whatever its value)."""
    return any(name in (HOPS_HEADER, ORIGIN_HEADER) for name, _ in scope.get("headers", ()))


def _has_body(scope: Scope) -> bool:
    if header(scope, b"transfer-encoding") is not None:
        return True
    length = header(scope, b"content-length")
    return length is not None and length.strip() not in (b"", b"0")


@dataclass(frozen=True)
class Peer:
    """A neighbour site's ingress that serves an app: where spilled requests go."""

    site: str
    """Site name."""
    address: str
    """IP address of the site's ingress."""
    port: int
    """Ingress port."""


class Ingress:
    """ASGI app: app hosts go to a ready local replica, everything else to ``fallback``.

    Around the forwarding sit the activator and spill-over (see ``route``): a request for an app
    placed here with no ready replica is held while ``wake`` starts one; a request the local
    replicas cannot take (saturated, failing, or the app not placed here) goes to the nearest
    neighbour ``peers`` names, at most ``hop_limit`` hops from where it entered the fleet.
    """

    def __init__(
        self,
        fallback: ASGIApp,
        *,
        site: str,
        address: str,
        replicas: LocalReplicas,
        assignments: Callable[[], Mapping[str, AppAssignment]] | None = None,
        wake: Callable[[str], None] | None = None,
        peers: Callable[[str], Sequence[Peer]] | None = None,
        locate: Callable[[str], str | None] | None = None,
        on_request: Callable[[str, str, float], None] | None = None,
        on_load: Callable[[str, int], None] | None = None,
        on_saturated: Callable[[str], None] | None = None,
        hold_limit: int = 1000,
        hold_timeout: float = 30.0,
        hop_limit: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout | None = None,
        credential: Callable[[], str | None] | None = None,
        verify_credential: Callable[[str], CredentialClaims] | None = None,
        admit: Callable[[str, str | None, str | None], str | None] | None = None,
    ) -> None:
        """Serve ``site``'s apps, whose replicas listen on ``address``.

        ``assignments`` names the apps placed here (with their scaling bounds); ``wake(key)``
        asks for a replica of an app at zero; ``peers(key)`` lists neighbours serving the app,
        nearest first; ``locate(client address)`` names the site a client is nearest to;
        ``on_request(key, origin site, seconds)`` counts demand; ``on_load(key, in flight)``
        follows the app's concurrency here; ``on_saturated(key)`` says local replicas are full
        and no neighbour serves the app. ``transport`` replaces the network (tests); one
        connection pool serves every replica and neighbour.

        ``credential()`` is this site's credential, shown to the neighbours it passes requests
        to; ``verify_credential`` checks the credential of a request a neighbour passed on
        (``spilled_refusal``). Without it (an ingress alone, outside an agent) such requests
        are not checked; the agent always gives it.

        ``admit(key, client address, origin site)`` says why a client may not reach an app
        (its access rules), None to let it in; unset: everyone may. The origin is None for a
        client no site of this share holds. A request a neighbour
        passed on is judged by the address that neighbour saw (``client_address``) and the
        origin it named: what the neighbour judged it by already.
        """
        self.fallback = fallback
        self.site = site
        self.address = address
        self.replicas = replicas
        self.via = f"1.1 edgefleet-{site}"
        self.outstanding: dict[str, int] = {}
        """Requests in flight per replica id."""
        self.in_flight: dict[str, int] = {}
        """Requests in flight per app key at this site, held ones included."""
        self.held: dict[str, int] = {}
        """Requests held per app key, waiting for a replica to become ready."""
        self.spilled = 0
        """Requests sent to a neighbour since start."""
        self._assignments = assignments or (lambda: {})
        self._wake = wake or (lambda key: None)
        self._peers = peers or (lambda key: ())
        self._locate = locate or (lambda address: None)
        self._on_request = on_request
        self._on_load = on_load
        self._on_saturated = on_saturated or (lambda key: None)
        self._credential = credential or (lambda: None)
        self._admit = admit
        self._verify_credential = verify_credential
        self._ready_changed = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.hold_limit = hold_limit
        self.hold_timeout = hold_timeout
        self.hop_limit = hop_limit
        self._client: Upstream
        if transport is not None:
            # Tests: the same exchanges over httpx's fake network (httpx.MockTransport).
            self._client = HttpxUpstream(transport)
        else:
            # Not httpx: its CPU cost per request caps a site at a few hundred requests/s.
            self._client = UpstreamPool(
                connect_timeout=(timeout and timeout.connect) or CONNECT_TIMEOUT,
                head_timeout=(timeout and timeout.read) or HEAD_TIMEOUT,
                read_timeout=(timeout and timeout.read) or READ_TIMEOUT,
            )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def replicas_changed(self) -> None:
        """The replicas changed (call on the ingress's loop): held requests look again."""
        self.replicas.changed()
        event, self._ready_changed = self._ready_changed, asyncio.Event()
        event.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route by ``Host``: an app name goes to its replicas, anything else to ``fallback``."""
        if scope["type"] in ("http", "websocket"):
            host = header(scope, b"host")
            target = parse_app_host(host.decode("latin-1")) if host else None
            if target is not None:
                if scope["type"] == "websocket":
                    # Not proxied yet; closing before accept answers 403.
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await self._serve(scope, receive, send, *target)
                return
        await self.fallback(scope, receive, send)

    # -- one request ---------------------------------------------------------------------------

    def _origins(self, scope: Scope, hops: int) -> tuple[str, str, str | None]:
        """The site the client is nearest to (as the spilling neighbour said, else located,
        else this site); the origin its demand is counted under: the same, or for a client no
        site of this share holds, its network, for the hub to place; and the site as known
        (None for that client)."""
        if hops > 0:
            said = header(scope, ORIGIN_HEADER)
            if said and _LABEL.match(said.decode("latin-1")):
                return said.decode("latin-1"), said.decode("latin-1"), said.decode("latin-1")
        client = scope.get("client")
        if not client:
            return self.site, self.site, None
        located = self._locate(client[0])
        if located is not None:
            return located, located, located
        counted = (network_origin(client[0]) if hops == 0 else None) or self.site
        return self.site, counted, None

    def _local(self, key: str) -> list[ReplicaState]:
        return [r for r in self.replicas.get().get(key, ()) if r.state != _STOPPED]

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, tenant: str, app: str
    ) -> None:
        key = f"{tenant}/{app}"
        if self._verify_credential is not None and _passed_on(scope):
            said = header(scope, CREDENTIAL_HEADER)
            refusal = spilled_refusal(
                said.decode("latin-1") if said is not None else None, self._verify_credential
            )
            if refusal is not None:
                client = scope.get("client")
                log.info(
                    "ingress: refused a spilled request for %s from %s: %s",
                    key,
                    client[0] if client else "?",
                    refusal,
                )
                await _plain(send, 403, f"site {self.site} refused a spilled request: {refusal}\n")
                return
        hops = _hops(scope)
        started = time.monotonic()
        origin, counted_as, located = self._origins(scope, hops)
        request = _Request(
            scope=scope,
            key=key,
            hops=hops,
            origin=origin,
            counted=counted_as,
            located=located,
            body=_Body(receive),
            receive=receive,
        )
        if self._admit is not None:
            refusal = self._admit(key, client_address(scope, hops), request.located)
            if refusal is not None:
                log.debug("ingress: refused %s: %s", key, refusal)
                await _plain(send, 403, refusal + "\n")
                return
        responded = False

        async def tracked_send(message: Message) -> None:
            nonlocal responded
            responded = True
            await send(message)

        counted = self._count_in(key)
        try:
            served_here = await self._route(request, tracked_send)
        except _ClientGone:
            served_here = True
        except Exception:
            # uvicorn would survive this too, but the client deserves an answer, and the log
            # the request that caused it.
            log.exception("ingress: %s %s for %s failed", scope["method"], scope["path"], key)
            served_here = True
            if not responded:
                await _plain(send, 502, f"the ingress of site {self.site} failed on {key}\n")
        finally:
            if counted:
                self._count_out(key)
        if served_here and self._on_request is not None:
            self._on_request(key, request.counted, time.monotonic() - started)

    def _count_in(self, key: str) -> bool:
        count = self.in_flight.get(key, 0) + 1
        self.in_flight[key] = count
        if self._on_load is not None:
            self._on_load(key, count)
        return True

    def _count_out(self, key: str) -> None:
        count = self.in_flight[key] - 1
        if count:
            self.in_flight[key] = count
        else:
            del self.in_flight[key]
        if self._on_load is not None:
            self._on_load(key, count)

    async def _route(self, request: _Request, send: Send) -> bool:
        """Serve ``request``; True when this site served it (False: a neighbour did)."""
        key = request.key
        assignment = self._assignments().get(key)
        local = self._local(key)
        limit = saturation_limit(assignment)
        can_spill = request.hops < self.hop_limit
        decision = route(
            placed=assignment is not None or bool(local),
            ready=ready_replicas(local),
            outstanding=self.outstanding,
            saturation=limit,
            held=self.held.get(key, 0),
            hold_limit=self.hold_limit,
            can_spill=can_spill,
        )
        if decision == SPILL:
            peers = self._peers(key)
            if peers:
                await self._spill(request, send, peers[0])
                return False
            if not local and assignment is None:
                await _plain(send, 404, f"app {key} has no replica at site {self.site}\n")
                return True
            if ready_replicas(local):
                # Saturated, nobody near to share with: say so, and queue here for a free
                # slot (or a neighbour that starts serving) rather than overfill a replica.
                self._on_saturated(key)
                peer = await self._queue(request, limit)
                if peer is not None:
                    await self._spill(request, send, peer)
                    return False
                local = self._local(key)
                decision = LOCAL
            else:
                decision = HOLD if self.held.get(key, 0) < self.hold_limit else REFUSE
        if decision == REFUSE:
            await _plain(
                send,
                503,
                f"{self.held.get(key, 0)} requests for {key} already wait at site "
                f"{self.site} for a replica to start\n",
                headers=[(b"retry-after", b"1")],
            )
            return True
        if decision == HOLD:
            local = await self._hold(request)
            if not ready_replicas(local):
                peers = self._peers(key) if can_spill else ()
                if peers:
                    await self._spill(request, send, peers[0])
                    return False
                await _plain(
                    send,
                    503,
                    f"no replica of {key} at site {self.site} became ready within "
                    f"{self.hold_timeout:g} s\n",
                    headers=[(b"retry-after", b"1")],
                )
                return True
        if limit is not None and _all_full(ready_replicas(local), self.outstanding, limit):
            # Full, and the request may not move on (it made its hop already): wait here for
            # a free slot rather than overfill a replica.
            peer = await self._queue(request, limit)
            if peer is not None:
                await self._spill(request, send, peer)
                return False
            local = self._local(key)
        return await self._forward_local(request, send, local)

    async def _queue(self, request: _Request, limit: int | None) -> Peer | None:
        """Wait, as one of the app's held requests, until a ready replica here has fewer than
        ``limit`` in flight, or a neighbour serves the app (returned); at most ``hold_timeout``.
        """
        key = request.key
        if limit is None or self.held.get(key, 0) >= self.hold_limit:
            return None
        deadline = time.monotonic() + self.hold_timeout
        with self._holding(key):
            while True:
                ready = ready_replicas(self._local(key))
                if any(self.outstanding.get(r.id, 0) < limit for r in ready) or not ready:
                    return None
                if request.hops < self.hop_limit:
                    peers = self._peers(key)
                    if peers:
                        return peers[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                event = self._slot_freed
                with contextlib.suppress(TimeoutError):
                    # Set when a request ends here; the cap lets a new neighbour be noticed.
                    await asyncio.wait_for(event.wait(), min(left, 0.1))

    @contextlib.contextmanager
    def _holding(self, key: str) -> Iterator[None]:
        """Count a request among the app's held ones while it waits."""
        self.held[key] = self.held.get(key, 0) + 1
        try:
            yield
        finally:
            left = self.held[key] - 1
            if left:
                self.held[key] = left
            else:
                del self.held[key]

    async def _hold(self, request: _Request) -> list[ReplicaState]:
        """Wait until a replica of the app is ready here, or the hold times out."""
        key = request.key
        deadline = time.monotonic() + self.hold_timeout
        with self._holding(key):
            self._wake(key)
            while True:
                local = self._local(key)
                if ready_replicas(local):
                    return local
                left = deadline - time.monotonic()
                if left <= 0:
                    return local
                event = self._ready_changed
                with contextlib.suppress(TimeoutError):
                    # Woken by replicas_changed(); the cap also covers a missed wake-up.
                    await asyncio.wait_for(event.wait(), min(left, 0.25))

    async def _forward_local(
        self, request: _Request, send: Send, placed: Sequence[ReplicaState]
    ) -> bool:
        """Send the request to the least busy ready replica, another one if it refuses, and a
        neighbour once if every replica tried failed and the request may be repeated."""
        key = request.key
        tried: set[str] = set()
        while True:
            replica = pick_replica([r for r in placed if r.id not in tried], self.outstanding)
            if replica is None:
                if tried and self._may_retry_elsewhere(request):
                    peers = self._peers(key)
                    if peers:
                        await self._spill(request, send, peers[0])
                        return False
                if tried:
                    await _plain(
                        send,
                        502,
                        f"replicas of {key} at site {self.site} refused the connection\n",
                    )
                else:
                    await _plain(
                        send,
                        503,
                        f"no replica of {key} at site {self.site} is ready\n",
                        headers=[(b"retry-after", b"1")],
                    )
                return True
            tried.add(replica.id)
            self.outstanding[replica.id] = self.outstanding.get(replica.id, 0) + 1
            # A replica answering 503 is full: an idempotent request may go to a neighbour.
            busy_peers = self._peers(key) if self._may_retry_elsewhere(request) else ()
            try:
                outcome = await self._exchange(
                    request,
                    send,
                    # Ready replicas have a port; a pod serves on its own address.
                    (replica.host or self.address, replica.port or 0),
                    self._headers(request),
                    pass_on_busy=bool(busy_peers),
                )
            finally:
                left = self.outstanding[replica.id] - 1
                if left:
                    self.outstanding[replica.id] = left
                else:
                    del self.outstanding[replica.id]
                freed, self._slot_freed = self._slot_freed, asyncio.Event()
                freed.set()
            if outcome == _BUSY:
                await self._spill(request, send, busy_peers[0])
                return False
            if outcome == _REFUSED:
                log.warning("ingress: replica %s of %s refused the connection", replica.id, key)
                if request.body.started or len(tried) >= 2:
                    if not request.body.started and self._may_retry_elsewhere(request):
                        peers = self._peers(key)
                        if peers:
                            await self._spill(request, send, peers[0])
                            return False
                    await _plain(
                        send,
                        502,
                        f"replica {replica.id} at site {self.site} refused the connection\n",
                    )
                    return True
                continue
            return True

    def _may_retry_elsewhere(self, request: _Request) -> bool:
        return (
            request.hops < self.hop_limit
            and not request.body.started
            and request.scope["method"] in IDEMPOTENT
        )

    async def _spill(self, request: _Request, send: Send, peer: Peer) -> None:
        """Send the request to a neighbour's ingress, one hop further from where it entered."""
        self.spilled += 1
        credential = self._credential()
        headers = [
            *self._headers(request),
            (HOPS_HEADER, str(request.hops + 1).encode()),
            (ORIGIN_HEADER, request.origin.encode()),
            *([(CREDENTIAL_HEADER, credential.encode())] if credential else []),
        ]
        outcome = await self._exchange(request, send, (peer.address, peer.port), headers)
        if outcome == _REFUSED:
            await _plain(
                send,
                502,
                f"site {self.site} passed {request.key} to site {peer.site}, which refused\n",
            )

    def _headers(self, request: _Request) -> list[tuple[bytes, bytes]]:
        scope = request.scope
        client = scope.get("client")
        return forward_request_headers(
            [(n, v) for n, v in scope["headers"] if n.lower() not in _INTERNAL_HEADERS],
            client=client[0] if client else None,
            scheme=scope.get("scheme", "http"),
            via=self.via,
        )

    async def _exchange(
        self,
        request: _Request,
        send: Send,
        where: tuple[str, int],
        headers: list[tuple[bytes, bytes]],
        *,
        pass_on_busy: bool = False,
    ) -> str:
        """One upstream exchange streamed to the client: ``_DONE``, or ``_REFUSED`` (nothing
        was sent, so the request may go elsewhere), or with ``pass_on_busy`` ``_BUSY`` (the
        upstream answered 503, which the client was not sent)."""
        content = request.body.chunks() if _has_body(request.scope) else None
        relay = self._relay(request, send, where, headers, content, pass_on_busy=pass_on_busy)
        if content is None:
            # All receive() can still say is that the client left: watch for it from the start,
            # so that a client that gives up while the replica thinks frees the connection.
            return await _unless_client_leaves(request.receive, relay)
        return await relay

    async def _relay(
        self,
        request: _Request,
        send: Send,
        where: tuple[str, int],
        headers: list[tuple[bytes, bytes]],
        content: AsyncIterator[bytes] | None,
        *,
        pass_on_busy: bool = False,
    ) -> str:
        """Send the request upstream, then stream the response to the client."""
        host, port = where
        url = f"{host}:{port}"
        try:
            upstream = await self._client.request(
                request.scope["method"],
                host=host,
                port=port,
                target=request.target,
                headers=headers,
                body=content,
            )
        except ConnectFailed as error:
            log.debug("ingress: %s for %s: %s", url, request.key, error)
            return _REFUSED
        except HeadTimeout:
            await _plain(send, 504, f"{url} did not answer in time\n")
            return _DONE
        except UpstreamError as error:
            log.warning("ingress: %s for %s: %s", url, request.key, error)
            await _plain(send, 502, f"upstream for {request.key} failed: {error}\n")
            return _DONE
        if pass_on_busy and upstream.status == 503 and content is None:
            await upstream.aclose()
            return _BUSY

        async def pump() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status,
                    "headers": forward_response_headers(upstream.headers, via=self.via),
                }
            )
            try:
                async for chunk in upstream:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except ResponseBroken as error:
                # Headers are gone: all that is left is to cut the connection, so that the
                # client sees a truncated response rather than a complete-looking one.
                log.warning("ingress: response from %s broke off: %s", url, error)
                raise _ClientGone from error
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            if content is not None and request.body.done:
                # The whole body went upstream: receive() is free to watch for a disconnect.
                await _unless_client_leaves(request.receive, pump())
            else:
                # No body (watched already), or an answer before the whole body was read:
                # receive() still belongs to the body.
                await pump()
        finally:
            await upstream.aclose()
        return _DONE


_T = TypeVar("_T")


async def _unless_client_leaves(receive: Receive, work: Coroutine[Any, Any, _T]) -> _T:
    """Run ``work`` in this task; raise ``_ClientGone`` once ``receive`` says the client left.

    One watching task that cancels this one, rather than two tasks and ``asyncio.wait``: the
    cheaper form matters at thousands of requests a second. Cancelling ``work`` closes its
    upstream connection (see ``UpstreamPool``).
    """
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        with contextlib.suppress(Exception):
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left:
            task.uncancel()
            raise _ClientGone from None
        raise
    finally:
        watcher.cancel()


async def _plain(
    send: Send, status: int, text: str, *, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
