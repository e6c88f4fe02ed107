"""What the test bed's WAN emulator forwards, and the jitter it adds.

Makes two pairs of network namespaces: one pair joined by the WAN emulator (run as its own
process, as ``edgefleet testbed up`` runs it), the other by a veth pair (the kernel forwards).
Then, in one run:

- flood: a sender sends UDP datagrams of ``--size`` bytes as fast as it can for ``--seconds``
  from one namespace of each pair to the other, where a receiver counts what arrives: datagrams
  per second delivered through the emulator beside the same flood over the veth pair, with the
  emulator's own counters (read, written, dropped and why);
- lateness: ``--rate`` datagrams per second for ``--seconds`` over a link of ``--delay-ms`` one
  way: how late the emulator wrote them after their due time (p50/p99/max, µs, from its stats):
  the jitter the emulator itself adds;
- ping: ``--pings`` echo requests every 20 ms over the same link: round trip min/avg/max/mdev
  beside the configured 2 x ``--delay-ms``, and over the veth pair.

    .venv/bin/python bench/wan_emulator.py [--seconds 3] [--size 64] [--rate 2000]
        [--delay-ms 20] [--pings 50] [--pin]

With ``--pin`` the emulator runs on CPU 1 and every sender and receiver on CPU 0 (both columns
alike). Other load on the machine shows in every figure: check ``uptime`` first. Needs root,
``/dev/net/tun`` and ping (``tools/test-deps.sh``); the namespaces and every process are removed
at the end. Only addresses inside the namespaces made here are used.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from edgefleet.testbed.wan import WanControl

PORT = 9000
WAN_A, WAN_B = "10.98.0.1", "10.98.0.2"
VETH_A, VETH_B = "10.98.1.1", "10.98.1.2"
EMULATOR_CPU, CLIENT_CPU = "1", "0"

RECEIVER = textwrap.dedent(
    """
    import socket, sys, time
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((sys.argv[1], int(sys.argv[2])))
    print("listening", flush=True)
    buffer = bytearray(2048)
    count = 0
    sock.settimeout(30)
    sock.recv_into(buffer)
    count = 1
    sock.settimeout(1.0)  # the flood is over once nothing came for a second
    try:
        while True:
            sock.recv_into(buffer)
            count += 1
    except TimeoutError:
        pass
    print(count, flush=True)
    """
)

SENDER = textwrap.dedent(
    """
    import socket, sys, time
    dst, port, seconds, rate, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \\
        float(sys.argv[4]), int(sys.argv[5])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((dst, port))
    payload = b"x" * size
    send = sock.send
    sent = refused = 0
    end = time.monotonic() + seconds
    if rate <= 0:
        while time.monotonic() < end:
            for _ in range(256):
                try:
                    send(payload)
                    sent += 1
                except OSError:
                    refused += 1
    else:
        interval = 1 / rate
        due = time.monotonic()
        while due < end:
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                send(payload)
                sent += 1
            except OSError:
                refused += 1
            due += interval
    print(sent, refused, flush=True)
    """
)


class SetupError(Exception):
    """The benchmark cannot run here: a tool or a permission is missing, a step failed."""


@dataclass(frozen=True)
class Flood:
    """One flood: what the sender sent and the receiver counted."""

    sent: int
    refused: int
    received: int
    seconds: float

    @property
    def delivered_pps(self) -> float:
        return self.received / self.seconds

    @property
    def sent_pps(self) -> float:
        return self.sent / self.seconds


@dataclass(frozen=True)
class PingRtt:
    """ping's summary line."""

    received: int
    min_ms: float
    avg_ms: float
    max_ms: float
    mdev_ms: float


def sh(*command: str, stdin: str | None = None) -> str:
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SetupError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def in_ns(ns: str, *command: str, cpu: str | None) -> list[str]:
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    return ["ip", "netns", "exec", ns, *pin, *command]


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0].strip() if lines else ""


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


