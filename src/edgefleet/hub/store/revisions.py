"""Each site's desired-state revision: what an agent's long-poll watches.

Revisions come from the global counter, so one indexed query (``changed_since``) finds every
site whose desired state changed after a given revision: how a hub learns of the writes of
another hub sharing its database without scanning every site.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, Engine, select

from edgefleet.hub.schema import site_revisions
from edgefleet.hub.store.engine import next_revision, upsert


def bump_sites(
    conn: Connection, sites: Iterable[str], *, revision: int | None = None
) -> int | None:
    """Give ``sites`` a new desired-state revision in the transaction of ``conn`` (``revision``
    if the transaction drew one already, else the next); returns it (None when there is no
    site). A transaction's feed rows must carry a revision at least as high: a hub serves a
    site's state at revision R only from a picture of the fleet that includes R."""
    names = sorted(set(sites))
    if not names:
        return None
    if revision is None:
        revision = next_revision(conn)
    upsert(
        conn,
        site_revisions,
        [{"site": s, "revision": revision} for s in names],
        keys=("site",),
    )
    return revision


class SiteRevisions:
    """Reads of the sites' desired-state revisions."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def changed_since(self, revision: int) -> dict[str, int]:
        """Sites whose desired state changed after ``revision``, with their new revision."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(site_revisions).where(site_revisions.c.revision > revision)
            ).all()
        return {row.site: row.revision for row in rows}

    def all(self) -> dict[str, int]:
        """Every site's desired-state revision."""
        return self.changed_since(-1)
