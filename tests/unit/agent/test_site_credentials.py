"""Site credentials at a site: spilled requests and the agent's API are refused without one.

The ingress and the local API run as ASGI apps over httpx's fake network, as in
``test_ingress``; the join itself, against a hub on loopback, is in
``tests/integration/agent/test_join.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.agent.identity import (
    CredentialFile,
    SavedCredential,
    bearer,
    join_needed,
    peer_keys,
    token_digest,
)
from edgefleet.agent.ingress import LocalReplicas, Peer, spilled_refusal
from edgefleet.agent.local_api import OffloadRequest, local_api
from edgefleet.agent.service import Agent, AgentConfig
from edgefleet.agent.upstream import HttpxUpstream
from edgefleet.identity.credentials import Keyring, SigningKey, issue
from edgefleet.model import AppAssignment, ReplicaState, RouteSite, RoutingTable
from tests.unit.agent.test_activator import HOST, KEY, LYON, World, assignment, call
from tests.unit.agent.test_ingress import replica

HUB_KEY = SigningKey.generate()
STRANGER = SigningKey.generate()
HOUR = timedelta(hours=1)


def credential(
    site: str | None = "lyon",
    *,
    key: SigningKey = HUB_KEY,
    jti: str | None = None,
    issued: datetime | None = None,
) -> str:
    """A credential of ``site`` (None: the hub's own), valid for an hour from ``issued``."""
    return issue(
        key,
        subject=f"site:{site}" if site else "hub",
        site=site,
        ttl=HOUR,
        now=issued or datetime.now(UTC),
        jti=jti or f"c-{site or 'hub'}",
    )


RING = Keyring([HUB_KEY.public()], revoked=["c-revoked"])


def check(token: str) -> Any:
    return RING.verify(token, now=datetime.now(UTC))


def spilled(credential: str | None = None, **headers: str) -> dict[str, str]:
    """Headers of a request a neighbour passed on."""
    out = {"X-Edgefleet-Hops": "1", "X-Edgefleet-Origin": "nice", **headers}
    if credential is not None:
        out["X-Edgefleet-Site-Credential"] = credential
    return out


# -- the ingress ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (spilled(), "no site credential"),
        (spilled(""), "no site credential"),
        ({"X-Edgefleet-Origin": "nice"}, "no site credential"),  # origin alone says spilled too
        ({"X-Edgefleet-Hops": "0"}, "no site credential"),
        (spilled("not-a-jwt"), "site credential malformed: not a signed JWT"),
        (
            spilled(credential(key=STRANGER)),
            f"site credential signed by an unknown key kid={STRANGER.kid}",
        ),
        (
            spilled(credential(issued=datetime.now(UTC) - 2 * HOUR)),
            "site credential expired at ",
        ),
        (spilled(credential(jti="c-revoked")), "site credential revoked (jti=c-revoked)"),
        (spilled(credential(None)), "the credential is not a site's"),
    ],
)
def test_a_spilled_request_without_a_good_site_credential_is_refused(
    headers: dict[str, str], reason: str
) -> None:
    world = World([replica(0)])
    reply = call(world, headers=headers, verify_credential=check)
    assert reply.status_code == 403
    assert reply.text.startswith(f"site paris refused a spilled request: {reason}")
    assert world.seen == []  # no replica saw it
    assert world.demand == []  # and it is nobody's demand


def test_a_spilled_request_with_a_site_credential_is_served_without_the_header() -> None:
    world = World([replica(0)])
    reply = call(world, headers=spilled(credential("lyon")), verify_credential=check)
    assert reply.status_code == 200
    sent = world.seen[0]
    assert sent.url.port == 20000
    assert not any(h.startswith("x-edgefleet") for h in sent.headers)
    assert world.demand[0][1] == "nice"  # the origin a checked neighbour gave


def test_a_client_never_passes_a_credential_header_to_an_app() -> None:
    world = World([replica(0)])
    reply = call(world, headers={"X-Edgefleet-Site-Credential": "guess"}, verify_credential=check)
    assert reply.status_code == 200  # not spilled: nothing to check
    assert "x-edgefleet-site-credential" not in world.seen[0].headers