@contextlib.contextmanager
def namespaces(names: Sequence[str]) -> Iterator[None]:
    made: list[str] = []
    try:
        for name in names:
            sh("ip", "netns", "add", name)
            made.append(name)
        yield
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def flood(
    src_ns: str, dst_ns: str, dst: str, *, seconds: float, rate: float, size: int, cpu: str | None
) -> Flood:
    """Send from ``src_ns`` to ``dst`` in ``dst_ns`` and count what arrives."""
    receiver = subprocess.Popen(
        in_ns(dst_ns, sys.executable, "-c", RECEIVER, dst, str(PORT), cpu=cpu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if read_line(receiver, 30) != "listening":
            raise SetupError(f"the receiver in {dst_ns} did not start")
        out = sh(
            *in_ns(
                src_ns,
                sys.executable,
                "-c",
                SENDER,
                dst,
                str(PORT),
                str(seconds),
                str(rate),
                str(size),
                cpu=cpu,
            )
        )
        sent, refused = (int(x) for x in out.split())
        received = int(read_line(receiver, 60) or -1)
    finally:
        stop(receiver)
    return Flood(sent=sent, refused=refused, received=received, seconds=seconds)


def ping(src_ns: str, dst: str, count: int) -> PingRtt:
    out = sh("ip", "netns", "exec", src_ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.02", dst)
    received = re.search(r"(\d+) received", out)
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    if not received or not rtt:
        raise SetupError(f"ping gave no round trips: {out}")
    low, avg, high, mdev = (float(x) for x in rtt.groups())
    return PingRtt(int(received.group(1)), low, avg, high, mdev)


def setup_veth(a: str, b: str) -> None:
    """A veth pair between namespaces ``a`` and ``b``: the kernel forwards, no emulator."""
    tag = f"efb{os.getpid() % 100000}"
    sh("ip", "link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
    sh("ip", "link", "set", f"{tag}a", "netns", a, "name", "veth0")
    sh("ip", "link", "set", f"{tag}b", "netns", b, "name", "veth0")
    for ns, address in ((a, VETH_A), (b, VETH_B)):
        sh(
            "ip",
            "-n",
            ns,
            "-batch",
            "-",
            stdin=f"link set lo up\naddress add {address}/24 dev veth0\nlink set veth0 up\n",
        )


def start_emulator(
    workdir: Path, a: str, b: str, *, pin: bool
) -> tuple[subprocess.Popen[str], WanControl]:
    config = {
        # Both at one place: the flood crosses the base delay only (0.5 ms one way).
        "nodes": [
            {"name": "a", "netns": a, "address": WAN_A, "lat": 48.86, "lon": 2.35},
            {"name": "b", "netns": b, "address": WAN_B, "lat": 48.86, "lon": 2.35},
        ],
        "prober_address": "10.98.0.254",
        "device_prefix": "efbw",
    }
    (workdir / "wan.json").write_text(json.dumps(config))
    command = [
        sys.executable,
        "-m",
        "edgefleet.testbed.wan",
        "--config",
        str(workdir / "wan.json"),
        "--control",
        str(workdir / "wan.sock"),
    ]
    if pin:
        command = ["taskset", "-c", EMULATOR_CPU, *command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    if read_line(process, 60) != "ready":
        assert process.stderr is not None
        process.terminate()
        raise SetupError(f"the emulator did not start: {process.stderr.read().strip()}")
    return process, WanControl(workdir / "wan.sock")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each flood")
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes of the flood")
    parser.add_argument("--rate", type=float, default=2000, help="datagrams/s, lateness run")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay to measure")
    parser.add_argument("--pings", type=int, default=50, help="echo requests per ping run")
    parser.add_argument("--pin", action="store_true", help="emulator on CPU 1, clients on CPU 0")
    args = parser.parse_args()
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        print("needs root and /dev/net/tun", file=sys.stderr)
        return 2
    for tool in ("ip", "ping", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (tools/test-deps.sh installs ping)", file=sys.stderr)
            return 2
    cpu = CLIENT_CPU if args.pin else None
    prefix = f"efb-{os.getpid()}"
    wan_a, wan_b, veth_a, veth_b = (f"{prefix}-{n}" for n in ("wa", "wb", "va", "vb"))
    with (
        namespaces([wan_a, wan_b, veth_a, veth_b]),
        tempfile.TemporaryDirectory(prefix="efb-") as tmp,
    ):
        setup_veth(veth_a, veth_b)
        emulator, control = start_emulator(Path(tmp), wan_a, wan_b, pin=args.pin)
        try:
            print(f"load average before: {os.getloadavg()[0]:.2f}; pinned: {args.pin}")
            # Flood, each path in turn.
            control.stats(reset=True)
            cpu_before = cpu_seconds(emulator.pid)
            via_wan = flood(
                wan_a, wan_b, WAN_B, seconds=args.seconds, rate=0, size=args.size, cpu=cpu
            )
            wan_cpu = cpu_seconds(emulator.pid) - cpu_before
            wan_stats = control.stats(reset=True)
            via_veth = flood(
                veth_a, veth_b, VETH_B, seconds=args.seconds, rate=0, size=args.size, cpu=cpu
            )
            # Moderate rate over a delayed link: the emulator's own lateness.
            control.link("a", "b", delay_ms=args.delay_ms)
            control.stats(reset=True)
            paced = flood(
                wan_a,
                wan_b,
                WAN_B,
                seconds=args.seconds,
                rate=args.rate,
                size=args.size,
                cpu=cpu,
            )
            paced_stats = control.stats(reset=True)
            wan_ping = ping(wan_a, WAN_B, args.pings)
            ping_stats = control.stats()
            veth_ping = ping(veth_a, VETH_B, args.pings)
        finally:
            stop(emulator)

    drops = {k: v for k, v in wan_stats["drops"].items() if v}
    print()
    print(f"UDP flood, {args.size}-byte payloads, {args.seconds:g} s, sender as fast as it can")
    print(f"{'':<28} {'emulator':>14} {'veth (kernel)':>14}")
    print(f"{'sent/s':<28} {via_wan.sent_pps:>14,.0f} {via_veth.sent_pps:>14,.0f}")
    print(f"{'delivered/s':<28} {via_wan.delivered_pps:>14,.0f} {via_veth.delivered_pps:>14,.0f}")
    print(
        f"{'delivered / sent':<28} {via_wan.received / max(1, via_wan.sent):>14.1%} "
        f"{via_veth.received / max(1, via_veth.sent):>14.1%}"
    )
    print(
        f"emulator: read {wan_stats['packets_in']:,}, wrote {wan_stats['packets_out']:,}, "
        f"dropped {drops or 'none'}, CPU {wan_cpu:.2f} s "
        f"({wan_cpu / max(1, wan_stats['packets_in']) * 1e6:.1f} µs a packet)"
    )
    print()
    late = paced_stats["lateness_us"]
    print(
        f"{args.rate:,.0f} datagrams/s for {args.seconds:g} s over a {args.delay_ms:g} ms link: "
        f"{paced.received:,} of {paced.sent:,} delivered"
    )
    print(f"{'emulator lateness, µs':<28} {'p50':>8} {'p99':>8} {'max':>8} {'writes':>8}")
    print(f"{'':<28} {late['p50']:>8} {late['p99']:>8} {late['max']:>8} {late['count']:>8}")
    print()
    print(f"ping, {args.pings} requests every 20 ms")
    print(f"{'round trip, ms':<28} {'min':>8} {'avg':>8} {'max':>8} {'mdev':>8} {'recv':>6}")
    configured = 2 * args.delay_ms
    print(f"{'configured':<28} {configured:>8.3f} {configured:>8.3f} {configured:>8.3f} {0:>8.3f}")
    for label, rtt in (("emulator", wan_ping), ("veth (kernel, no delay)", veth_ping)):
        print(
            f"{label:<28} {rtt.min_ms:>8.3f} {rtt.avg_ms:>8.3f} {rtt.max_ms:>8.3f} "
            f"{rtt.mdev_ms:>8.3f} {rtt.received:>6}"
        )
    ping_late = ping_stats["lateness_us"]
    print(
        f"emulator lateness during ping, µs: p50 {ping_late['p50']}, p99 {ping_late['p99']}, "
        f"max {ping_late['max']}"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as exc:
        print(f"wan_emulator: {exc}", file=sys.stderr)
        sys.exit(1)
