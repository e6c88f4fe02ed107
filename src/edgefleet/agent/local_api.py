"""The agent's own HTTP API on the site address, under ``/_edgefleet/``: health, replicas, logs and
offloads. It shares the site's ingress port (``edgefleet.agent.ingress`` passes these paths to it).

Health is open (neighbours probe it). Replicas and logs answer a credential of any site or of
the hub; an offload, only the credential of the site asking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from edgefleet._version import __version__
from edgefleet.agent.drivers.base import Driver
from edgefleet.agent.identity import bearer
from edgefleet.agent.ingress import LocalReplicas
from edgefleet.identity.credentials import CredentialClaims, CredentialError
from edgefleet.model import AppAssignment, ReplicaState


def ready_counts(observed: Mapping[str, Sequence[ReplicaState]]) -> dict[str, int]:
    """Ready replicas per ``tenant/app``."""
    return {key: sum(r.ready for r in replicas) for key, replicas in observed.items()}


class OffloadRequest(BaseModel):
    """A neighbour asks this site to run replicas of an app it cannot serve alone."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    requester: str = Field(description="Site asking.")
    assignment: AppAssignment = Field(description="The app, with its local scaling bounds.")


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
