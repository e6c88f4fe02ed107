"""edgefleet: run applications across thousands of edge sites.

The public surface is small: the API objects (``edgefleet.model``) and the hub client
(``edgefleet.client``). Everything else is an implementation detail of the hub, agent and CLI.
"""

from edgefleet._version import __version__

__all__ = ["__version__"]
