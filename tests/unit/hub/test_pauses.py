"""The hub logs garbage collections long enough to stall it."""

from __future__ import annotations

import gc
import logging

import pytest

from edgefleet.hub import pauses


def test_slow_collections_are_logged_and_fast_ones_are_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = pauses.watch()
    try:
        assert pauses.watch() is watch  # one per process
        watch.slow = 60.0
        with caplog.at_level(logging.INFO, logger="edgefleet.hub.pauses"):
            gc.collect()
        assert not caplog.records
        assert watch.longest > 0.0
        watch.slow = 0.0
        with caplog.at_level(logging.INFO, logger="edgefleet.hub.pauses"):
            gc.collect()
        assert watch.slow_count >= 1
        assert "(generation 2) stalled the hub" in caplog.records[-1].getMessage()
    finally:
        gc.callbacks.remove(watch)


def test_what_is_kept_loaded_is_left_out_of_later_collections() -> None:
    kept = [{"site": i} for i in range(10_000)]
    try:
        pauses.keep_loaded()
        assert gc.get_freeze_count() >= len(kept)
        assert not any(o is kept for o in gc.get_objects())
    finally:
        gc.unfreeze()
