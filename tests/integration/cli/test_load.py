"""``edgefleet load`` for real: the engine against the project's DNS server and the sample app on
loopback, and the command against a hub, an agent and a hello replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import httpx
import pytest
import typer

from edgefleet.cli.demo import ask_dns
from edgefleet.cli.load import load_command, parse_duration, tick_line
from edgefleet.dns import DnsServer, Responder, StaticZone, Target
from edgefleet.loadgen import (
    CONNECT_ERROR,
    NO_DNS_ANSWER,
    ConnectFailed,
    ConnectionLost,
    HttpPool,
    LoadError,
    LoadSpec,
    LoadSummary,
    Tick,
    choose_source,
    run_load,
)
from edgefleet.localfleet import LocalFleet, free_port, wait_for
from edgefleet.samples.hello import WORK_MAX_MS, work_ms
from tests.factories import make_app, make_site
from tests.support.dns_server import ServerThread

HOST = "127.0.0.1"
CLIENTS = "127.1.151.0/24"
"""Where the clients of site paris sit: the zone answers them paris (where hello is) first."""
DEADLINE = 15.0


@dataclass
class Hello:
    """A sample app process on loopback; what it logs (a line per request) goes to a file."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@contextlib.contextmanager
def hello_process(log: Path, **env: str) -> Iterator[Hello]:
    """``edgefleet-hello`` on a free port of 127.0.0.1, as the process driver starts it."""
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "edgefleet.samples.hello"],
            env={**os.environ, "HOST": HOST, "PORT": str(port), "EDGEFLEET_SITE": "paris", **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    hello = Hello(process, port, log)
    try:
        wait_for(
            lambda: httpx.get(f"{hello.url}/healthz", timeout=1).status_code == 200,
            timeout=DEADLINE,
            what="hello to answer",
        )
        yield hello
    finally:
        process.terminate()
        process.wait(DEADLINE)


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hello]:
    with hello_process(tmp_path_factory.mktemp("hello") / "hello.log") as running:
        yield running


@pytest.fixture(scope="module")
def edge_dns() -> Iterator[int]:
    """A DNS server answering, with a 1 s TTL: hello with paris (127.0.0.1, where hello listens)
    first for clients in CLIENTS, and lyon (127.0.0.2, nothing there) first for anyone else;
    idle with no address; nothing else exists."""
    paris = Target("paris", HOST, None, 0)
    lyon = Target("lyon", "127.0.0.2", None, 0)
    zone = StaticZone(
        nameserver=Target("ns1", HOST, None, 53),
        apps={("demo", "hello"): [lyon, paris], ("demo", "idle"): []},
        sites=[paris, lyon],
        networks={IPv4Network(CLIENTS): "paris"},
    )
    with ServerThread(DnsServer(Responder(zone, ttl=1), HOST, 0)) as server:
        yield server.port


def spec(dns_port: int, hello: Hello, **options: object) -> LoadSpec:
    values: dict[str, object] = {
        "app": "hello",
        "rps": 50,
        "duration": 2.0,
        "dns_server": HOST,
        "dns_port": dns_port,
        "http_port": hello.port,
        "source_address": choose_source(["10.151.0.0/16", CLIENTS]),
        "timeout": 5.0,
        **options,
    }
    return LoadSpec(**values)  # type: ignore[arg-type]


def load(load_spec: LoadSpec) -> tuple[LoadSummary, list[Tick]]:
    ticks: list[Tick] = []
    return asyncio.run(run_load(load_spec, on_second=ticks.append)), ticks


