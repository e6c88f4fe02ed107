"""A long-running process logs garbage collections long enough to stall it, and keeps them
short."""

from __future__ import annotations

import gc
import logging

import pytest

from edgefleet import pauses


def test_slow_collections_are_logged_and_fast_ones_are_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = pauses.watch()
    try:
        assert pauses.watch() is watch  # one per process
        assert not watch.freezing
        watch.slow = 60.0
        with caplog.at_level(logging.INFO, logger="edgefleet.pauses"):
            gc.collect()
        assert not caplog.records
        assert watch.longest > 0.0
        watch.slow = 0.0
        with caplog.at_level(logging.INFO, logger="edgefleet.pauses"):
            gc.collect()
        assert watch.slow_count >= 1
        assert "(generation 2) stalled this process" in caplog.records[-1].getMessage()
    finally:
        gc.callbacks.remove(watch)


def test_survivors_of_a_full_collection_are_left_out_of_the_next_until_a_thaw() -> None:
    now = [0.0]
    watch = pauses.Collections(clock=lambda: now[0])
    watch.freezing = True
    kept = [{"site": i} for i in range(10_000)]
    gc.callbacks.append(watch)
    try:
        gc.collect()
        assert gc.get_freeze_count() >= len(kept)
        assert not any(o is kept for o in gc.get_objects())
        # A young collection freezes nothing more.
        frozen = gc.get_freeze_count()
        more = [{"site": i} for i in range(1_000)]
        gc.collect(0)
        assert gc.get_freeze_count() == frozen
        # After THAW_EVERY, a full collection thaws all: the next one walks everything once.
        now[0] = pauses.THAW_EVERY
        gc.collect()
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert gc.get_freeze_count() >= len(kept) + len(more)
    finally:
        gc.callbacks.remove(watch)
        gc.unfreeze()
