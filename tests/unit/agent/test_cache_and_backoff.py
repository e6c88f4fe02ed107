"""The agent's desired-state cache and its backoff."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edgefleet.agent.backoff import Backoff
from edgefleet.agent.cache import DesiredStateCache
from edgefleet.model import AppAssignment, DesiredState, ProcessWorkload


def test_cache_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    cache = DesiredStateCache(tmp_path / "state" / "desired.json")
    assert cache.load() is None
    state = DesiredState(
        site="paris",
        revision=7,
        apps=[
            AppAssignment(
                tenant="demo",
                app="hello",
                generation=2,
                replicas=3,
                workload=ProcessWorkload(command="edgefleet-hello"),
            )
        ],
    )
    cache.save(state)
    assert cache.load() == state
    assert not (tmp_path / "state" / ".desired.json.tmp").exists()


def test_unreadable_cache_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "desired.json"
    path.write_text('{"site": "paris", "revi')
    assert DesiredStateCache(path).load() is None
    assert "ignoring unreadable cache" in caplog.text


def test_backoff_doubles_to_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(first=1.0, cap=8.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert 0.8 * base <= delay <= 1.2 * base
    backoff.reset()
    assert backoff.next() <= 1.2
