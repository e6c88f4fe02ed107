"""A requested change's audit entry commits in the change's own transaction, on both engines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from edgefleet.hub.accounts import Accounts
from edgefleet.hub.store import Conflict, Store, utcnow
from edgefleet.hub.store.audit import PENDING, AuditEntry, PendingAudit
from tests.factories import make_site


def _entry(pending: PendingAudit) -> AuditEntry:
    return AuditEntry(
        time=utcnow(),
        subject="admin",
        role="admin",
        source="127.0.0.1",
        method="PUT",
        path="/api/v1/sites/paris",
        action="apply site",
        tenant="",
        status=201 if pending.outcome == "created" else 200,
        result=pending.outcome or "ok",
    )


@pytest.fixture
def pending() -> Iterator[PendingAudit]:
    """A pending entry in the context, as the API's audit log leaves it for a request."""
    entry = PendingAudit(entry=_entry)
    token = PENDING.set(entry)
    try:
        yield entry
    finally:
        PENDING.reset(token)


def _log(store: Store) -> list[AuditEntry]:
    return Accounts(store.engine).list_audit(limit=100)


def test_the_write_carries_the_entry_once(store: Store, pending: PendingAudit) -> None:
    store.objects.put(make_site("paris"))
    assert pending.written is not None and pending.written.id is not None
    [entry] = _log(store)
    assert (entry.id, entry.status, entry.result) == (pending.written.id, 201, "created")
    store.objects.put(make_site("paris", ip="127.0.0.9"))  # a second write of the request
    assert len(_log(store)) == 1


def test_a_write_rolled_back_takes_its_entry_with_it(store: Store, pending: PendingAudit) -> None:
    PENDING.set(None)
    store.objects.put(make_site("paris"))
    PENDING.set(pending)
    with pytest.raises(Conflict):
        store.objects.put(make_site("paris"), create_only=True)
    assert pending.written is None
    assert _log(store) == []


def test_threads_of_the_request_see_the_entry(store: Store, pending: PendingAudit) -> None:
    async def route() -> None:
        await asyncio.to_thread(store.objects.put, make_site("paris"))

    asyncio.run(route())
    assert pending.written is not None and len(_log(store)) == 1


def test_writes_without_an_open_entry_write_none(store: Store, pending: PendingAudit) -> None:
    pending.closed = True  # the request is over; a task it started still holds its context
    store.objects.put(make_site("paris"))
    PENDING.set(None)
    store.objects.put(make_site("lyon"))
    assert pending.written is None
    assert _log(store) == []
