"""Run a long-lived command's event loop on uvloop where it is installed.

The agent's ingress (``bench/ingress_overhead.py``) and the simulator's thousands of sites cost
markedly less CPU per request on uvloop than on asyncio's own loop; where uvloop is not
available (it is not on every platform), asyncio's loop runs them the same, only slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on uvloop, or on asyncio's loop without it."""
    try:
        import uvloop
    except ImportError:  # not on every platform
        return asyncio.run(main)
    return uvloop.run(main)