def spill_once(world: World, headers: Mapping[str, str], **options: Any) -> httpx.Response:
    """One request at a site whose only replica is full, so that it goes to a neighbour."""

    async def go() -> httpx.Response:
        ingress, client = world.build(**options)
        ingress.outstanding["demo-hello-0"] = 4
        async with client:
            reply = await client.get("/", headers={"Host": HOST, **headers})
        await ingress.aclose()
        return reply

    return asyncio.run(go())


def test_spilling_shows_this_sites_credential() -> None:
    world = World([replica(0)])
    world.peers = [LYON]
    reply = spill_once(world, {}, credential=lambda: "paris-credential")
    assert reply.status_code == 200
    assert world.seen[0].url.host == LYON.address
    assert world.seen[0].headers["x-edgefleet-site-credential"] == "paris-credential"
    # Without a credential of its own, the site sends none (its neighbours will refuse).
    world = World([replica(0)])
    world.peers = [LYON]
    assert spill_once(world, {}).status_code == 200
    assert "x-edgefleet-site-credential" not in world.seen[0].headers


def test_a_site_passing_a_request_further_shows_its_own_credential_not_the_senders() -> None:
    world = World([replica(0)])
    world.peers = [Peer(site="geneva", address="127.0.82.1", port=8080)]
    lyon = credential("lyon")
    reply = spill_once(
        world,
        spilled(lyon),
        credential=lambda: "paris-credential",
        verify_credential=check,
        hop_limit=2,
    )
    assert reply.status_code == 200
    sent = world.seen[0]
    assert sent.url.host == "127.0.82.1"
    assert sent.headers["x-edgefleet-site-credential"] == "paris-credential"
    assert sent.headers["x-edgefleet-hops"] == "2"
    assert lyon not in str(sent.headers.raw)


def test_spilled_refusal_decides_on_the_claims() -> None:
    assert spilled_refusal(credential("lyon"), check) is None
    assert spilled_refusal(None, check) == "no site credential"
    assert spilled_refusal(credential(None), check) == "the credential is not a site's"


# -- the agent's API --------------------------------------------------------------------------


class FakeDriver:
    """A driver that runs nothing: one ready replica of demo/hello, logs on demand."""

    def __init__(self, *, replicas: bool = True) -> None:
        self.converged: list[list[AppAssignment]] = []
        self.replicas = replicas

    def start(self, on_change: Callable[[], None]) -> None:
        pass

    def converge(self, assignments: Sequence[AppAssignment]) -> None:
        self.converged.append(list(assignments))

    def observe(self) -> dict[str, list[ReplicaState]]:
        return {KEY: [replica(0)]} if self.replicas else {}

    def problem(self) -> str | None:
        return None

    def logs(self, tenant: str, app: str, *, replica: str | None = None, tail: int = 100) -> str:
        return f"log of {tenant}/{app}\n"

    def close(self) -> None:
        pass

    def stop_all(self) -> None:
        pass


def api_calls(
    calls: Sequence[tuple[str, str, dict[str, str], dict[str, Any] | None]],
    offload: Callable[[OffloadRequest], str | None] | None = None,
) -> list[httpx.Response]:
    driver = FakeDriver()
    api = local_api(
        driver,
        "paris",
        LocalReplicas(driver.observe),
        offload,
        verify_credential=check,
    )

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.80.1") as client:
            return [
                await client.request(method, path, headers=headers, json=body)
                for method, path, headers, body in calls
            ]

    return asyncio.run(go())


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_stays_open_and_replicas_and_logs_need_a_credential() -> None:
    paths = ["/_edgefleet/replicas", "/_edgefleet/logs/demo/hello"]
    calls: list[tuple[str, str, dict[str, str], dict[str, Any] | None]] = [
        ("GET", "/_edgefleet/healthz", {}, None)
    ]
    for path in paths:
        calls += [
            ("GET", path, {}, None),
            ("GET", path, {"Authorization": "Basic dXNlcjpwYXNz"}, None),
            ("GET", path, auth(credential(key=STRANGER)), None),
            ("GET", path, auth(credential("lyon", jti="c-revoked")), None),
            ("GET", path, auth(credential("lyon")), None),
            ("GET", path, auth(credential(None)), None),
        ]
    health, *rest = api_calls(calls)
    assert health.status_code == 200 and health.json()["ready"] == {KEY: 1}
    for start in (0, 6):
        none, basic, stranger, revoked, site, hub = rest[start : start + 6]
        for refused in (none, basic):
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "answers only a site or hub credential" in refused.json()["detail"]
        assert stranger.status_code == 401
        assert stranger.json()["detail"] == (
            f"site paris refused the credential: signed by an unknown key kid={STRANGER.kid}"
        )
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
        assert site.status_code == 200 and hub.status_code == 200
    assert rest[4].json()[KEY][0]["id"] == "demo-hello-0"
    assert rest[10].text == "log of demo/hello\n"


