"""The hub is killed (SIGKILL) while 1,000 writes are in flight; no acknowledged write is lost,
nor its audit entry.

A real hub process on each engine takes a mix of creates (POST) and updates (PUT) from a hundred
concurrent connections and is killed once a few hundred have been acknowledged. After a restart
on the same database, every write whose 2xx response reached the client must be there, and so
must its entry in the audit log: the entry commits in the write's own transaction, so the audit
log holds exactly one entry for each write that committed, whether its answer got out or not.

Why this holds: the hub answers only after the write's transaction has committed
(``Store.put`` commits, then reads the object back for the response). On PostgreSQL the server
owns durability and outlives the hub. On SQLite the hub process writes the file itself; in WAL
mode with ``synchronous=NORMAL`` a commit has been written to the WAL file (the operating system's
page cache) before it returns, so it survives the death of the process, and the next open rolls
back only frames of transactions that never committed. ``synchronous=NORMAL`` skips the fsync per
commit, so a power loss or kernel crash may lose the last commits (never corrupt the file): that
is not what this scenario tests.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from edgefleet.hub.schema import counters, objects
from edgefleet.hub.store import Store
from edgefleet.localfleet import LocalFleet
from edgefleet.model import App
from edgefleet.model.access import AuditRecord
from tests.factories import make_app
from tests.scenarios.figures import Figures

SCENARIO = "hub SIGKILL during 1,000 writes"
TENANT = "crash"
MARKER = "crash.edgefleet.io/write"
"""Annotation holding the marker of the write that produced the stored version."""
MARKER_ENV = "WRITE_MARKER"
"""The same marker in the spec (workload env), so an update changes the spec too."""

CREATES = 600
"""New apps created by POST, one write each."""
UPDATED_APPS = 50
"""Apps created before the load and then updated by PUT."""
UPDATES_PER_APP = 8
"""Updates per updated app, sent one after the other so their order is known."""
IN_FLIGHT = 100
"""Writes in flight at once (and HTTP connections)."""
KILL_AFTER = 300
"""The hub is killed when this many writes have been acknowledged."""


@dataclass(frozen=True)
class Write:
    """One write of the load: the create of a new app, or the n-th update of an existing one."""

    app: str
    """Name of the app written."""
    seq: int
    """0 for a create; n for the n-th update of an app created before the load."""

    @property
    def marker(self) -> str:
        """Unique per write; stored in the app's annotations and spec."""
        return f"{self.app}@{self.seq}"

    @property
    def is_update(self) -> bool:
        """Whether this write is a PUT of an existing app."""
        return self.seq > 0


@dataclass(frozen=True)
class Ack:
    """An acknowledged write: a 2xx response reached the client."""

    write: Write
    """The write acknowledged."""
    uid: str
    """The app's uid in the response."""
    resource_version: int
    """The resourceVersion in the response (at least the version this write committed)."""


@dataclass(frozen=True)
class Stored:
    """An app as the restarted hub returns it."""

    uid: str
    """The app's uid."""
    resource_version: int
    """Its resourceVersion."""
    generation: int
    """Its spec generation (1 on create, +1 per update: every update changes the spec)."""
    marker: str
    """The marker annotation: which write produced this version."""
    spec_marker: str
    """The marker in the spec; equal to ``marker`` unless a version was torn."""


@dataclass(frozen=True)
class Verdict:
    """What survived the crash, judged from what was sent, acknowledged and read back."""

    acknowledged: int
    """Writes acknowledged (2xx received)."""
    present: int
    """Acknowledged writes whose effect is in the store after the restart."""
    lost: tuple[str, ...]
    """Acknowledged writes missing after the restart, each with what is missing."""
    landed_unacknowledged: int
    """Writes never acknowledged whose effect is in the store anyway (allowed)."""
    inconsistent: tuple[str, ...]
    """Stored apps that match no write sent, or whose annotation, spec and generation disagree."""


