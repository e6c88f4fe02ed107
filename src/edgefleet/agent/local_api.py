"""The agent's own HTTP API on the site address, under ``/_edgefleet/``: health, replicas, logs and
offloads. It shares the site's ingress port (``edgefleet.agent.ingress`` passes these paths to it).

Health is open (neighbours probe it). Replicas and logs answer a credential of any site or of
the hub; an offload, only the credential of the site asking.

A plain ASGI app rather than FastAPI: four fixed routes do not need a framework, and FastAPI
with its dependencies would be about a sixth of an agent's memory. Answers keep FastAPI's
shapes: ``{"detail": ...}`` on refusals, and 422 with a list of ``{type, loc, msg}`` for a query
or body that does not validate (as the hub's gateway answers agents).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel
from starlette.types import Receive, Scope, Send

from edgefleet.agent.drivers.base import Driver
from edgefleet.agent.identity import bearer
from edgefleet.agent.ingress import LocalReplicas
from edgefleet.asgi import (
    JSON,
    BodyTooLarge,
    header,
    invalid,
    json_body,
    lifespan,
    read_body,
    respond,
)
from edgefleet.identity.credentials import CredentialClaims, CredentialError
from edgefleet.model import AppAssignment, ReplicaState

log = logging.getLogger(__name__)

PREFIX = "/_edgefleet/"
MAX_BODY = 1024 * 1024
"""Largest offload request accepted (one app's assignment)."""

_REPLICAS: TypeAdapter[dict[str, list[ReplicaState]]] = TypeAdapter(dict[str, list[ReplicaState]])
_TAIL: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=1, le=10_000)])
_TEXT = b"text/plain; charset=utf-8"


def ready_counts(observed: Mapping[str, Sequence[ReplicaState]]) -> dict[str, int]:
    """Ready replicas per ``tenant/app``."""
    return {key: sum(r.ready for r in replicas) for key, replicas in observed.items()}


