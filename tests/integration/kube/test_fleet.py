"""Three test clusters as three sites: the fleet drives real Kubernetes API servers.

A hub and three agents (``--driver kubernetes``), each agent managing its own cluster (etcd,
kube-apiserver, controller-manager, scheduler, kwok nodes). Apps are applied at the hub only;
the test reads the clusters with the official client to see what the fleet did there.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.localfleet import LocalFleet, free_port, wait_for
from edgefleet.model import App, DriverName, Site, SitePhase
from edgefleet.testbed.kube import KubeBinaries, KubeCluster
from tests.factories import make_site

kubernetes = pytest.importorskip("kubernetes")

pytestmark = pytest.mark.slow

SITES = ("alpha", "beta", "gamma")
TENANT = "demo"
NAMESPACE = f"ef-{TENANT}"


def web(replicas: int, *, sites: tuple[str, ...] = SITES, generation_env: str = "1") -> App:
    return App.model_validate(
        {
            "metadata": {"name": "web", "tenant": TENANT},
            "spec": {
                "workload": {
                    "type": "container",
                    "image": "registry.local/web:1",
                    "env": {"VERSION": generation_env},
                },
                "resources": {"cpu": "100m", "memory": "64Mi"},
                "placement": {"replicas": replicas, "selector": {"sites": list(sites)}},
            },
        }
    )


def kube_site(name: str, index: int) -> Site:
    site = make_site(name, ip=f"127.0.60.{index + 1}", port=free_port(f"127.0.60.{index + 1}"))
    spec = site.spec.model_copy(update={"driver": DriverName.KUBERNETES})
    return site.model_copy(update={"spec": spec})


@pytest.fixture(scope="module")
def clusters(
    kube_binaries: KubeBinaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, KubeCluster]]:
    made = {
        name: KubeCluster(tmp_path_factory.mktemp(f"kube-{name}"), name, kube_binaries)
        for name in SITES
    }
    try:
        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(lambda c: c.start(timeout=180), made.values()))
        yield made
    finally:
        for cluster in made.values():
            cluster.stop()


@pytest.fixture(scope="module")
def kube_fleet(
    clusters: dict[str, KubeCluster], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalFleet]:
    workdir = tmp_path_factory.mktemp("fleet")
    local = LocalFleet(
        workdir=workdir,
        hub_port=free_port(),
        dns_port=free_port(),
        placement_resync=2.0,
        agent_args={
            name: [
                "--driver",
                "kubernetes",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "--context",
                name,
                "--dns-port",
                "-1",
            ]
            for name, cluster in clusters.items()
        },
    )
    with local.running():
        local.start_hub()
        sites = [kube_site(name, i) for i, name in enumerate(SITES)]
        with local.client() as client:
            for site in sites:
                client.apply(site)
        local.start_agents(sites)
        yield local


def apps_api(cluster: KubeCluster) -> Any:
    client = kubernetes.config.new_client_from_config(
        config_file=str(cluster.kubeconfig), context=cluster.name
    )
    return kubernetes.client.AppsV1Api(client)


def deployments(clusters: dict[str, KubeCluster]) -> dict[str, tuple[int, int]]:
    """Per site, (spec replicas, ready replicas) of the ``web`` Deployment; absent: missing."""
    out = {}
    for name, cluster in clusters.items():
        api = apps_api(cluster)
        found = api.list_namespaced_deployment(
            NAMESPACE, label_selector="app.kubernetes.io/managed-by=edgefleet"
        ).items
        for d in found:
            if d.metadata.name == "web":
                out[name] = (d.spec.replicas, d.status.ready_replicas or 0)
        api.api_client.close()
    return out


def hub_view(local: LocalFleet) -> dict[str, tuple[int, int]]:
    """Per site, (desired, ready) of ``web`` as the hub sees it."""
    with local.client() as client:
        app = client.get_app(TENANT, "web")
    return {s.site: (s.desired, s.ready) for s in app.status.sites if s.desired or s.ready}


def settled(local: LocalFleet, clusters: dict[str, KubeCluster], want: dict[str, int]) -> bool:
    """The hub asks ``want`` of the sites, and every cluster runs exactly that, all ready."""
    hub = hub_view(local)
    run = deployments(clusters)
    return (
        {site: d for site, (d, _) in hub.items()} == want
        and all(hub[site][1] == n for site, n in want.items())
        and {site: r for site, (r, _) in run.items() if r} == want
        and all(run[site][1] == n for site, n in want.items())
    )


def wait_settled(
    local: LocalFleet, clusters: dict[str, KubeCluster], want: dict[str, int], what: str
) -> float:
    started = time.monotonic()
    wait_for(lambda: settled(local, clusters, want), timeout=90, interval=0.5, what=what)
    return time.monotonic() - started


def test_apply_scale_move_and_delete(
    kube_fleet: LocalFleet, clusters: dict[str, KubeCluster], tmp_path: Path
) -> None:
    with kube_fleet.client() as client:
        client.apply(web(6))
    took = wait_settled(kube_fleet, clusters, {s: 2 for s in SITES}, "2 ready at each site")
    print(f"[figure] apply -> 6 ready replicas at three sites: {took:.1f} s")

    with kube_fleet.client() as client:
        client.apply(web(9))
    wait_settled(kube_fleet, clusters, {s: 3 for s in SITES}, "scaled to 3 at each site")

    # Moved off gamma: its Deployment goes, the others take its share.
    with kube_fleet.client() as client:
        client.apply(web(6, sites=("alpha", "beta")))
    wait_settled(kube_fleet, clusters, {"alpha": 3, "beta": 3}, "moved to alpha and beta")
    assert "gamma" not in deployments(clusters)

    with kube_fleet.client() as client:
        client.delete_app(TENANT, "web")
    wait_for(lambda: not deployments(clusters), timeout=60, what="every Deployment deleted")


def test_a_cluster_whose_api_stops_is_compensated_then_reconciled(
    kube_fleet: LocalFleet, clusters: dict[str, KubeCluster]
) -> None:
    with kube_fleet.client() as client:
        client.apply(web(6))
    wait_settled(kube_fleet, clusters, {s: 2 for s in SITES}, "2 ready at each site")

    clusters["gamma"].stop_apiserver()
    try:

        def gamma_unreachable() -> bool:
            with kube_fleet.client() as client:
                site = client.get_site("gamma")
            return site.status.phase == SitePhase.UNREACHABLE and "Kubernetes API" in (
                site.status.message or ""
            )

        wait_for(gamma_unreachable, timeout=60, what="gamma marked unreachable by the hub")
        # Its share goes elsewhere: 6 ready at alpha and beta.
        wait_for(
            lambda: sum(r for site, (_, r) in hub_view(kube_fleet).items() if site != "gamma") >= 6,
            timeout=90,
            what="gamma's replicas compensated at alpha and beta",
        )
    finally:
        clusters["gamma"].start_apiserver()
    # Back: every site runs exactly what the hub asks of it, no duplicates.

    def all_ready() -> bool:
        with kube_fleet.client() as client:
            return all(s.status.phase == SitePhase.READY for s in client.list_sites())

    wait_for(all_ready, timeout=60, what="gamma Ready again")

    def reconciled() -> bool:
        hub = hub_view(kube_fleet)
        want = {site: d for site, (d, _) in hub.items() if d}
        return sum(want.values()) == 6 and settled(kube_fleet, clusters, want)

    wait_for(reconciled, timeout=120, interval=0.5, what="no duplicates after gamma returns")

    with kube_fleet.client() as client:
        client.delete_app(TENANT, "web")
    wait_for(lambda: not deployments(clusters), timeout=60, what="every Deployment deleted")


def test_a_function_sleeps_at_zero_and_a_request_wakes_it(
    kube_fleet: LocalFleet, clusters: dict[str, KubeCluster], cluster_range_guarded: bool
) -> None:
    if not cluster_range_guarded:
        pytest.skip(
            "a woken request is proxied to a kwok pod address: needs the route guard (root)"
        )
    fn = App.model_validate(
        {
            "metadata": {"name": "fn", "tenant": TENANT},
            "spec": {
                "workload": {"type": "function", "image": "registry.local/fn:1"},
                "resources": {"cpu": "100m", "memory": "64Mi"},
                "placement": {"replicas": 3, "selector": {"sites": ["alpha"]}},
                "scaling": {"idleTimeout": "4s", "stableWindow": "2s", "panicWindow": "1s"},
            },
        }
    )
    with kube_fleet.client() as client:
        client.apply(fn)

    def replicas_of_fn() -> tuple[int, int] | None:
        api = apps_api(clusters["alpha"])
        try:
            found = api.list_namespaced_deployment(
                NAMESPACE, label_selector="app.kubernetes.io/managed-by=edgefleet"
            ).items
        finally:
            api.api_client.close()
        for d in found:
            if d.metadata.name == "fn":
                return d.spec.replicas, d.status.ready_replicas or 0
        return None

    # Placed at zero: the Deployment exists with no replica.
    wait_for(lambda: replicas_of_fn() == (0, 0), timeout=60, what="fn's Deployment at zero")
    # A request at the site's ingress wakes it (the activator holds the request meanwhile).
    alpha = kube_fleet.sites["alpha"].spec.addresses
    # The pod is kwok's: nothing serves at its address, so whatever the answer, it is no proof;
    # the Deployment is.
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(
            f"http://{alpha.ip}:{alpha.ingress_port}/",
            headers={"Host": f"fn.{TENANT}.edge.internal"},
            timeout=30,
        )
    wait_for(
        lambda: (found := replicas_of_fn()) is not None and found[0] >= 1 and found[1] >= 1,
        timeout=60,
        what="fn woken: a ready replica",
    )
    # Idle again: back to zero, the objects kept.
    wait_for(lambda: replicas_of_fn() == (0, 0), timeout=60, what="fn asleep again")
    with kube_fleet.client() as client:
        client.delete_app(TENANT, "fn")