def test_load_from_a_site_network_reaches_the_site_it_is_sent_to(
    edge_dns: int, hello: Hello
) -> None:
    load_spec = spec(edge_dns, hello)
    assert load_spec.source_address == "127.1.151.1"
    summary, ticks = load(load_spec)

    # 50/s for 2 s: exactly 100 started (the schedule catches up if the machine stalls).
    assert (summary.scheduled, summary.sent, summary.dropped) == (100, 100, 0)
    assert summary.ok == 100, summary.failed
    assert (summary.failed, summary.unfinished) == ({}, 0)
    assert summary.served_by == {"paris": 100}
    latency = summary.latency
    assert latency.count == 100
    assert latency.p50_ms is not None and latency.p99_ms is not None
    assert 0 < latency.min_ms <= latency.p50_ms <= latency.p99_ms <= latency.max_ms  # type: ignore[operator]
    # The DNS question came from the site's network (else lyon, where nothing listens, would be
    # first), and was asked again as the 1 s TTL ran out.
    assert summary.last_answer == (HOST, "127.0.0.2")
    assert summary.dns_queries >= 2
    # So did the HTTP requests: hello logs the client address of each.
    assert f"{load_spec.source_address} GET / 200" in hello.log.read_text()
    # The per-second records add up to the summary.
    assert len(ticks) >= 2 and ticks[0].second == 1 and ticks[0].span == 1.0
    assert sum(t.sent for t in ticks) == 100 and sum(t.ok for t in ticks) == 100
    assert sum(t.served_by.get("paris", 0) for t in ticks) == 100
    assert all(t.p50_ms is not None for t in ticks if t.ok)
    data = summary.to_json()
    assert (data["name"], data["source"], data["servedBy"]) == (
        "hello.demo.edge.internal",
        "127.1.151.1",
        {"paris": 100},
    )


def test_without_the_site_source_the_dns_sends_clients_elsewhere(
    edge_dns: int, hello: Hello
) -> None:
    first_only = spec(edge_dns, hello, source_address=None, rps=10, duration=1.0, failover=False)
    summary, _ = load(first_only)
    assert summary.last_answer == ("127.0.0.2", HOST)
    assert summary.failed == {CONNECT_ERROR: 10} and summary.ok == 0
    # As browsers do, a client tries the next address when the first takes no connection.
    summary, _ = load(spec(edge_dns, hello, source_address=None, rps=10, duration=1.0))
    assert summary.ok == 10 and not summary.failed


def test_failures_by_status_and_work_reach_the_app(edge_dns: int, hello: Hello) -> None:
    missing, _ = load(spec(edge_dns, hello, rps=10, duration=1.0, path="/missing"))
    assert missing.failed == {"http 404": 10} and missing.ok == 0
    assert missing.latency.count == 0 and missing.latency.p50_ms is None

    worked, _ = load(spec(edge_dns, hello, rps=10, duration=1.0, work_ms=20))
    assert worked.ok == 10
    assert "GET /?work=20 200" in hello.log.read_text()


def test_an_app_no_site_serves_fails_with_no_dns_answer(edge_dns: int, hello: Hello) -> None:
    summary, _ = load(spec(edge_dns, hello, app="idle", rps=10, duration=2.0))
    assert summary.failed == {NO_DNS_ANSWER: 20}
    assert summary.dns_queries >= 2  # asked again after a second
    assert any("NODATA" in note for note in summary.notes)


def test_an_unknown_app_or_a_silent_dns_is_explained_before_sending(
    edge_dns: int, hello: Hello
) -> None:
    with pytest.raises(LoadError, match=r"nope.demo.edge.internal does not exist \(NXDOMAIN\)"):
        load(spec(edge_dns, hello, app="nope"))
    silent = free_port()
    with pytest.raises(LoadError, match=rf"{HOST}:{silent} did not answer"):
        load(spec(silent, hello, dns_timeout=0.3))


# -- the HTTP client on a scripted server --------------------------------------------------------

SCRIPT = {
    "/len": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 edgefleet-paris\r\n\r\nhello",
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "/interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/close": b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
    "/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
}
"""Responses by path; ``/drop-second`` answers like ``/len`` once per connection, then hangs up
on the next request without a word, as a server closing an idle connection does."""