def test_an_offload_needs_the_credential_of_the_site_asking() -> None:
    asked: list[str] = []

    def offload(request: OffloadRequest) -> str | None:
        asked.append(request.requester)
        return None

    def body(requester: str) -> dict[str, Any]:
        return OffloadRequest(requester=requester, assignment=assignment()).model_dump(
            mode="json", by_alias=True
        )

    path = "/_edgefleet/offload"
    none, hub, other, own = api_calls(
        [
            ("POST", path, {}, body("lyon")),
            ("POST", path, auth(credential(None)), body("lyon")),
            ("POST", path, auth(credential("nice")), body("lyon")),
            ("POST", path, auth(credential("lyon")), body("lyon")),
        ],
        offload,
    )
    assert none.status_code == 401
    assert hub.status_code == 403 and "from sites, not the hub" in hub.json()["detail"]
    assert other.status_code == 403
    assert other.json()["detail"] == (
        "the credential of site nice cannot ask for an offload on behalf of site lyon"
    )
    assert own.status_code == 202 and own.json() == {"status": "accepted", "site": "paris"}
    assert asked == ["lyon"]  # only the one that held reached the agent


# -- the agent wires it -----------------------------------------------------------------------


def saved(token: str = "efj_1", keys: SigningKey = HUB_KEY) -> SavedCredential:
    return SavedCredential(
        credential=credential("paris"),
        expires_at=datetime.now(UTC) + HOUR,
        signing_keys=[keys.public()],
        join_token_sha256=token_digest(token),
    )


def test_the_agent_checks_peers_with_the_newest_keys_and_revocations(tmp_path: Path) -> None:
    config = AgentConfig(site="paris", state_dir=tmp_path, dns_port=-1)
    agent = Agent(config, FakeDriver(replicas=False))
    other_hub = SigningKey.generate()

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=agent.ingress)
        codes = []
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.80.1") as client:

            async def status(**headers: str) -> int:
                reply = await client.get("/", headers={"Host": HOST, **headers})
                return reply.status_code

            lyon = credential("lyon")
            codes.append(await status(**spilled(lyon)))  # no keys yet: nothing holds
            agent._use_credential(saved())  # the keys given at join
            codes.append(await status(**spilled(lyon)))
            # A routing table's keys win over those of the join.
            agent._take_trust(RoutingTable(version="1", signing_keys=[other_hub.public()]))
            codes.append(await status(**spilled(lyon)))
            codes.append(await status(**spilled(credential("lyon", key=other_hub))))
            agent._take_trust(
                RoutingTable(
                    version="2",
                    signing_keys=[other_hub.public(), HUB_KEY.public()],
                    revoked_credentials=["c-lyon"],
                )
            )
            codes.append(await status(**spilled(lyon)))
            replicas = await client.get("/_edgefleet/replicas")
            codes.append(replicas.status_code)
            replicas = await client.get("/_edgefleet/replicas", headers=auth(credential(None)))
            codes.append(replicas.status_code)
        await agent.hub.aclose()
        await agent._peer_http.aclose()
        await agent.ingress.aclose()
        return codes

    # 404: the credential held, and the app has no replica here.
    assert asyncio.run(go()) == [403, 404, 403, 404, 403, 401, 200]


