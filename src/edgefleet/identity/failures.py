"""How many failed authentications a source address may make before it is refused.

A token bucket of ``burst`` tokens, refilled at ``rate`` a second, each failure taking one, kept
as a single time per source: when all of its failures are forgiven (``forgiven_at``, the
"theoretical arrival time" of the generic cell rate algorithm, GCRA, ITU-T I.371). The bucket's
level at ``now`` is ``burst - (forgiven_at - now) * rate`` (full once ``forgiven_at`` is past),
and a failure moves ``forgiven_at`` ``1 / rate`` later, never beyond ``burst / rate`` from now.
One number, only ever moved forward, is what lets hub replicas share a source's bucket with one
upsert (``edgefleet.hub.store.auth_failures`` writes the same arithmetic in SQL).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailureBudget:
    """The failures a source may make: ``burst`` at once, then one every ``1 / rate`` s."""

    burst: float = 10.0
    """Failures a source may make at once."""
    rate: float = 1 / 6
    """Failures a second a source regains after its burst."""

    def forgiven_at(self, before: float | None, now: float, failures: int = 1) -> float:
        """When a source's failures are all forgiven after ``failures`` more at ``now``, its
        earlier ones forgiven at ``before`` (None: it has none)."""
        start = now if before is None else max(before, now)
        return min(start + failures / self.rate, now + self.burst / self.rate)

    def retry_after(self, forgiven_at: float | None, now: float) -> float:
        """Seconds until a source whose failures are forgiven at ``forgiven_at`` may try again;
        0 if it may now."""
        if forgiven_at is None:
            return 0.0
        return max(0.0, forgiven_at - now - (self.burst - 1) / self.rate)

    def refused_beyond(self, now: float) -> float:
        """The ``forgiven_at`` beyond which a source is refused at ``now``."""
        return now + (self.burst - 1) / self.rate

    def recent(self, now: float) -> float:
        """How recent a source's last failure must be for it to be refused at ``now``:
        ``forgiven_at`` is at most ``burst / rate`` after the last failure."""
        return now - 1 / self.rate

    def forgotten(self, now: float) -> float:
        """Sources whose last failure is older than this are forgiven everything at ``now``."""
        return now - self.burst / self.rate
