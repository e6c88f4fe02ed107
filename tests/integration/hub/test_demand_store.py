"""The demand matrix in the store, on SQLite and PostgreSQL: dedupe, decay, concurrent hubs."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import UTC, datetime, timedelta

from edgefleet.hub.demand import DemandBuffer, window_rate
from edgefleet.hub.store import Store
from edgefleet.model import AppDemand, DemandReport, DemandRow, SiteReporting
from tests.factories import make_app

TAU = 60.0
NOW = datetime.now(UTC).replace(microsecond=0)


def report(
    site: str,
    seq: int,
    rows: list[DemandRow],
    *,
    end: datetime = NOW,
    seconds: float = 10.0,
) -> DemandReport:
    return DemandReport(
        site=site,
        seq=seq,
        window_start=end - timedelta(seconds=seconds),
        window_seconds=seconds,
        rows=rows,
    )


def only(
    store: Store, tenant: str = "demo", app: str = "hello", *, at: datetime = NOW
) -> dict[str, AppDemand]:
    matrix = store.demand.matrix(at, TAU, tenant, app)
    return {d.origin: d for d in matrix.get((tenant, app), [])}


def test_reporting_totals_count_each_report_once(store: Store) -> None:
    store.objects.put(make_app())
    assert store.demand.reporting("paris") == SiteReporting(site="paris")
    first = report("paris", 5, [("demo/hello", "paris", 600, 30.0, 100)])
    second = report("paris", 6, [("demo/hello", "paris", 40, 1.0, 0), ("x/y", "lyon", 2, 0, 0)])
    store.demand.record([first], TAU, now=NOW)
    store.demand.record([first, second, second], TAU, now=NOW)  # resent: counted once
    totals = store.demand.reporting("paris")
    # Requests of apps that do not exist count too: the site counted them, the hub took them.
    assert (totals.last_seq, totals.reports, totals.requests) == (6, 2, 642.0)
    assert store.demand.reporting("lyon").reports == 0


def test_a_resent_report_counts_once(store: Store) -> None:
    store.objects.put(make_app())
    first = report("paris", 5, [("demo/hello", "paris", 600, 30.0, 100)])
    assert store.demand.record([first], TAU, now=NOW) == 1
    before = only(store)["paris"]
    assert math.isclose(before.requests_per_second, window_rate(600, 10.0, TAU))
    assert math.isclose(before.concurrency, window_rate(30.0, 10.0, TAU))
    assert math.isclose(before.dns_per_second, window_rate(100, 10.0, TAU))
    assert before.last_request == NOW
    # The same seq again, and an older one: nothing taken, nothing changed.
    older = report("paris", 4, [("demo/hello", "paris", 999, 0.0, 0)])
    assert store.demand.record([first, older], TAU, now=NOW) == 0
    assert only(store)["paris"] == before
    # Twice in one batch counts once too; the next seq counts; another site has its own seqs.
    nxt = report("paris", 6, [("demo/hello", "paris", 600, 30.0, 100)])
    lyon = report("lyon", 1, [("demo/hello", "lyon", 60, 1.0, 0)])
    assert store.demand.record([nxt, nxt, lyon], TAU, now=NOW) == 2
    after = only(store)
    assert math.isclose(after["paris"].requests_per_second, 2 * before.requests_per_second)
    assert math.isclose(after["lyon"].requests_per_second, window_rate(60, 10.0, TAU))
    # Busiest first.
    assert [d.origin for d in store.demand.matrix(NOW, TAU)[("demo", "hello")]] == [
        "paris",
        "lyon",
    ]


def test_rates_decay_to_the_readers_now(store: Store) -> None:
    store.objects.put(make_app())
    store.demand.record([report("paris", 1, [("demo/hello", "paris", 600, 30.0, 0)])], TAU, now=NOW)
    fresh = only(store)["paris"].requests_per_second
    half = only(store, at=NOW + timedelta(seconds=TAU * math.log(2)))["paris"]
    assert math.isclose(half.requests_per_second, fresh / 2, rel_tol=1e-6)  # whole µs
    # A window ending later is applied at its own end: the older rate decays to it first.
    later = NOW + timedelta(seconds=TAU)
    store.demand.record(
        [report("paris", 2, [("demo/hello", "paris", 600, 30.0, 0)], end=later)],
        TAU,
        now=later,
    )
    both = only(store, at=later)["paris"]
    assert math.isclose(both.requests_per_second, fresh * math.exp(-1) + fresh, rel_tol=1e-9)
    assert both.last_request == later


def test_counts_of_unknown_apps_are_ignored_and_deleted_apps_forgotten(store: Store) -> None:
    store.objects.put(make_app())
    rows: list[DemandRow] = [
        ("demo/hello", "paris", 10, 1.0, 0),
        ("demo/gone", "paris", 10, 1.0, 0),
        ("other/hello", "paris", 10, 1.0, 0),
    ]
    assert store.demand.record([report("paris", 1, rows)], TAU, now=NOW) == 1
    assert set(store.demand.matrix(NOW, TAU)) == {("demo", "hello")}
    store.objects.put(make_app("gone"))  # created after: the next window counts
    store.demand.record([report("paris", 2, rows)], TAU, now=NOW)
    assert set(store.demand.matrix(NOW, TAU)) == {("demo", "hello"), ("demo", "gone")}
    store.demand.forget("demo", "gone")
    assert set(store.demand.matrix(NOW, TAU)) == {("demo", "hello")}
    assert store.demand.matrix(NOW, TAU, "demo", "gone") == {}


def test_idle_rows_are_pruned_after_the_retention(store: Store) -> None:
    store.objects.put(make_app())
    day_ago = NOW - timedelta(hours=25)
    store.demand.record(
        [
            report("paris", 1, [("demo/hello", "paris", 5, 0.5, 0)], end=day_ago),
            report("lyon", 1, [("demo/hello", "lyon", 0, 0.0, 5)], end=day_ago),
            report("nice", 1, [("demo/hello", "nice", 5, 0.5, 0)], end=NOW - timedelta(hours=1)),
            report("rome", 1, [("demo/hello", "rome", 5, 0.5, 0)]),
        ],
        TAU,
        now=NOW,
    )
    # paris: idle, last request a day ago; lyon: idle, DNS only. nice: idle but requested an
    # hour ago (kept for placement to see); rome: busy.
    assert store.demand.prune(NOW, tau=TAU) == 2
    assert set(only(store)) == {"nice", "rome"}
    assert store.demand.prune(NOW, tau=TAU) == 0


def test_two_hubs_flushing_at_once_lose_no_count(store: Store) -> None:
    """Two buffers (two hub processes) flush concurrently into the same rows, many times."""
    store.objects.put(make_app())
    store.objects.put(make_app("other"))
    second_hub = Store(store.url)
    try:
        buffers = [DemandBuffer(store.demand, tau=TAU), DemandBuffer(second_hub.demand, tau=TAU)]
        rounds, sites_per_hub = 8, 6
        origins = ["paris", "lyon", "nice"]
        seqs: dict[str, int] = {}
        for _ in range(rounds):
            for hub, buffer in enumerate(buffers):
                for s in range(sites_per_hub):
                    site = f"site-{hub}-{s}"
                    seqs[site] = seqs.get(site, 0) + 1
                    rows: list[DemandRow] = [
                        (f"demo/{app}", origin, 10, 1.0, 2)
                        for app in ("hello", "other")
                        for origin in origins
                    ]
                    assert buffer.add(report(site, seqs[site], rows))
            # Both flush at the same moment, each in its own thread and transaction.
            start = threading.Barrier(2)

            async def flush(buffer: DemandBuffer, start: threading.Barrier = start) -> int:
                await asyncio.to_thread(start.wait)
                return await buffer.flush()

            async def both() -> list[int]:
                return list(await asyncio.gather(*(flush(b) for b in buffers)))

            assert asyncio.run(both()) == [sites_per_hub, sites_per_hub]
            assert all(b.pending == 0 for b in buffers)
        # Every window ends at NOW: contributions add up without decay.
        reports = rounds * sites_per_hub * len(buffers)
        matrix = store.demand.matrix(NOW, TAU)
        for app in ("hello", "other"):
            for demand in matrix[("demo", app)]:
                assert math.isclose(
                    demand.requests_per_second,
                    window_rate(10, 10.0, TAU) * reports,
                    rel_tol=1e-9,
                ), demand
                assert math.isclose(
                    demand.dns_per_second,
                    window_rate(2, 10.0, TAU) * reports,
                    rel_tol=1e-9,
                )
            assert {d.origin for d in matrix[("demo", app)]} == set(origins)
    finally:
        second_hub.close()
