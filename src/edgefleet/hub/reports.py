"""Status reports, written in batches: one transaction for every report of a moment.

When an app starts at ten thousand sites, ten thousand reports come within a second or two; one
transaction each would be ten thousand commits. Here a report joins the next batch, written every
``period`` seconds (a group commit), and its sender is answered once the batch is written: an
agent told "taken" can lose its report only with the database, not with the hub. Of the reports
of one site in a batch the last counts (each replaces what the site runs whole). The batching is
``edgefleet.hub.batches.GroupCommit``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgefleet.hub.batches import GroupCommit
from edgefleet.hub.store import ObservedStore
from edgefleet.model import StatusReport


class ReportBuffer(GroupCommit[StatusReport, int]):
    """Status reports waiting to be written (see the module); ``flush`` returns how many."""

    def __init__(self, store: ObservedStore, *, period: float = 0.05, limit: int = 50_000) -> None:
        self._store = store
        super().__init__(self._save, what="status reports", period=period, limit=limit)

    def _save(self, reports: Sequence[StatusReport]) -> int:
        self._store.save_reports(reports)
        return len(reports)