def test_an_agent_without_a_credential_spills_to_nobody(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent(AgentConfig(site="paris", state_dir=tmp_path, dns_port=-1), FakeDriver())
    agent.placed = {}
    assert agent.spill_peers(KEY) == []
    assert agent.spill_peers(KEY) == []
    warnings = [r for r in caplog.records if "has no credential" in r.getMessage()]
    assert len(warnings) == 1  # said once
    assert "EDGEFLEET_JOIN_TOKEN" in warnings[0].getMessage()
    asyncio.run(agent.hub.aclose())
    asyncio.run(agent._peer_http.aclose())


def test_asking_a_neighbour_for_an_offload_shows_this_sites_credential(tmp_path: Path) -> None:
    agent = Agent(AgentConfig(site="paris", state_dir=tmp_path, dns_port=-1), FakeDriver())
    agent.refresh_zone(
        RoutingTable(
            version="1",
            sites=[
                RouteSite(name=name, region="eu", zone="a", lat=lat, lon=2.0, ip=ip)
                for name, lat, ip in [("paris", 48.8, "127.0.80.1"), ("lyon", 45.7, "127.0.81.1")]
            ],
        )
    )
    asked: list[httpx.Request] = []

    def neighbour(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        accepted = json.dumps({"status": "accepted", "site": "lyon"}).encode()
        return httpx.Response(202, stream=httpx.ByteStream(accepted))

    async def go() -> None:
        await agent._peer_http.aclose()
        agent._peer_http = HttpxUpstream(httpx.MockTransport(neighbour))
        await agent._ask_neighbours(assignment())  # no credential: nobody is asked
        assert asked == []
        agent._use_credential(saved())
        await agent._ask_neighbours(assignment())
        await agent.hub.aclose()
        await agent._peer_http.aclose()
        await agent.ingress.aclose()

    asyncio.run(go())
    assert [str(r.url) for r in asked] == ["http://127.0.81.1:8080/_edgefleet/offload"]
    assert asked[0].headers["authorization"] == f"Bearer {agent.credential}"
    assert json.loads(asked[0].content)["requester"] == "paris"


# -- the pieces of joining --------------------------------------------------------------------


def test_join_is_needed_for_a_new_state_dir_or_a_new_token() -> None:
    assert not join_needed(None, None)
    assert not join_needed(None, "")
    assert join_needed(None, "efj_1")
    assert not join_needed(saved("efj_1"), "efj_1")  # used already: keep the credential
    assert join_needed(saved("efj_1"), "efj_2")
    assert not join_needed(saved("efj_1"), None)


def test_peer_keys_come_from_the_table_else_from_the_join() -> None:
    table, joined = [STRANGER.public()], [HUB_KEY.public()]
    assert peer_keys(table, joined) == table
    assert peer_keys([], joined) == joined
    assert peer_keys([], []) == []


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
    ],
)
def test_bearer(value: str | None, token: str | None) -> None:
    assert bearer(value) == token


def test_the_credential_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    store = CredentialFile(tmp_path / "state" / "credential.json")
    first = saved("efj_1")
    # A temp file left by a crash, readable by all, must not make the credential readable.
    store.path.parent.mkdir()
    leftover = store.path.with_name(".credential.json.tmp")
    leftover.write_text("{}")
    leftover.chmod(0o644)
    store.save(first)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert not leftover.exists()
    on_disk = json.loads(store.path.read_text())
    assert set(on_disk) == {"credential", "expiresAt", "signingKeys", "joinTokenSha256"}
    assert on_disk["joinTokenSha256"] == token_digest("efj_1")
    assert "efj_1" not in store.path.read_text()  # the token itself is never kept
    assert store.load() == first
    second = saved("efj_2")
    store.save(second)
    assert store.load() == second
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_an_unreadable_credential_file_is_ignored_without_showing_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CredentialFile(tmp_path / "credential.json")
    assert store.load() is None
    secret = credential("paris")
    store.path.write_text(json.dumps({"credential": secret, "expiresAt": "someday"}))
    with caplog.at_level(logging.DEBUG):
        assert store.load() is None
    assert "ignoring unreadable site credential" in caplog.text
    assert "expiresAt" in caplog.text  # what is wrong, where
    assert secret not in caplog.text
    assert repr(saved()).count("credential=") == 0  # not in a repr either