async def scripted(peers: list[str]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        answered = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                if path == "/drop-second" and answered:
                    break
                writer.write(SCRIPT.get(path, SCRIPT["/len"]))
                await writer.drain()
                answered += 1
                if path in ("/close", "/truncated"):
                    break
        writer.close()

    return await asyncio.start_server(handle, HOST, 0)


def test_http_pool_keeps_connections_and_reads_every_framing() -> None:
    peers: list[str] = []

    async def go() -> None:
        server = await scripted(peers)
        port = server.sockets[0].getsockname()[1]
        pool = HttpPool(source="127.1.152.1")
        try:
            for _ in range(3):
                answer = await pool.get(HOST, port, "/len", "hello.demo.edge.internal")
                assert (answer.status, answer.body) == (200, b"hello")
                assert answer.header("VIA") == ["1.1 edgefleet-paris"]
            assert pool.connections_opened == 1  # kept alive
            assert (await pool.get(HOST, port, "/chunked", "h")).body == b"abcde"
            assert (await pool.get(HOST, port, "/interim", "h")).body == b"ok"
            assert pool.connections_opened == 1
            closing = await pool.get(HOST, port, "/close", "h")
            assert (closing.status, closing.body) == (503, b"busy")
            assert (await pool.get(HOST, port, "/len", "h")).body == b"hello"
            assert pool.connections_opened == 2  # Connection: close was honoured
            # The server hangs up on the kept connection (it has answered once): the request
            # goes again, on a new one, and succeeds.
            assert (await pool.get(HOST, port, "/drop-second", "h")).body == b"hello"
            assert pool.connections_opened == 3
            with pytest.raises(ConnectionLost, match="mid-response"):
                await pool.get(HOST, port, "/truncated", "h")
        finally:
            await pool.close()
            server.close()
            await server.wait_closed()
        refused = HttpPool()
        with pytest.raises(ConnectFailed, match=f"{HOST}:{port}"):
            await refused.get(HOST, port, "/", "h")

    asyncio.run(go())
    assert set(peers) == {"127.1.152.1"}  # every connection from the source address


# -- the sample app's service time ---------------------------------------------------------------


def test_hello_work_parameter(hello: Hello) -> None:
    worked = httpx.get(f"{hello.url}/?work=15", timeout=5)
    assert worked.status_code == 200 and worked.headers["X-Work-Ms"] == "15"
    assert worked.json()["site"] == "paris"  # still says who served it
    plain = httpx.get(f"{hello.url}/", timeout=5)
    assert plain.status_code == 200 and "X-Work-Ms" not in plain.headers
    for bad in ("abc", "-5", "1.5", ""):
        refused = httpx.get(f"{hello.url}/?work={bad}", timeout=5)
        assert refused.status_code == 400, bad
        assert "whole milliseconds" in refused.text


def test_hello_work_default_from_the_environment(tmp_path: Path) -> None:
    with hello_process(tmp_path / "hello.log", HELLO_WORK_MS="7") as slow:
        assert httpx.get(f"{slow.url}/", timeout=5).headers["X-Work-Ms"] == "7"
        assert "X-Work-Ms" not in httpx.get(f"{slow.url}/?work=0", timeout=5).headers
    broken = subprocess.run(
        [sys.executable, "-m", "edgefleet.samples.hello"],
        env={**os.environ, "PORT": str(free_port()), "HELLO_WORK_MS": "soon"},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert broken.returncode == 1
    assert "HELLO_WORK_MS" in broken.stderr and "whole milliseconds" in broken.stderr


@pytest.mark.parametrize(
    ("query", "default", "expected"),
    [("", 0, 0), ("", 30, 30), ("work=5", 30, 5), ("a=1&work=0", 30, 0), ("work=99999", 0, 10000)],
)
def test_work_ms(query: str, default: int, expected: int) -> None:
    assert work_ms(query, default) == expected
    assert WORK_MAX_MS == 10_000


# -- the command against a real fleet ------------------------------------------------------------


def test_tick_line() -> None:
    quiet = Tick(1, 1.0, 50, 0, 50, {}, 2, 1.25, 9.5, {"paris": 50}, lag_ms=1.0)
    line = tick_line(quiet)
    assert line.split()[:7] == ["1s", "sent", "50", "ok", "50", "failed", "0"]
    assert "p50    1.2 ms" in line and "p99    9.5 ms" in line and "served by: paris 50" in line
    assert "dropped" not in line and "behind" not in line
    busy = Tick(3, 0.25, 40, 10, 20, {"timeout": 5, "http 503": 3}, 900, None, None, {}, 120.0)
    line = tick_line(busy)
    assert line.startswith("2.25s")  # a partial last second
    assert "failed    8 (http 503 3, timeout 5)" in line and "dropped 10" in line
    assert "p50      - ms" in line and "served by: -" in line
    assert "generator 120 ms behind" in line


def test_parse_duration() -> None:
    assert parse_duration("30") == 30.0
    assert parse_duration("0.5") == 0.5
    assert parse_duration("forever") is None and parse_duration("Forever") is None
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match="--duration"):
            parse_duration(bad)


@pytest.fixture
def load_fleet(sqlite_fleet: LocalFleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFleet]:
    """A hub, site paris (clients in 127.1.150.0/24) with its agent, and hello ready there."""
    paris = make_site("paris", ip="127.0.150.1")
    paris.spec.networks = ["10.150.0.0/16", "127.1.150.0/24"]
    with sqlite_fleet.client() as client:
        client.apply(paris)
        client.apply(make_app(placement={"replicas": 1}))
    sqlite_fleet.start_agent(paris)
    wait_for(
        lambda: (
            ask_dns("127.0.150.1", paris.spec.addresses.dns_port, "hello.demo.edge.internal")
            == ["127.0.150.1"]
        ),
        timeout=30,
        what="paris's edge DNS to answer paris for hello",
    )
    monkeypatch.setenv("EDGEFLEET_HUB", sqlite_fleet.hub_url)
    monkeypatch.setenv("EDGEFLEET_TOKEN", sqlite_fleet.admin_token or "")
    yield sqlite_fleet


@pytest.mark.slow
def test_load_command(load_fleet: LocalFleet, capsys: pytest.CaptureFixture[str]) -> None:
    load_command(from_site="paris", app="hello", rps=20, duration="1.5", as_json=True)
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert (data["site"], data["source"], data["dnsServer"]) == (
        "paris",
        "127.1.150.1",
        "127.0.150.1:5353",
    )
    assert (data["sent"], data["ok"], data["failed"]) == (30, 30, {})
    assert data["servedBy"] == {"paris": 30}
    assert data["latencyMs"]["p99"] is not None
    assert "sending 20 requests/s" in captured.err and "served by: paris" in captured.err

    load_command(from_site="paris", app="hello", rps=10, duration="1")
    shown = capsys.readouterr().out
    assert "   1s  sent    10" in shown and "served by: paris" in shown  # a live line
    assert "10 sent, 10 ok, 0 failed" in shown  # the summary
    assert re.search(r"served by +paris 10\b", shown)

    with pytest.raises(typer.Exit) as exited:
        load_command(from_site="nowhere", app="hello", rps=10)
    assert exited.value.exit_code == 1
    assert "site 'nowhere' not found" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        load_command(from_site="paris", app="nope", rps=10)
    assert "app 'nope' not found in tenant 'demo'" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        load_command(from_site="paris", app="hello", rps=10, duration="soon")
    assert "--duration 'soon'" in capsys.readouterr().err


def test_hello_concurrency_limit_answers_503_beyond_it(tmp_path: Path) -> None:
    with hello_process(tmp_path / "hello.log", HELLO_CONCURRENCY="1") as busy:

        async def two_at_once() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=10) as client:
                slow = asyncio.ensure_future(client.get(f"{busy.url}/?work=800"))
                await asyncio.sleep(0.3)
                quick = await client.get(f"{busy.url}/")
                return [await slow, quick]

        slow, quick = asyncio.run(two_at_once())
        assert slow.status_code == 200
        assert quick.status_code == 503 and quick.headers["retry-after"] == "1"
        assert httpx.get(f"{busy.url}/", timeout=5).status_code == 200  # the slot is back
