"""How long until every DNS of the fleet stops answering a site that stopped serving.

Runs the demo fleet (six sites, the sample app, the demo's timings) on its own loopback addresses,
then, for each of two failures, polls every edge DNS and the central DNS every 20 ms and prints
when each one stopped answering the failed site (for at least a second):

- replicas not ready: the site's replica is paused (SIGSTOP), its agent lives;
- site killed: the site's agent and replicas are killed (SIGKILL).

    .venv/bin/python bench/dns_failover.py [--rounds N]

The aim is 3 s for the slowest DNS. Peers: k8gb fails over after its 30 s reconcile plus TTLs;
PowerDNS LUA `ifurlup` checks every 5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.cli.demo import ask_dns, sample_manifests
from edgefleet.localfleet import LocalFleet, free_port, wait_for
from edgefleet.model import PlacementPolicy, Spread, SpreadBy

FQDN = "hello.demo.edge.internal"


def watch(
    servers: dict[str, tuple[str, int]],
    gone_ip: str,
    stop: threading.Event,
    started: float,
    timeline: dict[str, list[tuple[float, bool]]],
) -> list[threading.Thread]:
    """One thread per DNS server recording, every 20 ms, whether it answers ``gone_ip``."""

    def loop(name: str, server: tuple[str, int]) -> None:
        while not stop.is_set():
            present = gone_ip in ask_dns(*server, FQDN)
            timeline[name].append((time.monotonic() - started, present))
            time.sleep(0.02)

    threads = [threading.Thread(target=loop, args=item, daemon=True) for item in servers.items()]
    for thread in threads:
        thread.start()
    return threads


def dropped_at(samples: list[tuple[float, bool]], hold: float = 1.0) -> float | None:
    """When the server stopped answering the site for at least ``hold`` seconds in a row."""
    for i, (t, present) in enumerate(samples):
        if present:
            continue
        window = [p for u, p in samples[i:] if u <= t + hold]
        if not any(window) and samples[-1][0] >= t + hold:
            return t
    return None


def measure(
    servers: dict[str, tuple[str, int]], gone_ip: str, fail: object, settle: float = 6.0
) -> dict[str, float]:
    """Inject ``fail`` (a callable); seconds until each server dropped ``gone_ip`` (inf: never)."""
    stop = threading.Event()
    timeline: dict[str, list[tuple[float, bool]]] = {name: [] for name in servers}
    started = time.monotonic()
    threads = watch(servers, gone_ip, stop, started, timeline)
    fail()  # type: ignore[operator]
    time.sleep(settle)
    stop.set()
    for thread in threads:
        thread.join()
    return {
        name: (at if (at := dropped_at(samples)) is not None else float("inf"))
        for name, samples in timeline.items()
    }


def back_in_every_answer(servers: dict[str, tuple[str, int]], ip: str) -> None:
    """Wait until every server answers ``ip`` again."""
    wait_for(
        lambda: all(ip in ask_dns(*server, FQDN) for server in servers.values()),
        timeout=60,
        what="the site back in every answer",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="failures of each kind")
    args = parser.parse_args()
    sites, hello = sample_manifests()
    # Four replicas spread over the regions, placed explicitly: failover, not demand, is measured.
    hello.spec.placement = PlacementPolicy(replicas=4, spread=Spread(by=SpreadBy.REGION))
    for k, site in enumerate(sites, start=1):
        site.spec.addresses.ip = f"127.0.3.{k}"  # away from a demo that may be running
    with tempfile.TemporaryDirectory() as workdir:
        fleet = LocalFleet(workdir=Path(workdir), hub_port=free_port(), dns_port=free_port())
        with fleet.running():
            fleet.start_hub()
            client = fleet.client()
            for site in sites:
                client.apply(site)
            fleet.start_agents(sites)
            client.apply(hello)
            servers = {
                s.metadata.name: (s.spec.addresses.ip, s.spec.addresses.dns_port) for s in sites
            }
            servers["central"] = (fleet.hub_host, fleet.dns_port)
            results: dict[str, list[float]] = {"replicas not ready": [], "site killed": []}
            for round_ in range(args.rounds):
                app = wait_for(
                    lambda: (
                        (a := client.get_app("demo", "hello")).status.ready_replicas == 4
                        and all(s.ready == s.desired for s in a.status.sites)
                        and a
                    ),
                    timeout=60,
                    what="hello ready",
                )
                victim = sorted(s.site for s in app.status.sites if s.desired)[round_ % 4]
                ip = fleet.sites[victim].spec.addresses.ip
                [replica] = client.site_replicas(victim)["demo/hello"]
                assert replica.pid is not None
                # Only servers that answer the victim now can show how fast they stop.
                others = {
                    n: s for n, s in servers.items() if n != victim and ip in ask_dns(*s, FQDN)
                }
                paused = measure(others, ip, lambda pid=replica.pid: os.kill(pid, signal.SIGSTOP))
                with contextlib.suppress(ProcessLookupError):  # liveness may have replaced it
                    os.kill(replica.pid, signal.SIGCONT)
                results["replicas not ready"].append(max(paused.values()))
                print(
                    f"round {round_ + 1}: {victim} replica paused: slowest DNS "
                    f"{max(paused.values()):.2f}s "
                    f"({', '.join(f'{n} {t:.2f}' for n, t in sorted(paused.items()))})"
                )
                back_in_every_answer(others, ip)

                def kill(name: str = victim) -> None:
                    fleet.stop_agent(name, signal.SIGKILL)
                    fleet.stop_replicas(name)

                killed = measure(others, ip, kill)
                results["site killed"].append(max(killed.values()))
                print(
                    f"round {round_ + 1}: {victim} killed: slowest DNS "
                    f"{max(killed.values()):.2f}s "
                    f"({', '.join(f'{n} {t:.2f}' for n, t in sorted(killed.items()))})"
                )
                fleet.start_agent(fleet.sites[victim])
            print()
            print(f"{'failure':<20} {'median s':>9} {'max s':>7}   aim")
            for kind, times in results.items():
                print(f"{kind:<20} {statistics.median(times):>9.2f} {max(times):>7.2f}   <= 3 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