def judge(writes: Sequence[Write], acks: Iterable[Ack], stored: Mapping[str, Stored]) -> Verdict:
    """Compare acknowledged writes with the store after the restart.

    An acknowledged create is present if its app exists with the uid the hub answered. An
    acknowledged update (the n-th of its app) is present if the stored app is at least that
    version: its marker is the n-th update or a later one, and its resourceVersion is at least the
    acknowledged one. A later update that was in flight at the kill may have landed too; it is
    counted, not held against the hub.
    """
    sent_seq: dict[str, int] = {}
    for write in writes:
        sent_seq[write.app] = max(sent_seq.get(write.app, 0), write.seq)
    acked = {ack.write: ack for ack in acks}
    lost: list[str] = []
    inconsistent: list[str] = []

    # Which write produced each stored version (None: a marker no write of this load has).
    seqs = {name: _seq_of(app.marker) for name, app in stored.items()}
    for name, app in stored.items():
        seq = seqs[name]
        if name not in sent_seq or seq is None or seq > sent_seq[name]:
            inconsistent.append(f"{name}: marker {app.marker!r} matches no write sent")
        elif app.spec_marker != app.marker or app.generation != seq + 1:
            inconsistent.append(
                f"{name}: annotation {app.marker!r}, spec {app.spec_marker!r} and "
                f"generation {app.generation} disagree"
            )
    for write, ack in acked.items():
        have, seq = stored.get(write.app), seqs.get(write.app)
        if have is None or seq is None:
            lost.append(f"{write.marker}: app {write.app!r} is gone")
        elif have.uid != ack.uid:
            lost.append(f"{write.marker}: uid {have.uid} is not the acknowledged {ack.uid}")
        elif seq < write.seq or have.resource_version < ack.resource_version:
            lost.append(
                f"{write.marker}: stored {have.marker} at version {have.resource_version}, "
                f"acknowledged at version {ack.resource_version}"
            )
    # Beyond what the acknowledgements explain: a create never acknowledged whose app exists, an
    # update never acknowledged that is newer than its app's last acknowledged one.
    newest_acked: dict[str, int] = {}
    for write in acked:
        newest_acked[write.app] = max(newest_acked.get(write.app, -1), write.seq)
    landed = sum(
        1
        for write in writes
        if write not in acked
        and (seq := seqs.get(write.app)) is not None
        and newest_acked.get(write.app, -1) < write.seq <= seq
    )
    return Verdict(
        acknowledged=len(acked),
        present=len(acked) - len(lost),
        lost=tuple(lost),
        landed_unacknowledged=landed,
        inconsistent=tuple(inconsistent),
    )


def _seq_of(marker: str) -> int | None:
    """The write number in a marker (``name@n``), None if it is not one."""
    _, at, number = marker.rpartition("@")
    return int(number) if at and number.isdigit() else None


@dataclass(frozen=True)
class AuditVerdict:
    """Whether the audit log after the restart holds an entry for each write that committed."""

    entries: int
    """Entries of successful writes of the load."""
    missing: tuple[str, ...]
    """Acknowledged writes without their entry."""
    unmatched: tuple[str, ...]
    """Where the entries and the writes that committed disagree in number (an entry of a write
    that did not commit, or a committed write without an entry, acknowledged or not)."""


def create_path() -> str:
    """The path of a create (POST) of the load."""
    return f"/api/v1/tenants/{TENANT}/apps"


def update_path(app: str) -> str:
    """The path of an update (PUT) of ``app``."""
    return f"/api/v1/tenants/{TENANT}/apps/{app}"


