"""The WAN emulator between real network namespaces: real TUN devices, ping, TCP, DNS anycast.

Three namespaces far apart (Paris, New York, Tokyo) joined by the emulator run as its own
process, as the test bed runs it. Needs root, ``ip netns``, ``/dev/net/tun`` and ``ping``
(``tools/test-deps.sh`` installs it); skipped with the reason otherwise. The namespaces, the
emulator and every helper process are removed at the end, also after a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from edgefleet.testbed.wan import WanConfig, WanControl, one_way_ms

pytestmark = pytest.mark.netns

T = TypeVar("T")

CITIES = {
    "paris": (48.86, 2.35, "10.99.1.1"),
    "newyork": (40.71, -74.01, "10.99.1.2"),
    "tokyo": (35.68, 139.69, "10.99.1.3"),
}
ANYCAST = "10.99.255.53"
PROBER = "10.99.255.254"
DEADLINE = 15.0
TCP_PORT = 7000

# A DNS server for the anycast address: answers every query with a TXT record naming its node.
DNS_SERVER = textwrap.dedent(
    """
    import socket, sys
    import dns.message, dns.rrset
    name, address = sys.argv[1], sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    print("listening", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        response.answer.append(dns.rrset.from_text(question.name, 0, "IN", "TXT", name))
        sock.sendto(response.to_wire(), peer)
    """
)

# One DNS query to the anycast address; prints the TXT answer, or "timeout".
DNS_QUERY = textwrap.dedent(
    """
    import socket, sys
    import dns.message
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    query = dns.message.make_query("who.edge.internal", "TXT")
    sock.sendto(query.to_wire(), (sys.argv[1], 53))
    try:
        data, _ = sock.recvfrom(4096)
    except TimeoutError:
        print("timeout")
    else:
        print(dns.message.from_wire(data).answer[0][0].strings[0].decode())
    """
)

# A TCP server that answers each connection with its input reversed.
TCP_SERVER = textwrap.dedent(
    """
    import socket, sys
    server = socket.create_server((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
            conn.sendall(b"".join(chunks)[::-1])
    """
)

TCP_CLIENT = textwrap.dedent(
    """
    import hashlib, socket, sys
    payload = bytes(range(256)) * 800
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    print(len(answer), answer == payload[::-1])
    """
)


@dataclass
class Bed:
    """Three namespaces and a running emulator."""

    netns: dict[str, str]
    config: WanConfig
    control: WanControl
    workdir: Path
    helpers: list[subprocess.Popen[str]] = field(default_factory=list)

    def address(self, name: str) -> str:
        return self.config.node(name).address

    def one_way_ms(self, a: str, b: str) -> float:
        return one_way_ms(self.config, self.config.node(a), self.config.node(b))

    def run(
        self, name: str, *command: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns[name], *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, name: str, script: str, *args: str) -> subprocess.Popen[str]:
        """Start a Python helper in ``name``'s namespace and wait for its "listening" line."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns[name], sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.helpers.append(process)
        line = read_line(process, timeout=DEADLINE)
        assert line == "listening", f"helper in {name} did not start: {line!r}"
        return process

    def ping(self, src: str, dst: str, *, count: int = 5, interval: float = 0.2) -> Ping:
        result = self.run(
            src,
            "ping",
            "-n",
            "-c",
            str(count),
            "-i",
            str(interval),
            "-W",
            "2",
            self.address(dst),
            timeout=count * interval + 30,
        )
        received = int(re.search(r"(\d+) received", result.stdout).group(1))  # type: ignore[union-attr]
        rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", result.stdout)
        return Ping(
            received=received,
            min_ms=float(rtt.group(1)) if rtt else None,
            max_ms=float(rtt.group(3)) if rtt else None,
        )

    def ask_anycast(self, src: str) -> str:
        result = self.run(src, sys.executable, "-c", DNS_QUERY, ANYCAST, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@dataclass(frozen=True)
class Ping:
    received: int
    min_ms: float | None
    max_ms: float | None


def read_line(process: subprocess.Popen[str], *, timeout: float) -> str:
    """The next stdout line of ``process``, waited for at most ``timeout`` seconds."""
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        return "(nothing)"
    return lines[0].strip()


def wait_for(check: Callable[[], T], *, what: str, timeout: float = DEADLINE) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[str], *, keep_stderr: bool = False) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for pipe in (process.stdout, None if keep_stderr else process.stderr):
        if pipe is not None:
            pipe.close()


def missing_prerequisite() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and TUN devices"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing: no TUN support on this machine"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    if shutil.which("ping") is None:
        return "ping is missing: run tools/test-deps.sh (it installs iputils-ping)"
    return None


def start_emulator(config_path: Path, control_path: Path) -> subprocess.Popen[str]:
    """Run the emulator as the test bed does and wait for its "ready" line."""
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgefleet.testbed.wan",
            "--config",
            str(config_path),
            "--control",
            str(control_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = read_line(emulator, timeout=60)
    if line != "ready":
        stop_process(emulator, keep_stderr=True)
        assert emulator.stderr is not None
        message = emulator.stderr.read()
        emulator.stderr.close()
        raise AssertionError(f"emulator not ready: {line!r}; {message}")
    return emulator


@contextmanager
def namespaces_and_emulator(tag: str, cities: Sequence[str]) -> Iterator[Bed]:
    """Namespaces for ``cities`` and an emulator between them; all removed at the end."""
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    netns = {name: f"eft-{os.getpid()}-{tag}-{name}" for name in cities}
    created: list[str] = []
    emulator: subprocess.Popen[str] | None = None
    bed_: Bed | None = None
    workdir = Path(tempfile.mkdtemp(prefix="eft-wan-"))
    try:
        for ns in netns.values():
            result = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"ip netns add {ns} failed: {result.stderr.strip()}")
            created.append(ns)
        members = [name for name in ("newyork", "tokyo") if name in cities]
        raw = {
            "nodes": [
                {"name": name, "netns": netns[name], "address": addr, "lat": lat, "lon": lon}
                for name, (lat, lon, addr) in CITIES.items()
                if name in cities
            ],
            "anycast": [{"address": ANYCAST, "members": members, "health_port": 53}],
            "prober_address": PROBER,
            "device_prefix": "eftw",
        }
        config_path = workdir / "wan.json"
        config_path.write_text(json.dumps(raw))
        emulator = start_emulator(config_path, workdir / "wan.sock")
        bed_ = Bed(
            netns=netns,
            config=WanConfig.load(config_path),
            control=WanControl(workdir / "wan.sock"),
            workdir=workdir,
        )
        yield bed_
    finally:
        for helper in bed_.helpers if bed_ else []:
            stop_process(helper)
        if emulator is not None:
            stop_process(emulator)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    with namespaces_and_emulator("m", list(CITIES)) as bed_:
        yield bed_


@pytest.fixture
def wan(bed: Bed) -> Iterator[Bed]:
    """The bed, with every cut and override removed after the test."""
    yield bed
    bed.control.heal()
    for a in CITIES:
        for b in CITIES:
            if a < b:
                bed.control.unlink(a, b)


def test_devices_are_the_namespaces_links(wan: Bed) -> None:
    for name, ns in wan.netns.items():
        route = subprocess.run(
            ["ip", "-n", ns, "route", "show", "default"], capture_output=True, text=True
        ).stdout
        assert f"dev {wan.config.device(name)}" in route
        assert f"src {wan.address(name)}" in route
    lo = subprocess.run(
        ["ip", "-n", wan.netns["tokyo"], "addr", "show", "lo"], capture_output=True, text=True
    ).stdout
    assert f"{ANYCAST}/32" in lo


@pytest.mark.parametrize(
    ("a", "b"), [("paris", "newyork"), ("paris", "tokyo"), ("tokyo", "newyork")]
)
def test_ping_shows_the_round_trip(wan: Bed, a: str, b: str) -> None:
    one_way = wan.one_way_ms(a, b)
    assert wan.control.route(a, b)["delay_ms"] == pytest.approx(one_way)
    ping = wan.ping(a, b)
    assert ping.received == 5 and ping.min_ms is not None
    # ping rounds to the microsecond; the emulator never writes before the due time.
    assert ping.min_ms >= 2 * one_way - 0.001
    assert ping.min_ms < 2 * one_way + 50, "far more than the delay: something else waits"


def test_tcp_exchange_across_the_wan(wan: Bed) -> None:
    wan.start("tokyo", TCP_SERVER, wan.address("tokyo"), str(TCP_PORT))
    result = wan.run("paris", sys.executable, "-c", TCP_CLIENT, wan.address("tokyo"), str(TCP_PORT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(256 * 800), "True"]


def test_cut_stops_ping_and_heal_restores_it(wan: Bed) -> None:
    before = wan.control.stats()["drops"]["cut"]
    wan.control.cut("paris", "newyork")
    assert wan.ping("paris", "newyork", count=3).received == 0
    assert wan.ping("paris", "tokyo", count=2).received == 2  # only that pair is cut
    assert wan.control.stats()["drops"]["cut"] >= before + 3
    wan.control.heal("paris", "newyork")
    assert wan.ping("paris", "newyork", count=2).received == 2


def test_isolating_a_node(wan: Bed) -> None:
    wan.control.cut("tokyo")
    assert wan.ping("paris", "tokyo", count=2).received == 0
    assert wan.ping("newyork", "tokyo", count=2).received == 0
    assert wan.ping("paris", "newyork", count=2).received == 2
    wan.control.heal("tokyo")
    assert wan.ping("newyork", "tokyo", count=2).received == 2


def test_full_loss_drops_everything(wan: Bed) -> None:
    wan.control.link("paris", "newyork", loss=1.0)
    assert wan.ping("paris", "newyork", count=4).received == 0
    wan.control.unlink("paris", "newyork")
    assert wan.ping("paris", "newyork", count=2).received == 2


def test_delay_override_is_applied(wan: Bed) -> None:
    wan.control.link("paris", "tokyo", delay_ms=5, extra_ms=3)
    ping = wan.ping("paris", "tokyo", count=4)
    assert ping.min_ms is not None
    assert 16 - 0.001 <= ping.min_ms < 16 + 50


def test_anycast_reaches_the_nearest_then_fails_over(wan: Bed) -> None:
    servers = {name: wan.start(name, DNS_SERVER, name, ANYCAST) for name in ("newyork", "tokyo")}

    def members() -> dict[str, dict[str, object]]:
        return {m["name"]: m for m in wan.control.anycast()[0]["members"]}

    wait_for(
        lambda: all(m["announced"] and m["answers"] >= 2 for m in members().values()),
        what="both members answering their checks",
    )
    # New York is nearer to Paris than Tokyo is.
    assert wan.control.route("paris", ANYCAST)["node"] == "newyork"
    assert wan.ask_anycast("paris") == "newyork"

    stop_process(servers["newyork"])
    wait_for(lambda: not members()["newyork"]["announced"], what="newyork withdrawn")
    assert members()["tokyo"]["announced"]
    wait_for(lambda: wan.ask_anycast("paris") == "tokyo", what="queries answered by tokyo")

    wan.start("newyork", DNS_SERVER, "newyork", ANYCAST)
    wait_for(lambda: wan.ask_anycast("paris") == "newyork", what="newyork announced again")


def test_emulator_counts_what_it_forwards(wan: Bed) -> None:
    before = wan.control.stats()
    assert wan.ping("newyork", "paris", count=3, interval=0.2).received == 3
    after = wan.control.stats()
    assert after["packets_out"] - before["packets_out"] >= 6  # 3 requests, 3 replies
    assert after["lateness_us"]["count"] > before["lateness_us"]["count"]
    assert after["drops"]["no_route"] == before["drops"]["no_route"]


def test_a_restarted_emulator_takes_the_devices_over() -> None:
    with namespaces_and_emulator("r", ["paris", "newyork"]) as first:
        # A second emulator on the same config while the first still runs, as after a crash
        # of the orchestrator: it replaces the devices and forwards from then on.
        second = start_emulator(first.workdir / "wan.json", first.workdir / "second.sock")
        try:
            control = WanControl(first.workdir / "second.sock")
            assert first.ping("paris", "newyork", count=3).received == 3
            assert control.stats()["packets_out"] >= 6
            assert first.control.stats()["packets_out"] == 0
            # The first one lost its devices; stopping it leaves the second one's alone.
            first.control.stop()
            assert first.ping("paris", "newyork", count=2).received == 2
        finally:
            stop_process(second)
