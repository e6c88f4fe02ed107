"""Run a hub process: uvicorn on the configured address."""

from __future__ import annotations

import uvicorn

from edgefleet.hub.api import create_app
from edgefleet.hub.runtime import HubConfig


def serve(config: HubConfig, *, log_level: str = "info") -> None:
    """Serve the hub until interrupted (SIGINT/SIGTERM stop it cleanly)."""
    app = create_app(config)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        # Long-polls of thousands of agents stay open; keep-alive avoids reconnect churn.
        timeout_keep_alive=75,
        access_log=log_level == "debug",
    )
