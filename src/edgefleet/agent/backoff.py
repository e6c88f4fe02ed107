"""Exponential backoff with jitter for calls to the hub."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``first`` to ``cap``, with ±20 % jitter so agents don't stampede."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, *, rng: random.Random | None = None):
        self.first = first
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next try."""
        delay = min(self.cap, self.first * 2.0**self.failures)
        self.failures += 1
        return delay * self._rng.uniform(0.8, 1.2)

    def reset(self) -> None:
        """A call went through."""
        self.failures = 0
