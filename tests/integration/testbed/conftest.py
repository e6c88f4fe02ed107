"""Markers of the test bed's integration tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: creates network namespaces and TUN devices (needs root)"
    )
