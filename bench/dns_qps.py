"""Queries per second of the fleet DNS responder, side by side with Knot DNS.

Both servers answer the same static zone (``--apps`` apps of 10 tenants, each served by
``--sites`` sites, two A records per answer, TTL 5) on 127.0.0.1, pinned to CPU 0, one after
the other; dnsperf, pinned to CPU 1, asks each for ``<app>.<tenant>.edge.internal A`` over all
apps, with several clients and no rate limit.

- ours: ``Responder`` (fast-path cache) served by ``DnsServer`` in a separate process, with
  the UDP reader(s) named by ``--readers``: ``mmsg`` (the default: UDP thread with
  recvmmsg/sendmmsg), ``thread`` (UDP thread, recvfrom/sendto), ``batched`` and ``protocol``
  (UDP in the event loop);
- Knot DNS with one UDP, one TCP and one background worker, config and storage in a temp dir.

    .venv/bin/python bench/dns_qps.py [--seconds 10] [--apps 1000]
        [--readers mmsg,thread,batched,protocol]

Prints a table (qps, average and p99 latency, max) and the ratio ours/knot. qps, average and
max come from the plain run at full speed. p99 comes from a second dnsperf run, verbose (``-v``
logs every answer's latency) and rate-limited to ``--p99-rate`` queries/s: a verbose dnsperf is
slower than either server, so at full speed its p99 would measure answers waiting in dnsperf's
own socket; at a fixed rate both servers are compared at the same offered load.

Installs knot and dnsperf with apt-get when they are missing. Exits non-zero only when the
setup fails. Only loopback addresses are used; servers and temp dirs are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgefleet.localfleet import free_port

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SERVER_CPU = 0
CLIENT_CPU = 1
TENANTS = 10
ANSWERS = 2
TTL = 5
READY_TIMEOUT = 30.0


class SetupError(Exception):
    """The benchmark cannot run: a tool is missing, a server does not start."""


# -- the zone, the same for both servers ---------------------------------------------------------


def site_ip(index: int) -> str:
    return f"10.{index // 250}.{index % 250}.1"


def app_names(apps: int) -> list[tuple[str, str]]:
    """(tenant, app) of every app."""
    return [(f"t{i % TENANTS}", f"app{i}") for i in range(apps)]


def app_sites(index: int, sites: int) -> list[int]:
    """The sites serving app ``index``, best first: all of them, rotated per app."""
    return [(index + k) % sites for k in range(sites)]


def zone_file(apps: int, sites: int) -> str:
    """Knot's zone: what our responder answers, written out (``ANSWERS`` A records per app)."""
    lines = [
        "$ORIGIN edge.internal.",
        f"$TTL {TTL}",
        f"@ SOA ns.edge.internal. hostmaster.edge.internal. 1 3600 600 86400 {TTL}",
        "@ NS ns",
        f"ns A {HOST}",
    ]
    for index, (tenant, app) in enumerate(app_names(apps)):
        for site in app_sites(index, sites)[:ANSWERS]:
            lines.append(f"{app}.{tenant} A {site_ip(site)}")
    return "\n".join(lines) + "\n"


def query_file(apps: int) -> str:
    return "".join(f"{app}.{tenant}.edge.internal A\n" for tenant, app in app_names(apps))


# -- our server, in its own process --------------------------------------------------------------


def serve(apps: int, sites: int, reader: str, profile: str | None) -> None:
    """The server process: print ``ready PORT``, answer until SIGTERM."""
    sys.path.insert(0, str(ROOT / "src"))
    from edgefleet.dns import DnsServer, Responder, StaticZone, Target

    targets = [Target(f"site{i}", site_ip(i), None, 8080) for i in range(sites)]
    zone = StaticZone(
        nameserver=Target("ns", HOST, None, 53),
        apps={
            (tenant, app): [targets[s] for s in app_sites(index, sites)]
            for index, (tenant, app) in enumerate(app_names(apps))
        },
        sites=targets,
    )
    responder = Responder(zone, ttl=TTL, max_answers=ANSWERS)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with DnsServer(
            responder,
            HOST,
            0,
            batch_udp=reader == "batched",
            udp_thread=reader in ("mmsg", "thread"),
            udp_mmsg=reader == "mmsg",
        ) as server:
            if server.udp_reader != reader:  # mmsg asked for where recvmmsg is missing
                raise SystemExit(f"UDP reader {reader!r} unavailable, got {server.udp_reader!r}")
            print(f"ready {server.port}", flush=True)
            await stop.wait()

    if profile is None:
        asyncio.run(main())
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(main())
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


