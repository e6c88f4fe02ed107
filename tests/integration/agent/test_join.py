"""A site joins the fleet: the agent trades its join token with a small hub on loopback.

The hub here is a stand-in (FastAPI under uvicorn, in a thread) that answers the join as the
real one does and records the ``Authorization`` of every other call; the agent runs in-process
with a driver that runs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

from edgefleet.agent.identity import token_digest
from edgefleet.agent.service import Agent, AgentConfig, JoinRefused
from edgefleet.hub.tls import HubPki, init_pki
from edgefleet.identity.credentials import SigningKey, issue
from edgefleet.localfleet import free_port
from edgefleet.model import JoinRequest, JoinResponse
from edgefleet.waiting import wait_for
from tests.unit.agent.test_site_credentials import FakeDriver

SITE = "paris"


@dataclass
class FakeHub:
    """The hub's side of joining, and a recorder of the agent's other calls."""

    join_tokens: set[str]
    """Unspent join tokens for ``paris``."""
    key: SigningKey = field(default_factory=SigningKey.generate)
    refuse: str | None = None
    """When set, every call but the join is refused with 401 and this detail."""
    joins: list[str] = field(default_factory=list)
    """Join tokens offered, in order (good or not)."""
    attempts: list[str | None] = field(default_factory=list)
    """The join id of each join offered."""
    lose: int = 0
    """Answers to good joins to lose (502 after spending the token), as a proxy might."""
    spent_by: dict[str, str | None] = field(default_factory=dict)
    """Each spent token's join id: a retry of that join is answered again."""
    issued: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    """``Authorization`` of every call but the join."""

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/api/v1/agent/join")
        def join(
            body: JoinRequest, authorization: Annotated[str | None, Header()] = None
        ) -> Response:
            token = (authorization or "").removeprefix("Bearer ")
            self.joins.append(token)
            self.attempts.append(body.attempt)
            retry = body.attempt is not None and self.spent_by.get(token) == body.attempt
            if token not in self.join_tokens and not retry:
                return JSONResponse({"detail": "join token efj_… is spent or unknown"}, 401)
            if body.site != SITE:
                return JSONResponse({"detail": f"this join token is for site {SITE!r}"}, 403)
            self.join_tokens.discard(token)
            self.spent_by[token] = body.attempt
            now = datetime.now(UTC)
            credential = issue(
                self.key,
                subject=f"site:{SITE}",
                site=SITE,
                ttl=timedelta(days=365),
                now=now,
                jti=f"c-{len(self.issued) + 1}",
            )
            self.issued.append(credential)
            if self.lose:
                self.lose -= 1
                return JSONResponse({"detail": "bad gateway"}, 502)
            answer = JoinResponse(
                site=SITE,
                credential=credential,
                expires_at=now + timedelta(days=365),
                signing_keys=[self.key.public()],
            )
            return JSONResponse(answer.model_dump(mode="json", by_alias=True))

        @api.api_route("/api/v1/agent/sites/{site}/{what}", methods=["GET", "POST"])
        async def agent_call(site: str, what: str, request: Request) -> Response:
            self.calls.append(request.headers.get("authorization", ""))
            if self.refuse is not None:
                return JSONResponse({"detail": self.refuse}, 401)
            if what == "watch":
                # A long-poll with nothing new: wait a little, like the real one waits longer.
                await asyncio.sleep(min(float(request.query_params.get("timeout", 0)), 0.3))
                return Response(status_code=204)
            return JSONResponse({})

        return api

    def credential_used(self) -> str | None:
        """The last credential the hub issued, once a call carried it."""
        return (
            self.issued[-1] if self.issued and f"Bearer {self.issued[-1]}" in self.calls else None
        )