class OffloadRequest(BaseModel):
    """A neighbour asks this site to run replicas of an app it cannot serve alone."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    requester: str = Field(description="Site asking.")
    assignment: AppAssignment = Field(description="The app, with its local scaling bounds.")


class Refused(Exception):
    """An answer other than the route's own: status, detail, and header fields."""

    def __init__(self, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def _invalid(error: ValidationError, where: tuple[str, ...]) -> Refused:
    """422 for a query parameter or body that does not validate, located as FastAPI does."""
    return Refused(422, invalid(error, where))


class LocalApi:
    """ASGI app of the agent's API (see the module); any other path is a 404."""

    def __init__(
        self,
        driver: Driver,
        site: str,
        replicas_view: LocalReplicas,
        offload: Callable[[OffloadRequest], str | None] | None = None,
        *,
        verify_credential: Callable[[str], CredentialClaims],
    ) -> None:
        """Answer for ``site``, whose replicas ``driver`` runs and ``replicas_view`` caches;
        ``offload`` takes a neighbour's request (None when accepted, else why not);
        ``verify_credential`` checks a credential against the fleet's keys
        (``CredentialError``)."""
        self.driver = driver
        self.site = site
        self.replicas_view = replicas_view
        self.offload = offload
        self.verify_credential = verify_credential

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request (or the server's lifespan messages)."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        method: str = scope["method"]
        try:
            status, content_type, body = await self._route(scope, receive, method)
            headers: dict[str, str] = {}
        except Refused as refused:
            status, content_type, body = refused.status, JSON, json_body({"detail": refused.detail})
            headers = refused.headers
        except BodyTooLarge as exc:
            status, content_type, body = 413, JSON, json_body({"detail": str(exc)})
            headers = {}
        except Exception:
            log.exception("unhandled error on %s %s", method, scope["path"])
            status, content_type, body = 500, JSON, json_body({"detail": "internal error"})
            headers = {}
        await respond(send, status, body, headers, content_type)

    async def _route(self, scope: Scope, receive: Receive, method: str) -> tuple[int, bytes, bytes]:
        path: str = scope["path"]
        parts = path[len(PREFIX) :].split("/") if path.startswith(PREFIX) else []
        route: tuple[str, Callable[[], Awaitable[tuple[int, bytes, bytes]]]] | None = None
        if parts == ["healthz"]:
            route = ("GET", self._healthz)
        elif parts == ["replicas"]:
            route = ("GET", lambda: self._replicas(scope))
        elif len(parts) == 3 and parts[0] == "logs" and parts[1] and parts[2]:
            # /_edgefleet/logs/{tenant}/{app}
            route = ("GET", lambda: self._logs(scope, parts[1], parts[2]))
        elif parts == ["offload"]:
            route = ("POST", lambda: self._offload(scope, receive))
        if route is None:
            raise Refused(404, "Not Found")
        allowed, answer = route
        if method != allowed:
            raise Refused(405, "Method Not Allowed", {"Allow": allowed})
        return await answer()

    # -- the routes -----------------------------------------------------------------------------

    async def _healthz(self) -> tuple[int, bytes, bytes]:
        # Neighbours' probes read the ready counts: their edge DNS learns of our replicas
        # without the hub. Served from the same cached view as the ingress: every neighbour
        # probes twice a second.
        ready = ready_counts(self.replicas_view.get())
        return 200, JSON, json_body({"status": "ok", "site": self.site, "ready": ready})

    async def _replicas(self, scope: Scope) -> tuple[int, bytes, bytes]:
        self._fleet_member(scope)
        observed = await asyncio.to_thread(self.driver.observe)
        return 200, JSON, _REPLICAS.dump_json(observed, by_alias=True)

    async def _logs(self, scope: Scope, tenant: str, app: str) -> tuple[int, bytes, bytes]:
        self._fleet_member(scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tail = 100
        if query.get("tail"):
            try:
                tail = _TAIL.validate_python(query["tail"][-1])
            except ValidationError as exc:
                raise _invalid(exc, ("query", "tail")) from None
        replica = query["replica"][-1] if query.get("replica") else None
        text = await asyncio.to_thread(self.driver.logs, tenant, app, replica=replica, tail=tail)
        return 200, _TEXT, text.encode()

    async def _offload(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        # Runs on the agent's loop, which owns the offloads (and the keyring).
        claims = self._caller(scope)
        if claims.site is None:
            raise Refused(403, f"site {self.site} takes offloads from sites, not the hub")
        try:
            request = OffloadRequest.model_validate_json(await read_body(receive, MAX_BODY))
        except ValidationError as exc:
            raise _invalid(exc, ("body",)) from None
        if claims.site != request.requester:
            raise Refused(
                403,
                f"the credential of site {claims.site} cannot ask for an offload on behalf "
                f"of site {request.requester}",
            )
        refusal = "this site takes no offload" if self.offload is None else self.offload(request)
        if refusal is not None:
            raise Refused(409, refusal)
        return 202, JSON, json_body({"status": "accepted", "site": self.site})

    # -- who asks ------------------------------------------------------------------------------

    def _caller(self, scope: Scope) -> CredentialClaims:
        """The claims of the request's credential; 401 without a good one."""
        challenge = {"WWW-Authenticate": "Bearer"}
        raw = header(scope, b"authorization")
        token = bearer(raw.decode("latin-1") if raw is not None else None)
        if token is None:
            raise Refused(
                401,
                f"site {self.site} answers only a site or hub credential "
                "(Authorization: Bearer <credential>)",
                challenge,
            )
        try:
            return self.verify_credential(token)
        except CredentialError as exc:
            raise Refused(
                401, f"site {self.site} refused the credential: {exc.reason}", challenge
            ) from None

    def _fleet_member(self, scope: Scope) -> None:
        """A site's or the hub's credential, else 401 or 403."""
        claims = self._caller(scope)
        if claims.site is None and not claims.is_hub:
            raise Refused(403, f"site {self.site} answers sites and the hub only")


def local_api(
    driver: Driver,
    site: str,
    replicas_view: LocalReplicas,
    offload: Callable[[OffloadRequest], str | None] | None = None,
    *,
    verify_credential: Callable[[str], CredentialClaims],
) -> LocalApi:
    """The agent's own HTTP API on the site address: health, replicas, logs, offload.

    Health is open (neighbours probe it). Replicas and logs answer a credential of any site or
    of the hub (``Authorization: Bearer``); an offload, only the credential of the site asking.
    ``verify_credential`` checks a credential against the fleet's keys (``CredentialError``).
    """
    return LocalApi(driver, site, replicas_view, offload, verify_credential=verify_credential)
