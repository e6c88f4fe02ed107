"""Status reports group-committed (``ReportBuffer``) on each database engine: the reports of one
moment share a transaction, each sender is answered only once its report is written, the last
report of a site counts, and a failed write or a full buffer answers "send again"."""

from __future__ import annotations

import asyncio

from edgefleet.hub.reports import ReportBuffer
from edgefleet.hub.store import Store
from edgefleet.model import AppReport, ReplicaState, StatusReport


def report(site: str, ready: int, revision: int = 1) -> StatusReport:
    replicas = [
        ReplicaState(id=f"t-web-{i}", index=i, state="running", ready=i < ready) for i in range(3)
    ]
    return StatusReport(
        site=site,
        agent_version="test",
        observed_revision=revision,
        apps=[AppReport(tenant="t", app="web", replicas=replicas)],
    )


def test_a_burst_of_reports_is_a_few_transactions(store: Store) -> None:
    async def scenario() -> list[bool]:
        buffer = ReportBuffer(store.observed, period=0.05)
        runner = asyncio.create_task(buffer.run())
        try:
            # Two reports of s000: the later one (two ready) is what counts.
            first = [buffer.submit(report(f"s{i:03d}", 1)) for i in range(300)]
            later = [buffer.submit(report("s000", 2, revision=2))]
            return list(await asyncio.gather(*first, *later))
        finally:
            runner.cancel()
            assert buffer.pending == 0
            assert 1 <= buffer.batches <= 5, buffer.batches

    answers = asyncio.run(scenario())
    assert answers == [True] * 301
    counts = store.observed.replica_counts()
    assert len(counts) == 300
    assert counts["s000"][("t", "web")].ready == 2
    assert counts["s001"][("t", "web")].ready == 1
    assert store.observed.site_replicas("s299")["t/web"][0].ready


def test_a_failed_write_and_a_full_buffer_say_send_again(store: Store) -> None:
    class Broken:
        def save_reports(self, reports: object) -> None:
            raise OSError("disk full")

    async def scenario() -> tuple[bool, bool, int]:
        broken = ReportBuffer(Broken(), period=0.01)  # type: ignore[arg-type]
        runner = asyncio.create_task(broken.run())
        try:
            failed = await broken.submit(report("s1", 1))
        finally:
            runner.cancel()
        full = ReportBuffer(store.observed, limit=2)
        waiting = [asyncio.ensure_future(full.submit(report(f"s{i}", 1))) for i in range(2)]
        await asyncio.sleep(0)
        refused = await full.submit(report("s9", 1))
        written = await full.flush()
        assert all(await asyncio.gather(*waiting))
        return failed, refused, written

    failed, refused, written = asyncio.run(scenario())
    assert failed is False and refused is False and written == 2
    assert set(store.observed.replica_counts()) == {"s0", "s1"}