@contextlib.contextmanager
def our_server(
    apps: int, sites: int, reader: str, profile: str | None
) -> Iterator[tuple[int, str]]:
    command = [
        *pin(SERVER_CPU),
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        "--apps",
        str(apps),
        "--sites",
        str(sites),
        "--readers",
        reader,
    ]
    if profile:
        command += ["--profile-to", profile]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("ready "):
            raise SetupError(f"our DNS server did not start (exit code {process.poll()})")
        yield int(line.split()[1]), " ".join(command)
    finally:
        stop_process(process)


# -- Knot ----------------------------------------------------------------------------------------

KNOT_CONFIG = """\
server:
    rundir: "{tmp}/run"
    listen: {host}@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1

database:
    storage: "{tmp}/db"

log:
  - target: stderr
    any: warning

zone:
  - domain: edge.internal.
    file: "{tmp}/edge.internal.zone"
    journal-content: none
    zonefile-sync: -1
"""


@contextlib.contextmanager
def knot_server(tmp: Path, apps: int, sites: int) -> Iterator[tuple[int, str]]:
    (tmp / "run").mkdir(parents=True)
    (tmp / "db").mkdir()
    (tmp / "edge.internal.zone").write_text(zone_file(apps, sites))
    port = free_port(HOST)
    config = tmp / "knot.conf"
    config.write_text(KNOT_CONFIG.format(tmp=tmp, host=HOST, port=port))
    knotd = shutil.which("knotd") or "/usr/sbin/knotd"
    command = [*pin(SERVER_CPU), knotd, "-c", str(config)]
    log = (tmp / "knotd.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_answering(port, process, tmp / "knotd.log")
        yield port, " ".join(command)
    finally:
        stop_process(process)
        log.close()


def wait_answering(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server answers the first app, or raise SetupError."""
    import dns.exception
    import dns.message
    import dns.query

    query = dns.message.make_query("app0.t0.edge.internal", "A")
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            answer = dns.query.udp(query, HOST, port=port, timeout=0.5)
        except (OSError, dns.exception.Timeout):
            continue
        if answer.answer:
            return
        time.sleep(0.1)
    raise SetupError(f"knotd did not answer on {HOST}:{port}:\n{log.read_text()[-2000:]}")


# -- dnsperf -------------------------------------------------------------------------------------


@dataclass
class Result:
    """One server's figures."""

    name: str
    qps: float
    avg_ms: float
    max_ms: float
    p99_ms: float
    lost: int
    response_bytes: int


def dnsperf(
    port: int,
    queries: Path,
    seconds: float,
    *,
    clients: int,
    outstanding: int,
    out: Path,
    rate: int | None = None,
) -> str:
    """Run dnsperf against ``port``; its output, also kept in ``out``. With ``rate``: verbose,
    at that many queries per second."""
    command = [
        *pin(CLIENT_CPU),
        "dnsperf",
        "-s", HOST,
        "-p", str(port),
        "-d", str(queries),
        "-l", str(seconds),
        "-c", str(clients),
        "-T", "1",
        "-q", str(outstanding),
        "-t", "2",
    ]  # fmt: skip
    if rate is not None:
        command += ["-v", "-Q", str(rate)]
    with out.open("w") as sink:
        subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
    return out.read_text()


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    if found is None:
        raise SetupError(f"dnsperf printed no {pattern!r}:\n{text[-2000:]}")
    return float(found.group(1))


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)] if ordered else 0.0


