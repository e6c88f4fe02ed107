"""Python client of the hub API, used by the CLI and by programs."""

from edgefleet.client.config import Context, load_context, save_context
from edgefleet.client.hub import Client, HubError

__all__ = ["Client", "Context", "HubError", "load_context", "save_context"]
