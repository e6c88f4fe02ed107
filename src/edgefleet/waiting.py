"""Waiting on a condition with a deadline: the fleets on this machine, and their tests, use it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | bool | None],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    error: Callable[[str], Exception] = TimeoutError,
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    An exception from ``condition`` counts as not yet (and is named in the message). After
    ``timeout`` seconds, raises ``error`` (TimeoutError by default) naming ``what``.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value  # type: ignore[return-value]
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise error(f"timed out after {timeout:.0f}s waiting for {what}{suffix}")
        time.sleep(interval)
