"""A test cluster's cost: the time to start one, its memory, and a Deployment's time to ready.

Builds the control plane if needed (tools/kube-build.sh prints the build's wall and CPU time and
the binaries' sizes), then, for each round, starts a fresh cluster (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok with its nodes) in its own temp directory and
measures:

- start: from nothing to the API ready and every kwok node Ready (``KubeCluster.start``);
- RSS of every process once ready, and again after the Deployment;
- a Deployment of ``--replicas`` pods created through the API until it reports them all ready
  (scheduled by the real scheduler, Running and Ready through kwok);
- stop: every process ended.

    .venv/bin/python bench/kube_cluster.py [--rounds N] [--nodes N] [--replicas N] [--no-build]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefleet.testbed.kube import KubeCluster, find_binaries

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def deployment(replicas: int) -> dict[str, object]:
    labels = {"app": "bench"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "bench", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="clusters to start, one at a time")
    parser.add_argument("--nodes", type=int, default=3, help="kwok nodes per cluster")
    parser.add_argument("--replicas", type=int, default=50, help="pods of the Deployment")
    parser.add_argument("--no-build", action="store_true", help="use what is built, if any")
    args = parser.parse_args()

    if not args.no_build:
        built = subprocess.run([str(ROOT / "tools" / "kube-build.sh")], check=False)
        if built.returncode != 0:
            return built.returncode
    binaries = find_binaries(ROOT)
    if isinstance(binaries, str):
        print(binaries)
        return 1

    starts: list[float] = []
    readies: list[float] = []
    stops: list[float] = []
    rss_ready: dict[str, list[float]] = {}
    rss_loaded: dict[str, list[float]] = {}
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="edgefleet-kube-") as tmp:
            cluster = KubeCluster(Path(tmp), f"bench{round_}", binaries, nodes=args.nodes)
            started = time.perf_counter()
            cluster.start()
            starts.append(time.perf_counter() - started)
            try:
                for name, pid in cluster.pids().items():
                    rss_ready.setdefault(name, []).append(rss_mib(pid))
                with cluster.api() as api:
                    api.post("/api/v1/namespaces", json={"metadata": {"name": "bench"}})
                    started = time.perf_counter()
                    made = api.post(
                        "/apis/apps/v1/namespaces/bench/deployments", json=deployment(args.replicas)
                    )
                    made.raise_for_status()
                    deadline = time.monotonic() + 300
                    while True:
                        status = api.get("/apis/apps/v1/namespaces/bench/deployments/bench").json()
                        if status.get("status", {}).get("readyReplicas") == args.replicas:
                            break
                        if time.monotonic() > deadline:
                            print(f"round {round_}: the Deployment is not ready after 300 s")
                            return 1
                        time.sleep(0.05)
                    readies.append(time.perf_counter() - started)
                for name, pid in cluster.pids().items():
                    rss_loaded.setdefault(name, []).append(rss_mib(pid))
            finally:
                started = time.perf_counter()
                cluster.stop()
                stops.append(time.perf_counter() - started)
            total = sum(values[-1] for values in rss_ready.values())
            print(
                f"round {round_}: start {starts[-1]:5.1f} s, RSS {total:5.0f} MiB, "
                f"{args.replicas} pods ready {readies[-1]:5.1f} s, stop {stops[-1]:4.1f} s"
            )

    print()
    print(f"one test cluster ({args.nodes} kwok nodes), {args.rounds} rounds:")
    print(
        f"  start to ready nodes   median {statistics.median(starts):5.1f} s   "
        f"max {max(starts):5.1f} s"
    )
    print(
        f"  Deployment of {args.replicas} ready   median {statistics.median(readies):5.1f} s   "
        f"max {max(readies):5.1f} s"
    )
    print(f"  stop                   median {statistics.median(stops):5.1f} s")
    print("  RSS, MiB (median)        ready   after the Deployment")
    for name in rss_ready:
        print(
            f"    {name:<24}{statistics.median(rss_ready[name]):6.0f}"
            f"   {statistics.median(rss_loaded.get(name, [0.0])):6.0f}"
        )
    ready_total = sum(statistics.median(v) for v in rss_ready.values())
    loaded_total = sum(statistics.median(v) for v in rss_loaded.values())
    print(f"    {'all':<24}{ready_total:6.0f}   {loaded_total:6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
