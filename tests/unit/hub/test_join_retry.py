"""A spent join token lets the join that spent it try again, for a while, and nobody else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.hub.accounts import JOIN_RETRY_WINDOW, Refused, TokenRecord, attempt_digest, current
from edgefleet.identity import Role
from edgefleet.identity.tokens import TokenKind

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
MINE = "m" * 24


def spent(*, ago: timedelta, expires_in: timedelta = timedelta(hours=1)) -> TokenRecord:
    return TokenRecord(
        id="j1",
        kind=TokenKind.JOIN,
        name="join:paris",
        role=Role.SITE,
        tenants=(),
        site="paris",
        created_at=NOW - timedelta(hours=1),
        created_by="admin",
        expires_at=NOW + expires_in,
        revoked_at=None,
        used_at=NOW - ago,
        used_by=attempt_digest(MINE),
        credential="c1",
    )


def test_the_same_join_may_try_again_within_the_window_only() -> None:
    assert current(spent(ago=timedelta(seconds=30)), NOW, attempt=MINE).id == "j1"
    assert current(spent(ago=JOIN_RETRY_WINDOW), NOW, attempt=MINE).id == "j1"
    late = spent(ago=JOIN_RETRY_WINDOW + timedelta(seconds=1))
    with pytest.raises(Refused, match="used already"):
        current(late, NOW, attempt=MINE)


def test_another_join_or_an_expired_token_is_refused() -> None:
    with pytest.raises(Refused, match="used already"):
        current(spent(ago=timedelta(seconds=30)), NOW, attempt="o" * 24)
    with pytest.raises(Refused, match="used already"):
        current(spent(ago=timedelta(seconds=30)), NOW)
    with pytest.raises(Refused):
        current(
            spent(ago=timedelta(seconds=30), expires_in=-timedelta(seconds=1)), NOW, attempt=MINE
        )
