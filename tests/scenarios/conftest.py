"""Fixtures of the fault scenarios."""

from __future__ import annotations

import pytest

from tests.scenarios.figures import Figures, from_environment


@pytest.fixture
def figures() -> Figures:
    """Where a scenario reports what it measured."""
    return from_environment()