@contextlib.contextmanager
def serving(hub: FakeHub, port: int, tls: HubPki | None = None) -> Iterator[None]:
    """The fake hub on 127.0.0.1:``port`` (https with ``tls``), until the block ends."""
    config = uvicorn.Config(
        hub.app(),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls.server_cert) if tls else None,
        ssl_keyfile=str(tls.server_key) if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, what="the fake hub to listen")
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def agent_config(state_dir: Path, hub_port: int, **options: Any) -> AgentConfig:
    return AgentConfig(
        site=SITE,
        hub=f"http://127.0.0.1:{hub_port}",
        state_dir=state_dir,
        address="127.0.0.1",
        api_port=free_port(),
        dns_port=-1,
        heartbeat_interval=0.2,
        watch_timeout=1.0,
        **options,
    )


@contextlib.asynccontextmanager
async def running(config: AgentConfig) -> AsyncIterator[tuple[Agent, asyncio.Task[None]]]:
    agent = Agent(config, FakeDriver())
    task = asyncio.create_task(agent.run())
    try:
        yield agent, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], Any], *, what: str, timeout: float = 15.0) -> Any:
    """Wait, without blocking the loop, until ``condition()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    text = "\n".join(messages(caplog)) + caplog.text
    for secret in secrets:
        assert secret not in text


@pytest.fixture(autouse=True)
def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Every log line, debug included: none may show a token or a credential."""
    caplog.set_level(logging.DEBUG)


# -- joining --------------------------------------------------------------------------------------


def test_a_new_site_joins_keeps_its_credential_private_and_uses_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub, port = FakeHub({"efj_paris_1"}), free_port()
    config = agent_config(tmp_path / "agent", port, join_token="efj_paris_1")

    async def scenario() -> str:
        async with running(config) as (agent, _):
            credential: str = await until(hub.credential_used, what="a call with the credential")
            base = f"http://127.0.0.1:{config.api_port}"
            own = issue(
                hub.key,
                subject="hub",
                site=None,
                ttl=timedelta(minutes=5),
                now=datetime.now(UTC),
                jti="hub-1",
            )
            async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
                # The agent checks with the keys the join brought: the hub's credential holds.
                logs = await client.get(
                    "/_edgefleet/logs/demo/hello", headers={"Authorization": f"Bearer {own}"}
                )
                assert (logs.status_code, logs.text) == (200, "log of demo/hello\n")
                refused = await client.get(
                    "/",
                    headers={"Host": "hello.demo.edge.internal", "X-Edgefleet-Hops": "1"},
                )
                assert refused.status_code == 403
                assert refused.text == "site paris refused a spilled request: no site credential\n"
                accepted = await client.get(
                    "/",
                    headers={
                        "Host": "nope.demo.edge.internal",
                        "X-Edgefleet-Hops": "1",
                        "X-Edgefleet-Site-Credential": credential,
                    },
                )
                assert accepted.status_code == 404  # checked, and no such app here
            assert agent.credential == credential
            return credential

    with serving(hub, port):
        credential = asyncio.run(scenario())
    assert hub.joins == ["efj_paris_1"]
    path = tmp_path / "agent" / "credential.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["credential"] == credential
    assert saved["joinTokenSha256"] == token_digest("efj_paris_1")
    assert [k["kid"] for k in saved["signingKeys"]] == [hub.key.kid]
    assert "efj_paris_1" not in path.read_text()
    assert any("site paris joined the fleet" in m for m in messages(caplog))
    assert_no_secret_logged(caplog, "efj_paris_1", credential)


def test_a_restart_reuses_the_credential_and_a_new_join_token_joins_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub, port = FakeHub({"efj_paris_1", "efj_paris_2"}), free_port()
    state = tmp_path / "agent"

    async def run_until_used(join_token: str | None, joins: int) -> str:
        config = agent_config(state, port, join_token=join_token)
        hub.calls.clear()
        async with running(config):
            # A site that had a credential re-joins in the background and keeps using the old
            # one meanwhile: wait for the credential of the ``joins``-th join to be used.
            credential: str = await until(
                lambda: len(hub.issued) == joins and hub.credential_used(),
                what="a call with the credential",
            )
            # Past a heartbeat or two: no late join either.
            await until(lambda: len(hub.calls) >= 4, what="a few calls to the hub")
        assert len(hub.joins) == joins
        return credential

    async def scenario() -> list[str]:
        return [
            await run_until_used("efj_paris_1", joins=1),
            await run_until_used("efj_paris_1", joins=1),  # the same token: used already
            await run_until_used(None, joins=1),  # none given: the saved credential
            await run_until_used("efj_paris_2", joins=2),  # a new token: joins again
        ]

    with serving(hub, port):
        first, again, without, second = asyncio.run(scenario())
    assert first == again == without != second
    assert hub.issued == [first, second]
    saved = json.loads((state / "credential.json").read_text())
    assert saved["credential"] == second
    assert saved["joinTokenSha256"] == token_digest("efj_paris_2")
    assert_no_secret_logged(caplog, "efj_paris_1", "efj_paris_2", first, second)