def measure(name: str, port: int, tmp: Path, args: argparse.Namespace) -> Result:
    queries = tmp / "queries.txt"
    slug = re.sub(r"\W+", "-", name)
    # Warm-up: our cache fills on first sight of each query, Knot's memory settles.
    load = {"clients": args.clients, "outstanding": args.outstanding}
    dnsperf(port, queries, 1, **load, out=tmp / f"{slug}-warmup.txt")
    text = dnsperf(port, queries, args.seconds, **load, out=tmp / f"{slug}.txt")
    verbose = dnsperf(
        port,
        queries,
        min(args.seconds, 5),
        **load,
        rate=args.p99_rate,
        out=tmp / f"{slug}-v.txt",
    )
    latencies = [float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", verbose, re.MULTILINE)]
    print(f"\n--- dnsperf, {name} ---\n{text.strip()}", flush=True)
    return Result(
        name=name,
        qps=number(r"Queries per second:\s+([\d.]+)", text),
        avg_ms=number(r"Average Latency \(s\):\s+([\d.]+)", text) * 1000,
        max_ms=number(r"Average Latency \(s\):.*max ([\d.]+)\)", text) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        lost=int(number(r"Queries lost:\s+(\d+)", text)),
        response_bytes=int(number(r"Average packet size:.*response (\d+)", text)),
    )


# -- plumbing ------------------------------------------------------------------------------------


def pin(cpu: int) -> list[str]:
    if (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


def stop_process(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def ensure_tools() -> None:
    """Install knot and dnsperf from Debian's packages when missing."""
    missing = [
        package
        for tool, package in (("knotd", "knot"), ("dnsperf", "dnsperf"))
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SetupError(f"missing {', '.join(missing)}: run as root, or apt-get install them")
    print(f"installing {' '.join(missing)} from Debian packages", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SetupError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def knot_version() -> str:
    knotd = shutil.which("knotd") or "/usr/sbin/knotd"
    done = subprocess.run([knotd, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"version ([\w.]+)", done.stdout + done.stderr)
    return found.group(1) if found else "?"


def print_table(results: list[Result], p99_rate: int) -> None:
    print("\nserver                      qps   avg ms   max ms   p99 ms*   lost  resp B")
    for r in results:
        print(
            f"{r.name:<22} {r.qps:>10,.0f} {r.avg_ms:>8.3f} {r.max_ms:>8.3f} {r.p99_ms:>9.3f}"
            f" {r.lost:>7} {r.response_bytes:>7}"
        )
    print(f"* p99 in a verbose run at {p99_rate:,} queries/s, the same offered load for all")
    knot = next((r for r in results if r.name.startswith("knot")), None)
    if knot is not None and knot.qps > 0:
        for r in results:
            if r is not knot:
                print(f"ratio {r.name} / knot: {r.qps / knot.qps:.2f}")


def print_profile(path: str) -> None:
    import pstats

    print(f"\n--- profile of our server ({path}) ---")
    pstats.Stats(path).sort_stats("tottime").print_stats(12)


def run(args: argparse.Namespace) -> int:
    ensure_tools()
    readers = [r for r in args.readers.split(",") if r]
    if not set(readers) <= {"mmsg", "thread", "batched", "protocol"}:
        raise SetupError("--readers takes mmsg, thread, batched and/or protocol")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-dns-qps-") as name:
        tmp = Path(name)
        (tmp / "queries.txt").write_text(query_file(args.apps))
        print(
            f"zone: {args.apps} apps x {args.sites} sites, {ANSWERS} A records per answer; "
            f"dnsperf -l {args.seconds} -c {args.clients} -q {args.outstanding}; "
            f"servers on CPU {SERVER_CPU}, dnsperf on CPU {CLIENT_CPU}",
            flush=True,
        )
        for reader in readers:
            profile = str(tmp / f"profile-{reader}.out") if args.profile else None
            with our_server(args.apps, args.sites, reader, profile) as (port, command):
                print(f"\nours ({reader} UDP): {command}", flush=True)
                results.append(measure(f"edgefleet ({reader})", port, tmp, args))
            if profile:
                print_profile(profile)
        if not args.skip_knot:
            with knot_server(tmp / "knot", args.apps, args.sites) as (port, command):
                print(f"\nknot: {command}", flush=True)
                results.append(measure(f"knot {knot_version()}", port, tmp, args))
    print_table(results, args.p99_rate)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10, help="dnsperf run length")
    parser.add_argument("--apps", type=int, default=1000, help="apps in the zone")
    parser.add_argument("--sites", type=int, default=6, help="sites serving every app")
    parser.add_argument("--clients", type=int, default=4, help="dnsperf clients (-c)")
    parser.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    parser.add_argument(
        "--p99-rate", type=int, default=20_000, help="queries/s of the verbose p99 run"
    )
    parser.add_argument(
        "--readers", default="mmsg", help="our UDP readers: mmsg,thread,batched,protocol"
    )
    parser.add_argument("--skip-knot", action="store_true", help="measure ours only")
    parser.add_argument("--profile", action="store_true", help="cProfile our server, print top")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.apps, args.sites, args.readers, args.profile_to)
        return 0
    try:
        return run(args)
    except SetupError as exc:
        print(f"dns_qps: setup failed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
