"""The kubernetes driver at work: apply-to-ready at three sites, and an agent's memory at 50 apps.

Starts three test clusters (``edgefleet.testbed.kube``: etcd, kube-apiserver, controller-manager,
scheduler, kwok nodes), a hub and three agents with ``--driver kubernetes``, each managing its
own cluster, as real processes on loopback. Then, in one run:

- apply-to-ready: an app of 6 replicas over the three sites is applied at the hub; the time until
  the hub sees all 6 ready (the agents observed the pods Ready through kwok and reported them),
  for ``--rounds`` apps one after the other;
- memory: the RSS of one agent with no app, then after ``--apps`` apps of 2 replicas each are
  placed at its site and ready; the hub's RSS beside it, and the process driver's agent with no
  app as the reference.

    .venv/bin/python bench/kube_driver.py [--apps 50] [--rounds 5]

Needs the binaries from ``make kube`` (tools/kube-build.sh).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.kube_cluster import rss_mib
from edgefleet.localfleet import LocalFleet, free_port, wait_for
from edgefleet.model import App, DriverName, Site
from edgefleet.testbed.kube import KubeCluster, find_binaries

SITES = ("alpha", "beta", "gamma")


def app(name: str, replicas: int, sites: tuple[str, ...]) -> App:
    return App.model_validate(
        {
            "metadata": {"name": name, "tenant": "bench"},
            "spec": {
                "workload": {"type": "container", "image": f"registry.local/{name}:1"},
                "resources": {"cpu": "10m", "memory": "16Mi"},
                "placement": {"replicas": replicas, "selector": {"sites": list(sites)}},
            },
        }
    )


def site(name: str, index: int, *, driver: DriverName) -> Site:
    address = f"127.0.70.{index + 1}"
    return Site.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "region": "eu-west",
                "zone": f"eu-west-{index}",
                "location": {"lat": 48.85 + index, "lon": 2.35},
                "capacity": {"cpu": 64, "memory": "128Gi", "maxReplicas": 500},
                "driver": driver.value,
                "addresses": {"ip": address, "ingressPort": free_port(address)},
            },
        }
    )


def ready(fleet: LocalFleet, names: list[str], want: int) -> bool:
    with fleet.client() as client:
        apps = {a.metadata.name: a for a in client.list_apps("bench")}
    return all(n in apps and apps[n].status.ready_replicas >= want for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=50, help="apps at one site for the memory")
    parser.add_argument("--rounds", type=int, default=5, help="apps timed from apply to ready")
    args = parser.parse_args()
    binaries = find_binaries()
    if isinstance(binaries, str):
        sys.exit(binaries)
    with tempfile.TemporaryDirectory(prefix="kube-driver-") as tmp:
        work = Path(tmp)
        clusters = {n: KubeCluster(work / f"kube-{n}", n, binaries) for n in SITES}
        try:
            with ThreadPoolExecutor(len(clusters)) as pool:
                list(pool.map(lambda c: c.start(timeout=180), clusters.values()))
            fleet = LocalFleet(
                workdir=work / "fleet",
                hub_port=free_port(),
                dns_port=free_port(),
                placement_resync=2.0,
                agent_args={
                    n: ["--driver", "kubernetes", "--kubeconfig", str(c.kubeconfig), "--context", n]
                    for n, c in clusters.items()
                },
            )
            with fleet.running():
                fleet.start_hub()
                sites = [site(n, i, driver=DriverName.KUBERNETES) for i, n in enumerate(SITES)]
                reference = site("process-site", 9, driver=DriverName.PROCESS)
                with fleet.client() as client:
                    for s in [*sites, reference]:
                        client.apply(s)
                fleet.start_agents([*sites, reference])
                time.sleep(3)  # let the agents settle after start
                idle = rss_mib(fleet.agents["alpha"].pid)
                idle_process = rss_mib(fleet.agents["process-site"].pid)

                took = []
                for k in range(args.rounds):
                    name = f"spread-{k}"
                    started = time.monotonic()
                    with fleet.client() as client:
                        client.apply(app(name, 6, SITES))
                    wait_for(lambda name=name: ready(fleet, [name], 6), timeout=120, what=name)
                    took.append(time.monotonic() - started)

                names = [f"app-{k:02d}" for k in range(args.apps)]
                started = time.monotonic()
                with fleet.client() as client:
                    for name in names:
                        client.apply(app(name, 2, ("alpha",)))
                wait_for(lambda: ready(fleet, names, 2), timeout=300, interval=0.5, what="apps")
                many = time.monotonic() - started
                time.sleep(5)  # a few reconcile rounds with everything running
                loaded = rss_mib(fleet.agents["alpha"].pid)
                hub = rss_mib(fleet.hub_process.pid) if fleet.hub_process else 0.0
        finally:
            for cluster in clusters.values():
                cluster.stop()

    print(f"apply -> 6 ready replicas at three sites ({args.rounds} apps, one after the other)")
    print(f"  median {statistics.median(took):.2f} s, min {min(took):.2f} s, max {max(took):.2f} s")
    print(
        f"{args.apps} apps x 2 replicas at one site: all ready {many:.1f} s after the first apply"
    )
    print("agent RSS, MiB")
    print(f"  kubernetes driver, no app            {idle:7.1f}")
    print(f"  kubernetes driver, {args.apps} apps ({2 * args.apps} pods) {loaded:7.1f}")
    print(f"  reference: process driver, no app    {idle_process:7.1f}")
    print(f"  hub (for scale)                      {hub:7.1f}")


if __name__ == "__main__":
    main()