def test_a_refused_join_without_a_credential_stops_the_agent_with_the_hubs_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub, port = FakeHub(set()), free_port()
    config = agent_config(tmp_path / "agent", port, join_token="efj_stale")

    async def scenario() -> None:
        with pytest.raises(JoinRefused) as refused:
            await asyncio.wait_for(Agent(config, FakeDriver()).run(), 15)
        reason = str(refused.value)
        assert "site paris cannot join the fleet: the hub refused the join" in reason
        assert "HTTP 401: join token efj_… is spent or unknown" in reason
        assert "edgefleet site join-token paris" in reason

    with serving(hub, port):
        asyncio.run(scenario())
    assert hub.calls == []  # nothing else was tried with no credential
    assert not (tmp_path / "agent" / "credential.json").exists()
    assert_no_secret_logged(caplog, "efj_stale")


def test_the_agent_command_exits_non_zero_on_a_refused_join(tmp_path: Path) -> None:
    hub, port = FakeHub(set()), free_port()
    command = [
        sys.executable,
        "-m",
        "edgefleet",
        "agent",
        "--site",
        SITE,
        "--hub",
        f"http://127.0.0.1:{port}",
        "--state-dir",
        str(tmp_path / "agent"),
        "--address",
        "127.0.0.1",
        "--api-port",
        str(free_port()),
        "--dns-port",
        "-1",
    ]
    env = {**os.environ, "EDGEFLEET_JOIN_TOKEN": "efj_from_the_environment"}
    env.pop("EDGEFLEET_TOKEN", None)
    with serving(hub, port):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot join the fleet" in done.stderr
    assert "join token efj_… is spent or unknown" in done.stderr
    assert hub.joins == ["efj_from_the_environment"]  # read from the environment
    assert "efj_from_the_environment" not in done.stderr + done.stdout