def judge_audit(
    writes: Sequence[Write],
    acks: Iterable[Ack],
    stored: Mapping[str, Stored],
    entries: Iterable[AuditRecord],
) -> AuditVerdict:
    """Compare the audit entries of the load with the writes that committed.

    The store tells which writes committed: an app created by the load exists, and an updated
    app's marker is its newest committed update (its updates are sent one after the other, so
    updates 1 to n committed). Entries of creates all have one path, so they are counted
    together; an app's updates have its own path, so each acknowledged update is checked.
    """
    ok = [(e.method, e.path) for e in entries if e.status < 400]
    counted: dict[tuple[str, str], int] = {}
    for key in ok:
        counted[key] = counted.get(key, 0) + 1
    acked = list(acks)
    missing: list[str] = []
    unmatched: list[str] = []

    created = {w.app for w in writes if not w.is_update and w.app in stored}
    posted = counted.get(("POST", create_path()), 0)
    acked_creates = sum(not a.write.is_update for a in acked)
    if posted < acked_creates:
        missing.append(f"{acked_creates} creates acknowledged, {posted} audit entries of creates")
    if posted != len(created):
        unmatched.append(f"{len(created)} apps created, {posted} audit entries of creates")

    newest_acked: dict[str, int] = {}
    for ack in acked:
        if ack.write.is_update:
            newest_acked[ack.write.app] = max(newest_acked.get(ack.write.app, 0), ack.write.seq)
    for app in sorted({w.app for w in writes if w.is_update}):
        entered = counted.get(("PUT", update_path(app)), 0)
        have = stored.get(app)
        committed = (_seq_of(have.marker) or 0) if have is not None else 0
        if entered < newest_acked.get(app, 0):
            missing.append(
                f"{app}: updates up to {newest_acked[app]} acknowledged, {entered} audit entries"
            )
        if entered != committed:
            unmatched.append(f"{app}: {committed} updates committed, {entered} audit entries")
    return AuditVerdict(entries=len(ok), missing=tuple(missing), unmatched=tuple(unmatched))


def read_audit(fleet: LocalFleet, *, after: int) -> list[AuditRecord]:
    """The audit entries of the tenant written after the entry ``after``, oldest first."""
    with fleet.client() as client:
        return [e for e in client.audit(tenant=TENANT, limit=10_000) if e.id > after]


def manifest(write: Write) -> dict[str, Any]:
    """The JSON body of a write: a valid app whose annotation and spec carry its marker."""
    app = make_app(write.app, tenant=TENANT, env={MARKER_ENV: write.marker})
    body = app.model_dump(mode="json", by_alias=True, exclude_none=True)
    body.pop("status", None)
    body["metadata"]["annotations"] = {MARKER: write.marker}
    return body


@dataclass
class Load:
    """The writes of one run and what happened to each; mutated by the senders only."""

    fleet: LocalFleet
    """The fleet whose hub takes the writes and is killed."""
    kill_after: int
    """Acknowledgements after which the hub is killed."""
    sent: list[Write] = field(default_factory=list)
    """Every write sent (or tried: after the kill, the connection is refused)."""
    acks: list[Ack] = field(default_factory=list)
    """Writes acknowledged, in the order their responses arrived."""
    refused: list[str] = field(default_factory=list)
    """Writes answered with an HTTP error status (not acknowledged, but not a crash either)."""
    failed: int = 0
    """Writes that got no answer: connection refused, reset or closed by the killed hub."""
    in_flight: int = 0
    """Writes sent and not answered yet."""
    in_flight_at_kill: int | None = None
    """Writes in flight when the kill was sent; None until then."""
    acked_at_kill: int | None = None
    """Acknowledgements when the kill was sent (responses already on the way may follow)."""

    async def send(self, client: httpx.AsyncClient, write: Write) -> None:
        """Send one write and record the outcome; kill the hub at the ``kill_after``-th ack."""
        self.sent.append(write)
        self.in_flight += 1
        try:
            if write.is_update:
                path = f"/api/v1/tenants/{TENANT}/apps/{write.app}"
                reply = await client.put(path, json=manifest(write))
            else:
                reply = await client.post(f"/api/v1/tenants/{TENANT}/apps", json=manifest(write))
        except httpx.TransportError:
            self.failed += 1
            return
        finally:
            self.in_flight -= 1
        if not reply.is_success:
            self.refused.append(f"{write.marker}: {reply.status_code} {reply.text[:200]}")
            return
        stored = App.model_validate(reply.json())
        assert stored.metadata.uid is not None and stored.metadata.resource_version is not None
        self.acks.append(Ack(write, stored.metadata.uid, int(stored.metadata.resource_version)))
        if len(self.acks) == self.kill_after:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the hub now, with the other writes still in flight."""
        process = self.fleet.hub_process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        self.acked_at_kill = len(self.acks)
        self.in_flight_at_kill = self.in_flight


async def run_load(load: Load, jobs: Sequence[Sequence[Write]]) -> None:
    """Send every job's writes, ``IN_FLIGHT`` jobs at a time; a job's writes go in order."""
    queue: asyncio.Queue[Sequence[Write]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    timeout = httpx.Timeout(30.0, pool=None)
    async with httpx.AsyncClient(
        base_url=load.fleet.hub_url, limits=limits, timeout=timeout, headers=load.fleet.headers
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                for write in queue.get_nowait():
                    await load.send(client, write)

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


def read_back(fleet: LocalFleet) -> dict[str, Stored]:
    """Every app of the tenant, through the restarted hub's API."""
    reply = httpx.get(
        f"{fleet.hub_url}/api/v1/tenants/{TENANT}/apps", timeout=30.0, headers=fleet.headers
    )
    reply.raise_for_status()
    out = {}
    for item in reply.json()["items"]:
        app = App.model_validate(item)
        meta = app.metadata
        assert meta.uid is not None and meta.resource_version is not None
        assert meta.generation is not None
        out[meta.name] = Stored(
            uid=meta.uid,
            resource_version=int(meta.resource_version),
            generation=meta.generation,
            marker=meta.annotations.get(MARKER, ""),
            spec_marker=app.spec.workload.env.get(MARKER_ENV, ""),
        )
    return out


