"""Fixtures shared by every test: stores on SQLite and on a real PostgreSQL, and fleet helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from edgefleet.hub.store import Store
from edgefleet.localfleet import LocalFleet, free_port, scratch_database

POSTGRES_ENV = "EDGEFLEET_TEST_POSTGRES"

# CI runs the same examples every time (a red build must be reproducible); developers' runs
# explore new ones.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _postgres_admin_url() -> str | None:
    return os.environ.get(POSTGRES_ENV)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the test server; dropped afterwards.

    The server comes from ``tools/postgres.sh start`` (``make test`` runs it). Without
    EDGEFLEET_TEST_POSTGRES the test is skipped; with it set, an unreachable server is a failure.
    """
    base = _postgres_admin_url()
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set: run 'make test' (it starts PostgreSQL)")
    with scratch_database(base) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL of each supported engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated, empty store on each engine."""
    s = Store(db_url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def fleet(db_url: str, tmp_path: Path) -> Iterator[LocalFleet]:
    """A real hub process on a free port, on each database engine; agents are added by tests."""
    local = LocalFleet(
        workdir=tmp_path / "fleet", hub_port=free_port(), db=db_url, dns_port=free_port()
    )
    with local.running():
        local.start_hub()
        yield local


@pytest.fixture
def sqlite_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """A real hub process on SQLite only (for tests that do not depend on the engine)."""
    local = LocalFleet(workdir=tmp_path / "fleet", hub_port=free_port(), dns_port=free_port())
    with local.running():
        local.start_hub()
        yield local
