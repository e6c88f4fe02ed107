"""Run a hub process: uvicorn on the configured address."""

from __future__ import annotations

import socket

import uvicorn

from edgefleet import pauses
from edgefleet.hub.api import create_app
from edgefleet.hub.gateway import AgentGateway
from edgefleet.hub.runtime import Hub, HubConfig


class _HubServer(uvicorn.Server):
    """uvicorn that ends watch streams, answers waiting long-polls and ends event streams when
    it stops, instead of waiting them out."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self._hub = hub

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # This process is the hub's alone: long-lived state stays out of full collections.
        pauses.watch(freeze=True)
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._hub.bells.close()
        self._hub.changes.close()
        self._hub.routing.close()
        await super().shutdown(sockets)


def serve(config: HubConfig, *, log_level: str = "info") -> None:
    """Serve the hub until interrupted (SIGINT/SIGTERM stop it cleanly)."""
    hub = Hub.build(config)
    # The agents' calls go straight to their routes; everything else through FastAPI.
    app = AgentGateway(create_app(hub=hub), hub)
    server = _HubServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=log_level,
            # Watch streams of thousands of agents stay open; keep-alive avoids reconnect churn.
            timeout_keep_alive=75,
            access_log=log_level == "debug",
            # The hub trusts no forwarding header: the failed-authentication limit counts the
            # direct peer's address.
            proxy_headers=False,
            # Ten thousand agents may connect within seconds of a hub's start.
            backlog=16384,
            ssl_certfile=config.tls_cert,
            ssl_keyfile=config.tls_key,
        ),
        hub,
    )
    server.run()
