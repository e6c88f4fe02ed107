"""The change feed: every write says what it changed, in commit order, on both engines."""

from __future__ import annotations

import threading

import pytest

from edgefleet.hub.accounts import Accounts
from edgefleet.hub.store import Change, FeedKind, FellBehind, Store
from edgefleet.identity import Role
from edgefleet.identity.tokens import TokenKind
from edgefleet.model import StatusReport
from tests.factories import make_app, make_site


def kinds(changes: list[Change]) -> set[tuple[FeedKind, str, str]]:
    return {(c.kind, c.tenant, c.name) for c in changes}


def test_each_write_names_what_it_changed(store: Store) -> None:
    start = store.feed.head()
    store.objects.put(make_site("paris"))
    store.objects.put(make_app("hello"))
    site_and_app = store.feed.since(start)
    assert kinds(site_and_app) == {(FeedKind.SITE, "", "paris"), (FeedKind.APP, "demo", "hello")}
    # Revisions grow with each transaction, and the reader resumes after the last one it saw.
    assert site_and_app[0].revision < site_and_app[1].revision
    mark = site_and_app[-1].revision
    assert store.feed.since(mark) == []

    store.objects.put(make_site("paris"))  # unchanged: no write, nothing in the feed
    assert store.feed.since(mark) == []

    store.placement.write({("demo", "hello"): (1, {"paris": 1})})
    store.observed.save_report(
        StatusReport(site="paris", agent_version="t", observed_revision=1, apps=[])
    )
    store.objects.set_site_phases({"paris": ("Ready", None)})
    store.objects.set_app_placement_status({("demo", "hello"): (1, None)})
    assert kinds(store.feed.since(mark)) == {
        (FeedKind.PLACEMENT, "demo", "hello"),
        (FeedKind.REPLICAS, "", "paris"),
        (FeedKind.SITE, "", "paris"),
        (FeedKind.APP, "demo", "hello"),
    }
    mark = store.feed.since(mark)[-1].revision

    store.objects.delete_site("paris")
    # The site's assignments went with it: the app's placement changed too.
    assert kinds(store.feed.since(mark)) == {
        (FeedKind.SITE, "", "paris"),
        (FeedKind.REPLICAS, "", "paris"),
        (FeedKind.PLACEMENT, "demo", "hello"),
    }


def test_revoking_a_token_is_in_the_feed(store: Store) -> None:
    accounts = Accounts(store.engine)
    made, _ = accounts.create_token(
        kind=TokenKind.USER, name="ci", role=Role.ADMIN, ttl=None, created_by="test"
    )
    mark = store.feed.head()
    accounts.revoke(made.id)
    assert kinds(store.feed.since(mark)) == {(FeedKind.TOKEN, "", made.id)}
    mark = store.feed.head()
    accounts.revoke(made.id)  # revoked already: nothing new
    assert store.feed.since(mark) == []


def test_a_reader_behind_the_pruning_must_reload(store: Store) -> None:
    start = store.feed.head()
    for k in range(5):
        store.objects.put(make_site(f"site-{k}"))
    assert store.feed.prune(keep=2) == 3
    with pytest.raises(FellBehind):
        store.feed.since(start)
    assert [c.name for c in store.feed.since(store.feed.head() - 2)] == ["site-3", "site-4"]


def test_concurrent_writers_are_read_in_commit_order(store: Store) -> None:
    """However writers interleave, a reader following the feed sees every change once and never
    skips one that commits after it read: revisions are handed out in commit order."""
    seen: list[Change] = []
    mark = store.feed.head()
    done = threading.Event()

    def follow() -> None:
        nonlocal mark
        while True:
            finished = done.is_set()
            for change in store.feed.since(mark):
                seen.append(change)
                mark = change.revision
            if finished:
                return

    def write(prefix: str) -> None:
        for k in range(40):
            store.objects.put(make_site(f"{prefix}-{k}"))

    reader = threading.Thread(target=follow)
    reader.start()
    writers = [threading.Thread(target=write, args=(p,)) for p in ("a", "b", "c")]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    reader.join()
    names = [c.name for c in seen]
    assert sorted(names) == sorted(f"{p}-{k}" for p in "abc" for k in range(40))
    assert len(names) == len(set(names))
    assert [c.revision for c in seen] == sorted(c.revision for c in seen)
