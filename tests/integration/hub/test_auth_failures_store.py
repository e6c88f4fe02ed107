"""Failed authentications shared by hub replicas through the store, on both engines."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import select

from edgefleet.hub.auth import FailureLimiter
from edgefleet.hub.failures import SharedFailures
from edgefleet.hub.schema import auth_failures
from edgefleet.hub.store import Store
from edgefleet.identity.failures import FailureBudget

BUDGET = FailureBudget(burst=3, rate=0.5)


def test_failures_of_several_hubs_add_up(store: Store) -> None:
    failures = store.auth_failures
    failures.record({"10.0.0.1": 2, "10.0.0.2": 1}, now=100.0, budget=BUDGET)  # hub A
    assert failures.refused(now=100.0, budget=BUDGET, limit=10) == {}
    failures.record({"10.0.0.1": 1}, now=100.5, budget=BUDGET)  # hub B
    refused = failures.refused(now=100.5, budget=BUDGET, limit=10)
    # The time moves as the budget's own arithmetic moves it.
    expected = BUDGET.forgiven_at(BUDGET.forgiven_at(None, 100.0, 2), 100.5)
    assert refused == {"10.0.0.1": pytest.approx(expected)}
    wait = BUDGET.retry_after(refused["10.0.0.1"], 100.5)
    assert wait == pytest.approx(1.5)
    assert failures.refused(now=100.5 + wait, budget=BUDGET, limit=10) == {}


def test_a_burst_is_capped_and_stale_sources_are_pruned(store: Store) -> None:
    failures = store.auth_failures
    failures.record({"10.0.0.1": 50}, now=100.0, budget=BUDGET)
    failures.record({"10.0.0.1": 50}, now=100.0, budget=BUDGET)
    refused = failures.refused(now=100.0, budget=BUDGET, limit=10)
    assert refused["10.0.0.1"] == pytest.approx(100.0 + BUDGET.burst / BUDGET.rate)
    failures.record({"10.0.0.2": 1}, now=104.0, budget=BUDGET)
    assert failures.prune(now=106.5, budget=BUDGET) == 1  # 10.0.0.1: forgiven at 106
    assert failures.prune(now=106.5, budget=BUDGET) == 0


def test_concurrent_hubs_do_not_overwrite_each_other(store: Store) -> None:
    budget = FailureBudget(burst=1000, rate=0.001)
    start = threading.Barrier(4)

    def hub() -> None:
        start.wait()
        for _ in range(10):
            store.auth_failures.record({"10.0.0.1": 1}, now=100.0, budget=budget)

    threads = [threading.Thread(target=hub) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.engine.connect() as conn:
        forgiven_at = conn.execute(select(auth_failures.c.forgiven_at)).scalar_one()
    assert forgiven_at == pytest.approx(100.0 + 40 / budget.rate)


def test_two_hubs_each_under_the_limit_refuse_a_source_over_it(store: Store) -> None:
    def hub() -> tuple[FailureLimiter, SharedFailures]:
        shared = SharedFailures(store.auth_failures, BUDGET)
        return FailureLimiter(burst=BUDGET.burst, rate=BUDGET.rate, shared=shared), shared

    (first, first_shared), (second, second_shared) = hub(), hub()
    first.failed("10.0.0.1")
    first.failed("10.0.0.1")
    second.failed("10.0.0.1")
    asyncio.run(first_shared.sync())
    asyncio.run(second_shared.sync())
    assert second.retry_after("10.0.0.1") > 0  # it read the first hub's two
    assert first.retry_after("10.0.0.1") == 0  # not before its next exchange
    asyncio.run(first_shared.sync())
    assert first.retry_after("10.0.0.1") > 0
    # Neither hub's own failures would have refused the source.
    assert first.budget.retry_after(first._buckets["10.0.0.1"], time.monotonic()) == 0
    assert second.budget.retry_after(second._buckets["10.0.0.1"], time.monotonic()) == 0
    assert first.retry_after("10.0.0.2") == second.retry_after("10.0.0.2") == 0