def store_problems(db_url: str) -> list[str]:
    """The store's integrity checks: SQLite's own, then the store's invariants on both engines.

    Invariants: every resourceVersion was drawn from the revision counter (none above it) and no
    two objects share one.
    """
    problems = []
    if db_url.startswith("sqlite:///"):
        path = db_url.removeprefix("sqlite:///")
        db = sqlite3.connect(path)
        try:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        finally:
            db.close()
        if rows != [("ok",)]:
            problems.append(f"PRAGMA integrity_check: {rows}")
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            revision = conn.execute(
                select(counters.c.value).where(counters.c.name == "revision")
            ).scalar_one()
            highest, count, distinct = conn.execute(
                select(
                    func.max(objects.c.resource_version),
                    func.count(),
                    func.count(objects.c.resource_version.distinct()),
                )
            ).one()
    finally:
        store.close()
    if highest is not None and highest > revision:
        problems.append(f"resourceVersion {highest} is above the revision counter {revision}")
    if count != distinct:
        problems.append(f"{count} objects share {distinct} resourceVersions")
    return problems


@pytest.mark.slow
def test_no_acknowledged_write_lost_when_the_hub_is_killed(
    fleet: LocalFleet, db_url: str, figures: Figures
) -> None:
    engine = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    updated = [f"upd-{i:03d}" for i in range(UPDATED_APPS)]
    with fleet.client() as client:
        for name in updated:
            client.apply(App.model_validate(manifest(Write(name, 0))))
        before = max((e.id for e in client.audit(limit=1)), default=0)
    chains = [[Write(name, n) for n in range(1, UPDATES_PER_APP + 1)] for name in updated]
    creates = [[Write(f"new-{i:04d}", 0)] for i in range(CREATES)]
    # The update chains start with the load and keep about half the connections busy, so both
    # kinds of write are in flight when the hub dies.
    jobs: list[Sequence[Write]] = [*chains, *creates]
    load = Load(fleet=fleet, kill_after=KILL_AFTER)

    asyncio.run(run_load(load, jobs))
    process = fleet.hub_process
    assert process is not None
    fleet.stop_hub(signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, "the hub must have died of the kill"

    started = time.monotonic()
    fleet.start_hub()
    answering = time.monotonic() - started
    stored = read_back(fleet)
    verdict = judge(load.sent, load.acks, stored)
    entries = read_audit(fleet, after=before)
    audited = judge_audit(load.sent, load.acks, stored, entries)
    problems = store_problems(db_url)
    with fleet.client() as client:  # and it takes writes again
        after, outcome = client.apply(App.model_validate(manifest(Write("after-restart", 0))))
    figures_of_run = {
        "writes sent": (len(load.sent), "", ""),
        "acknowledged before the kill": (verdict.acknowledged, "", ""),
        "acknowledged creates (POST)": (sum(not a.write.is_update for a in load.acks), "", ""),
        "acknowledged updates (PUT)": (sum(a.write.is_update for a in load.acks), "", ""),
        "in flight when killed": (load.in_flight_at_kill or 0, "", ""),
        # Responses the hub had sent but the client had not read yet when the kill went out.
        "answers read after the kill was sent": (len(load.acks) - KILL_AFTER, "", ""),
        "failed without an answer": (load.failed, "", ""),
        "acknowledged writes present after restart": (verdict.present, "", ""),
        "acknowledged writes lost": (len(verdict.lost), "", "0"),
        "unacknowledged writes that landed anyway": (verdict.landed_unacknowledged, "", ""),
        "audit entries of the load": (audited.entries, "", ""),
        "acknowledged writes without an audit entry": (len(audited.missing), "", "0"),
        "time from restart to the hub answering": (round(answering, 2), "s", ""),
    }
    for name, (value, unit, aim) in figures_of_run.items():
        met = (value == 0) if aim else None
        figures.add(SCENARIO, name, value, unit=unit, aim=aim, met=met, engine=engine)

    assert len(load.sent) == CREATES + UPDATED_APPS * UPDATES_PER_APP
    assert load.refused == [], f"the hub refused writes: {load.refused[:5]}"
    assert load.acked_at_kill == KILL_AFTER, "the hub was never killed"
    assert load.in_flight_at_kill, "no write was in flight when the hub was killed"
    assert load.failed > 0, "no write failed: the kill came too late to test anything"
    assert len(load.acks) + load.failed == len(load.sent), "every write is answered or failed"
    acked_kinds = {ack.write.is_update for ack in load.acks}
    assert acked_kinds == {True, False}, "both creates and updates must be acknowledged"
    assert verdict.lost == (), f"{len(verdict.lost)} acknowledged writes lost: {verdict.lost[:5]}"
    assert verdict.inconsistent == (), verdict.inconsistent[:5]
    assert audited.missing == (), f"audit entries lost: {audited.missing[:5]}"
    assert audited.unmatched == (), audited.unmatched[:5]
    # An entry committed with its write already says what its answer said, even when the hub
    # died before the answer went out.
    kinds = {(e.method, e.status, e.result) for e in entries}
    assert kinds <= {("POST", 201, "ok"), ("PUT", 200, "configured")}, kinds
    assert problems == []
    assert outcome == "created" and after.metadata.name == "after-restart"


# -- the judge alone: it must see a loss when there is one ----------------------------------------


def _stored(app: str, seq: int, *, uid: str = "u", version: int = 10) -> Stored:
    marker = Write(app, seq).marker
    return Stored(uid, version, seq + 1, marker, marker)


_SENT = [Write("new", 0), Write("upd", 1), Write("upd", 2), Write("upd", 3)]


@pytest.mark.parametrize(
    ("acks", "stored", "lost", "landed"),
    [
        pytest.param(
            [Ack(Write("new", 0), "u", 5), Ack(Write("upd", 2), "u", 9)],
            {"new": _stored("new", 0, version=5), "upd": _stored("upd", 2, version=9)},
            0,
            0,
            id="everything acknowledged is there",
        ),
        pytest.param(
            [Ack(Write("new", 0), "u", 5)],
            {"upd": _stored("upd", 0)},
            1,
            0,
            id="acknowledged create missing",
        ),
        pytest.param(
            [Ack(Write("new", 0), "u", 5)],
            {"new": _stored("new", 0, uid="other"), "upd": _stored("upd", 0)},
            1,
            0,
            id="acknowledged create replaced by another object",
        ),
        pytest.param(
            [Ack(Write("upd", 1), "u", 7), Ack(Write("upd", 2), "u", 9)],
            {"upd": _stored("upd", 1, version=7)},
            1,
            0,
            id="acknowledged update rolled back to an earlier one",
        ),
        pytest.param(
            [Ack(Write("upd", 2), "u", 9)],
            {"upd": _stored("upd", 2, version=8)},
            1,
            0,
            id="acknowledged update at an older version",
        ),
        pytest.param(
            [Ack(Write("upd", 1), "u", 7), Ack(Write("upd", 2), "u", 9)],
            {"new": _stored("new", 0), "upd": _stored("upd", 3, version=11)},
            0,
            2,
            id="unacknowledged create and later update landed",
        ),
    ],
)
def test_judge_counts_lost_and_landed_writes(
    acks: list[Ack], stored: dict[str, Stored], lost: int, landed: int
) -> None:
    verdict = judge(_SENT, acks, stored)
    assert len(verdict.lost) == lost
    assert verdict.present == len(acks) - lost
    assert verdict.landed_unacknowledged == landed
    assert verdict.inconsistent == ()


def test_judge_flags_versions_no_write_produced() -> None:
    torn = Stored("u", 10, 3, Write("upd", 2).marker, Write("upd", 1).marker)
    unmarked = Stored("u", 10, 1, "", "")
    verdict = judge(_SENT, [], {"upd": torn, "ghost": _stored("ghost", 0), "new": unmarked})
    assert len(verdict.inconsistent) == 3


# -- the audit judge alone: it must see a missing or a stray entry --------------------------------


def _entry(method: str, path: str, status: int = 200) -> AuditRecord:
    return AuditRecord(
        id=1,
        time=datetime.now(UTC),
        subject="admin",
        role="admin",
        source="127.0.0.1",
        method=method,
        path=path,
        action="apply app",
        tenant=TENANT,
        status=status,
        result="ok",
    )


_POST = _entry("POST", create_path(), 201)
_PUT = _entry("PUT", update_path("upd"))


@pytest.mark.parametrize(
    ("acks", "stored", "entries", "missing", "unmatched"),
    [
        pytest.param(
            [Ack(Write("new", 0), "u", 5), Ack(Write("upd", 2), "u", 9)],
            {"new": _stored("new", 0), "upd": _stored("upd", 2)},
            [_POST, _PUT, _PUT],
            0,
            0,
            id="an entry for each write committed",
        ),
        pytest.param(
            [Ack(Write("upd", 1), "u", 7)],
            {"new": _stored("new", 0), "upd": _stored("upd", 3)},
            [_POST, _PUT, _PUT, _PUT],
            0,
            0,
            id="unacknowledged writes that committed have their entries",
        ),
        pytest.param(
            [Ack(Write("new", 0), "u", 5)],
            {"new": _stored("new", 0), "upd": _stored("upd", 0)},
            [],
            1,
            1,
            id="acknowledged create without its entry",
        ),
        pytest.param(
            [Ack(Write("upd", 1), "u", 7), Ack(Write("upd", 2), "u", 9)],
            {"upd": _stored("upd", 2)},
            [_PUT, _entry("PUT", update_path("upd"), 409)],
            1,
            1,
            id="acknowledged update without its entry (a refusal is not one)",
        ),
        pytest.param(
            [],
            {"upd": _stored("upd", 0)},
            [_POST, _PUT],
            0,
            2,
            id="entries of writes that never committed",
        ),
    ],
)
def test_audit_judge_counts_missing_and_stray_entries(
    acks: list[Ack],
    stored: dict[str, Stored],
    entries: list[AuditRecord],
    missing: int,
    unmatched: int,
) -> None:
    verdict = judge_audit(_SENT, acks, stored, entries)
    assert len(verdict.missing) == missing
    assert len(verdict.unmatched) == unmatched
