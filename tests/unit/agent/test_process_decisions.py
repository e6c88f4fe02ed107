"""The process driver's pure decisions: backoff, probe verdicts and the converge plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.drivers.base import Driver
from edgefleet.agent.drivers.process import (
    LIVENESS_FAILURES,
    Plan,
    ProcessDriver,
    Replacement,
    ReplicaRef,
    ReplicaView,
    backoff_delay,
    plan,
    probe_verdict,
    replica_id,
    spec_hash,
)
from edgefleet.model import AppAssignment, ProcessWorkload, Resources

KEY = "t/a"


def assignment(
    replicas: int = 2,
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    generation: int = 1,
    tenant: str = "t",
    app: str = "a",
) -> AppAssignment:
    return AppAssignment(
        tenant=tenant,
        app=app,
        generation=generation,
        replicas=replicas,
        workload=ProcessWorkload(command="edgefleet-hello", env=env or {}, port=port),
    )


OLD = assignment(env={"V": "1"})
NEW = assignment(env={"V": "2"})
OLD_HASH = spec_hash(OLD)
NEW_HASH = spec_hash(NEW)


def view(
    hash_: str = NEW_HASH,
    *,
    ready: bool = True,
    port: int | None = None,
    successor: str | None = None,
) -> ReplicaView:
    return ReplicaView(spec_hash=hash_, ready=ready, port=port, successor_hash=successor)


def refs(*indices: int, key: str = KEY) -> tuple[ReplicaRef, ...]:
    return tuple(ReplicaRef(key, i) for i in indices)


def test_process_driver_is_a_driver(tmp_path: Path) -> None:
    # The annotation is the test: mypy checks ProcessDriver against the protocol.
    driver: Driver = ProcessDriver("lab-1", tmp_path, "127.0.0.1")
    driver.close()
    with pytest.raises(RuntimeError, match="closed"):
        driver.converge([])


# -- ids and hashes -----------------------------------------------------------------------------


def test_replica_id_is_tenant_app_index() -> None:
    assert replica_id("acme", "shop", 3) == "acme-shop-3"


def test_spec_hash_ignores_generation_and_replica_count() -> None:
    assert spec_hash(assignment(replicas=1, generation=1)) == spec_hash(
        assignment(replicas=5, generation=7)
    )


@pytest.mark.parametrize(
    "changed",
    [
        assignment(env={"V": "2"}),
        assignment(port=8000),
        assignment().model_copy(update={"resources": Resources(cpu="500m")}),
        assignment().model_copy(
            update={"workload": ProcessWorkload(command="edgefleet-hello", args=["-v"])}
        ),
    ],
    ids=["env", "port", "resources", "args"],
)
def test_spec_hash_changes_with_workload_or_resources(changed: AppAssignment) -> None:
    assert spec_hash(changed) != spec_hash(assignment())


# -- backoff and probes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restarts_in_a_row", "delay"),
    [(-1, 1.0), (0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (10_000, 30.0)],
)
def test_backoff_doubles_from_one_second_up_to_thirty(restarts_in_a_row: int, delay: float) -> None:
    assert backoff_delay(restarts_in_a_row) == delay


def test_a_passing_probe_makes_ready_and_clears_failures() -> None:
    verdict = probe_verdict(ok=True, has_been_ready=True, failures=2)
    assert (verdict.ready, verdict.failures, verdict.restart) == (True, 0, False)


def test_a_replica_that_never_got_ready_is_not_restarted() -> None:
    verdict = probe_verdict(ok=False, has_been_ready=False, failures=50)
    assert (verdict.ready, verdict.restart) == (False, False)


def test_liveness_restarts_after_consecutive_failures_of_a_ready_replica() -> None:
    failures = 0
    verdicts = []
    for _ in range(LIVENESS_FAILURES):
        verdict = probe_verdict(ok=False, has_been_ready=True, failures=failures)
        failures = verdict.failures
        verdicts.append(verdict)
    assert [v.restart for v in verdicts] == [False] * (LIVENESS_FAILURES - 1) + [True]
    assert not any(v.ready for v in verdicts)


# -- plan: counts -------------------------------------------------------------------------------


def test_nothing_runs_yet_starts_every_index() -> None:
    assert plan([NEW], {}) == Plan(start=refs(0, 1))


def test_matching_state_needs_nothing() -> None:
    assert plan([NEW], {KEY: {0: view(), 1: view()}}).empty


def test_missing_index_is_started() -> None:
    assert plan([NEW], {KEY: {1: view()}}) == Plan(start=refs(0))


def test_scale_down_stops_highest_index_first() -> None:
    running = {KEY: {i: view() for i in range(4)}}
    assert plan([assignment(replicas=1, env={"V": "2"})], running) == Plan(stop=refs(3, 2, 1))


def test_app_not_desired_is_stopped_entirely() -> None:
    running = {KEY: {0: view(), 1: view()}, "t/b": {0: view()}}
    assert plan([NEW], running) == Plan(stop=refs(0, key="t/b"))
    assert plan([], running).stop == (*refs(1, 0), *refs(0, key="t/b"))


def test_zero_replicas_stops_all() -> None:
    running = {KEY: {0: view(), 1: view()}}
    assert plan([assignment(replicas=0, env={"V": "2"})], running) == Plan(stop=refs(1, 0))


# -- plan: replacement --------------------------------------------------------------------------


def test_changed_spec_surges_one_replica_at_a_time() -> None:
    running = {KEY: {0: view(OLD_HASH, port=20000), 1: view(OLD_HASH, port=20001)}}
    assert plan([NEW], running) == Plan(replace=(Replacement(ReplicaRef(KEY, 0), surge=True),))


def test_rollout_waits_while_a_successor_gets_ready() -> None:
    running = {KEY: {0: view(OLD_HASH, successor=NEW_HASH), 1: view(OLD_HASH)}}
    assert plan([NEW], running).empty


def test_rollout_waits_for_new_spec_replicas_to_be_ready() -> None:
    running = {KEY: {0: view(NEW_HASH, ready=False), 1: view(OLD_HASH)}}
    assert plan([NEW], running).empty


def test_rollout_waits_for_replicas_being_scaled_up() -> None:
    running = {KEY: {0: view(OLD_HASH)}}
    assert plan([NEW], running) == Plan(start=refs(1))


def test_rollout_continues_once_the_new_replica_is_ready() -> None:
    running = {KEY: {0: view(NEW_HASH), 1: view(OLD_HASH)}}
    assert plan([NEW], running) == Plan(replace=(Replacement(ReplicaRef(KEY, 1), surge=True),))


def test_unready_old_replicas_are_replaced_in_place_at_once() -> None:
    running = {KEY: {0: view(OLD_HASH, ready=False), 1: view(OLD_HASH, ready=False)}}
    assert plan([NEW], running).replace == (
        Replacement(ReplicaRef(KEY, 0), surge=False),
        Replacement(ReplicaRef(KEY, 1), surge=False),
    )


def test_successor_of_an_outdated_spec_is_cancelled_and_replaced() -> None:
    third = assignment(env={"V": "3"})
    running = {KEY: {0: view(OLD_HASH, successor=NEW_HASH), 1: view(OLD_HASH)}}
    assert plan([third], running) == Plan(
        cancel=refs(0), replace=(Replacement(ReplicaRef(KEY, 0), surge=True),)
    )


def test_rollback_cancels_the_successor_only() -> None:
    running = {KEY: {0: view(OLD_HASH, successor=NEW_HASH), 1: view(OLD_HASH)}}
    assert plan([OLD], running) == Plan(cancel=refs(0))


def test_fixed_port_is_replaced_in_place() -> None:
    old = assignment(port=8000, env={"V": "1"})
    new = assignment(port=8000, env={"V": "2"})
    running = {KEY: {0: view(spec_hash(old), port=8000), 1: view(spec_hash(old), port=8001)}}
    assert plan([new], running) == Plan(replace=(Replacement(ReplicaRef(KEY, 0), surge=False),))


def test_moved_fixed_port_surges_to_the_new_port() -> None:
    old = assignment(port=8000)
    new = assignment(port=9000)
    running = {KEY: {0: view(spec_hash(old), port=8000), 1: view(spec_hash(old), port=8001)}}
    assert plan([new], running) == Plan(replace=(Replacement(ReplicaRef(KEY, 0), surge=True),))


def test_fixed_ports_shifting_onto_each_other_are_all_replaced_at_once() -> None:
    # Replica 0 moves to 8001, which replica 1 holds: one at a time could never finish.
    old = assignment(port=8000)
    new = assignment(port=8001)
    running = {KEY: {0: view(spec_hash(old), port=8000), 1: view(spec_hash(old), port=8001)}}
    assert plan([new], running) == Plan(
        replace=(
            Replacement(ReplicaRef(KEY, 0), surge=False),
            Replacement(ReplicaRef(KEY, 1), surge=False),
        )
    )


def test_apps_roll_out_independently() -> None:
    other_old = assignment(replicas=1, app="b", env={"V": "1"})
    other_new = assignment(replicas=1, app="b", env={"V": "2"})
    running = {
        KEY: {0: view(OLD_HASH, successor=NEW_HASH), 1: view(OLD_HASH)},
        "t/b": {0: view(spec_hash(other_old))},
    }
    assert plan([NEW, other_new], running) == Plan(
        replace=(Replacement(ReplicaRef("t/b", 0), surge=True),)
    )


# -- plan: properties ---------------------------------------------------------------------------

_views = st.builds(
    ReplicaView,
    spec_hash=st.sampled_from([OLD_HASH, NEW_HASH]),
    ready=st.booleans(),
    port=st.none() | st.integers(20000, 20010),
    successor_hash=st.none() | st.sampled_from([OLD_HASH, NEW_HASH]),
)


@given(
    replicas=st.integers(0, 6),
    running=st.dictionaries(st.integers(0, 8), _views, max_size=8),
)
def test_plan_keeps_exactly_the_desired_indices(
    replicas: int, running: dict[int, ReplicaView]
) -> None:
    result = plan([assignment(replicas=replicas, env={"V": "2"})], {KEY: running})
    started = {ref.index for ref in result.start}
    stopped = [ref.index for ref in result.stop]
    assert stopped == sorted(stopped, reverse=True)
    assert started.isdisjoint(running)
    assert set(stopped) <= set(running)
    assert (set(running) - set(stopped)) | started == set(range(replicas))
    # Replacements and cancels touch only kept slots, each at most once.
    replaced = [r.ref.index for r in result.replace]
    assert len(replaced) == len(set(replaced))
    assert set(replaced) <= set(running) - set(stopped)
    assert {ref.index for ref in result.cancel} <= set(running) - set(stopped)
    # At most one surge per app at a time.
    assert sum(r.surge for r in result.replace) <= 1
    # Slots that already run the desired spec are never replaced.
    assert all(running[i].spec_hash != NEW_HASH for i in replaced)