def test_a_refused_new_join_keeps_the_earlier_credential(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub, port = FakeHub({"efj_paris_1"}), free_port()
    state = tmp_path / "agent"

    async def scenario() -> tuple[str, str]:
        async with running(agent_config(state, port, join_token="efj_paris_1")):
            first: str = await until(hub.credential_used, what="the first credential")
        hub.calls.clear()
        async with running(agent_config(state, port, join_token="efj_typo")) as (_, task):
            used: str = await until(hub.credential_used, what="the credential after a refusal")
            assert not task.done()
        return first, used

    with serving(hub, port):
        first, used = asyncio.run(scenario())
    assert first == used
    assert hub.joins == ["efj_paris_1", "efj_typo"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("site paris could not join again" in e and "going on with" in e for e in errors)
    assert_no_secret_logged(caplog, "efj_paris_1", "efj_typo", first)


def test_the_agent_retries_the_join_until_the_hub_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub, port = FakeHub({"efj_paris_1"}), free_port()
    config = agent_config(tmp_path / "agent", port, join_token="efj_paris_1")

    async def scenario() -> None:
        async with running(config) as (agent, task):
            await until(
                lambda: any("joining the fleet failed" in m for m in messages(caplog)),
                what="a failed join",
            )
            # Meanwhile the site serves (health answers) and nothing else calls the hub.
            async with httpx.AsyncClient(trust_env=False) as client:
                health = await client.get(f"http://127.0.0.1:{config.api_port}/_edgefleet/healthz")
                assert health.status_code == 200
            assert agent.credential is None and not task.done()
            with serving(hub, port):
                await until(hub.credential_used, what="the join once the hub is up")

    asyncio.run(scenario())
    assert hub.joins == ["efj_paris_1"]
    assert_no_secret_logged(caplog, "efj_paris_1", *hub.issued)


def test_a_join_whose_answer_is_lost_is_tried_again_as_the_same_join(tmp_path: Path) -> None:
    hub, port = FakeHub({"efj_paris_1"}, lose=1), free_port()
    config = agent_config(tmp_path / "agent", port, join_token="efj_paris_1")

    async def scenario() -> None:
        with serving(hub, port):
            async with running(config):
                await until(hub.credential_used, what="the join after the lost answer")

    asyncio.run(scenario())
    assert hub.joins == ["efj_paris_1", "efj_paris_1"]
    first, second = hub.attempts
    assert first is not None and len(first) >= 16 and second == first
    assert len(hub.issued) == 2


def test_a_refused_credential_is_one_error_saying_what_to_do_and_the_site_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub, port = FakeHub({"efj_paris_1"}), free_port()
    config = agent_config(tmp_path / "agent", port, join_token="efj_paris_1")

    async def scenario() -> None:
        async with running(config) as (_, task):
            await until(hub.credential_used, what="a call with the credential")
            hub.refuse = "site credential c-1 is revoked"
            seen = len(hub.calls)
            await until(lambda: len(hub.calls) >= seen + 6, what="refused calls")
            assert not task.done()
            async with httpx.AsyncClient(trust_env=False) as client:
                health = await client.get(f"http://127.0.0.1:{config.api_port}/_edgefleet/healthz")
                assert health.json()["ready"] == {"demo/hello": 1}  # replicas run on
            hub.refuse = None  # say, the operator fixed it on the hub
            await until(
                lambda: "the hub takes this site's credential again" in messages(caplog),
                what="the credential taken again",
            )

    with serving(hub, port):
        asyncio.run(scenario())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "the hub refused this site's credential (HTTP 401: site credential c-1 is revoked): "
        "make a new join token with `edgefleet site join-token paris` and restart the agent "
        "with it"
    ]
    assert_no_secret_logged(caplog, "efj_paris_1", *hub.issued)


def test_without_credential_or_join_token_the_configured_token_is_used(tmp_path: Path) -> None:
    hub, port = FakeHub(set()), free_port()
    config = agent_config(tmp_path / "agent", port, token="efu_operator")

    async def scenario() -> None:
        async with running(config):
            await until(lambda: "Bearer efu_operator" in hub.calls, what="a call with the token")

    with serving(hub, port):
        asyncio.run(scenario())
    assert hub.joins == []
    assert set(hub.calls) == {"Bearer efu_operator"}


def test_the_agent_checks_an_https_hub_with_the_given_ca(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub, port = FakeHub({"efj_paris_1"}), free_port()
    init_pki(tmp_path / "tls", ["127.0.0.1"])
    tls = HubPki(tmp_path / "tls")
    https = f"https://127.0.0.1:{port}"

    async def scenario() -> None:
        # Not trusting the fleet's CA: the hub's certificate is refused, and the join waits.
        unknown = agent_config(tmp_path / "a", port, join_token="efj_paris_1")
        async with running(replace(unknown, hub=https)):
            await until(
                lambda: any(
                    "joining the fleet failed" in m and "CERTIFICATE_VERIFY_FAILED" in m
                    for m in messages(caplog)
                ),
                what="a join refused for the certificate",
            )
        assert hub.joins == []
        trusted = agent_config(tmp_path / "b", port, join_token="efj_paris_1", hub_ca=tls.ca_cert)
        async with running(replace(trusted, hub=https)):
            await until(hub.credential_used, what="a join over https")

    with serving(hub, port, tls):
        asyncio.run(scenario())


def test_an_unreadable_hub_ca_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--hub-ca .*missing\.pem: not a readable CA bundle"):
        Agent(agent_config(tmp_path, 1, hub_ca=tmp_path / "missing.pem"), FakeDriver())
