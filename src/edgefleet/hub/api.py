"""The hub's HTTP API: a FastAPI app over the store and the control loops."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edgefleet._version import __version__
from edgefleet.hub.audit import AuditLog
from edgefleet.hub.auth import EmptyList, guard, list_body
from edgefleet.hub.routes import agent, apps, bulk, dns, events, fleet, identity, sites, tenants
from edgefleet.hub.runtime import Hub, HubConfig, lifespan
from edgefleet.hub.store import Conflict, NotFound, StoreError
from edgefleet.hub.webui import WebUi
from edgefleet.model import ITEM_HEADER, RoutingTable

log = logging.getLogger(__name__)


def create_app(config: HubConfig | None = None, *, hub: Hub | None = None) -> FastAPI:
    """The ASGI app of a hub; its lifespan runs the hub's loops."""
    hub = hub or Hub.build(config or HubConfig())
    app = FastAPI(
        title="edgefleet hub",
        version=__version__,
        description="Run applications across thousands of edge sites.",
        lifespan=lifespan,
        # Every route authenticates and authorizes its caller (edgefleet.hub.auth).
        dependencies=[Depends(guard)],
    )
    app.state.hub = hub
    app.add_middleware(AuditLog, hub=hub)
    for router in (
        sites.router,
        apps.router,
        events.router,
        agent.router,
        dns.router,
        tenants.router,
        fleet.router,
        bulk.router,
    ):
        app.include_router(router)
    app.include_router(identity.router)
    # The web UI's static files: public, outside the API and its guard (edgefleet.hub.webui).
    app.mount("/ui", WebUi(), name="ui")

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str | bool]:
        """Liveness of the hub process, and whether it leads the controllers."""
        return {"status": "ok", "leader": hub.leader}

    @app.get("/api/v1/routing-table", tags=["dns"], response_model=RoutingTable)
    def routing_table() -> RoutingTable:
        """The routing table every DNS of the fleet answers from."""
        return hub.routing.wire()

    @app.get("/api/v1/version", tags=["meta"])
    def version() -> dict[str, str]:
        """The hub's version."""
        return {"version": __version__}

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and why only: echoing the input back can leak secrets, and some inputs
        # (NaN, Infinity) are not even valid JSON to answer with.
        detail = [
            {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": str(e.get("msg"))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND, headers=_item(exc)
        )

    @app.exception_handler(EmptyList)
    async def _empty(_request: Request, exc: EmptyList) -> JSONResponse:
        return JSONResponse(list_body(exc.kind))

    @app.exception_handler(Conflict)
    async def _conflict(_request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT, headers=_item(exc)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The hub must outlive any request: log it and answer 500.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error: {type(exc).__name__}"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    return app


def _item(exc: StoreError) -> dict[str, str] | None:
    """The header naming the object refused in a write of many (``put_many``), if it was one."""
    return None if exc.item is None else {ITEM_HEADER: str(exc.item)}
