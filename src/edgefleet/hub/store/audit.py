"""The audit log's entries, written in the transaction of the change they record.

An entry written after its change commits is lost when the hub dies in between, and that may be
after the change was acknowledged. So the API's audit log (``edgefleet.hub.audit``) puts the
entry of each change asked of it in ``PENDING`` before the route runs, and the store's writes of
requested changes open their transaction with ``audited``, which appends the entry just before
the commit: the change and its entry commit together or not at all. ``asyncio.to_thread`` and
FastAPI's thread pool copy context variables, so the route's store calls see the entry in
whichever thread they run. A transaction opened with no pending entry (agents' telemetry, the
controllers, any write outside a request) is a plain ``engine.begin()``.

The first such transaction of a request carries the entry; later ones do not. It is written
with the answer the route is expected to give (``PendingAudit.entry``); the audit log amends it
after the answer when that differs (a refusal after the write, an apply of many objects summed
up), which a hub killed in between does not do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, update

from edgefleet.hub.schema import audit


@dataclass(frozen=True)
class AuditEntry:
    """One change asked of the hub, and what came of it."""

    time: datetime
    """When the change was written (or refused)."""
    subject: str
    """Who asked ('-' when authentication failed)."""
    role: str
    """The caller's role ('-' when authentication failed)."""
    source: str
    """The caller's address."""
    method: str
    """The HTTP method."""
    path: str
    """The request's path."""
    action: str
    """What the change does: 'apply app', 'revoke token'."""
    tenant: str
    """The tenant the change is in ('' for fleet objects)."""
    status: int
    """The HTTP status answered."""
    result: str
    """created, configured, unchanged, deleted, ok, or the refusal."""
    id: int | None = None
    """The entry's number in the log, once written."""


@dataclass(eq=False)
class PendingAudit:
    """The entry of the change a request is making, until a transaction carries it."""

    entry: Callable[[PendingAudit], AuditEntry]
    """The entry as the request stands (called just before the commit of the transaction that
    carries it, in that transaction's thread)."""
    outcome: str | None = None
    """What the write that carries the entry did to its object (created, configured,
    unchanged), when it is a write of one object."""
    written: AuditEntry | None = None
    """The entry as committed, with its id; None while no transaction has carried it."""
    closed: bool = False
    """The request is over: no later transaction carries the entry (a task started during the
    request holds a copy of its context)."""


PENDING: ContextVar[PendingAudit | None] = ContextVar("edgefleet_pending_audit", default=None)
"""The audit entry of the change the current request is making, if it is one."""


def append(conn: Connection, entry: AuditEntry) -> int:
    """Append ``entry`` in the caller's transaction; returns its id."""
    entry_id: int = conn.execute(
        insert(audit)
        .values(
            time=entry.time,
            subject=entry.subject[:128],
            role=entry.role[:16],
            source=entry.source[:64],
            method=entry.method[:8],
            path=entry.path,
            action=entry.action[:128],
            tenant=entry.tenant[:63],
            status=entry.status,
            result=entry.result,
        )
        .returning(audit.c.id)
    ).scalar_one()
    return entry_id


def amend(conn: Connection, entry: AuditEntry) -> None:
    """Rewrite what came of the written entry ``entry.id``: its status, result and tenant."""
    conn.execute(
        update(audit)
        .where(audit.c.id == entry.id)
        .values(status=entry.status, result=entry.result, tenant=entry.tenant[:63])
    )


@contextmanager
def audited(engine: Engine) -> Iterator[Connection]:
    """A write transaction of a change asked of the hub: it carries the request's pending audit
    entry, if there is one no other transaction carried (see the module docstring)."""
    pending = PENDING.get()
    if pending is None or pending.written is not None or pending.closed:
        with engine.begin() as conn:
            yield conn
        return
    with engine.begin() as conn:
        yield conn
        entry = pending.entry(pending)
        entry_id = append(conn, entry)
    # Only once committed: a transaction rolled back took its entry with it.
    pending.written = replace(entry, id=entry_id)


def note_outcome(outcome: str) -> None:
    """Tell the request's pending entry, if any, what the write of one object did (called in
    the transaction, before ``audited`` appends the entry)."""
    pending = PENDING.get()
    if pending is not None and pending.written is None:
        pending.outcome = outcome
