"""Test clusters (edgefleet.testbed.kube): a real control plane on loopback whose nodes are kwok's.

The first tests need no binaries: where the cluster listens, and what ``find_binaries`` says. The
others run clusters, and are skipped without ``make kube``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.testbed.kube import (
    BIN_ENV,
    BINARY_FILES,
    POD_CIDR,
    ClusterLayout,
    ClusterPorts,
    KubeBinaries,
    KubeCluster,
    find_binaries,
    plan_components,
    ready_nodes,
)

kubernetes = pytest.importorskip("kubernetes")


def eventually(check: Callable[[], Any], *, timeout: float = 60.0, what: str) -> Any:
    """The first truthy value of ``check()``; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)


def http(cluster: KubeCluster, token: str | None) -> httpx.Client:
    """A client of the cluster's API that trusts its CA, with ``token`` if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    context = ssl.create_default_context(cafile=str(cluster.layout.ca_cert))
    return httpx.Client(base_url=cluster.server, verify=context, headers=headers, timeout=5.0)


def official_client(cluster: KubeCluster) -> Any:
    """The official Python client, configured from the cluster's kubeconfig and context."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(cluster.kubeconfig),
        context=cluster.name,
        client_configuration=configuration,
        persist_config=False,
    )
    return kubernetes.client.ApiClient(configuration)


def gone(pid: int) -> bool:
    """Whether a process no longer runs (reaped, or a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


# -- without binaries ---------------------------------------------------------------------------


def test_every_listener_and_every_address_a_process_dials_is_the_loopback_host() -> None:
    host = "127.0.0.7"
    components = plan_components(
        name="c",
        host=host,
        ports=ClusterPorts(2001, 2002, 2003, 2004, 2005, 2006),
        layout=ClusterLayout(Path("/w")),
        binaries=KubeBinaries.in_dir(Path("/bin-dir")),
    )
    assert [c.name for c in components] == [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ]
    address_flags = (
        "listen",
        "advertise",
        "initial-cluster",
        "bind-address",
        "server-address",
        "etcd-servers",
        "node-ip",
    )
    checked = set()
    for component in components:
        assert host in component.health
        for argument in component.argv[1:]:
            flag, _, value = argument.partition("=")
            assert "0.0.0.0" not in value, argument
            if any(word in flag for word in address_flags) and "token" not in flag:
                assert host in value, argument
                checked.add(f"{component.name} {flag}")
    assert checked == {
        "etcd --listen-client-urls",
        "etcd --advertise-client-urls",
        "etcd --listen-peer-urls",
        "etcd --initial-advertise-peer-urls",
        "etcd --initial-cluster",
        "kube-apiserver --etcd-servers",
        "kube-apiserver --bind-address",
        "kube-apiserver --advertise-address",
        "kube-controller-manager --bind-address",
        "kube-scheduler --bind-address",
        "kwok --server-address",
        "kwok --node-ip",
    }


def test_find_binaries_says_what_to_build_and_finds_what_was_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BIN_ENV, raising=False)
    reason = find_binaries(tmp_path)
    assert isinstance(reason, str)
    assert "make kube" in reason and str(tmp_path) in reason

    bin_dir = tmp_path / "built" / "bin"
    bin_dir.mkdir(parents=True)
    for name in BINARY_FILES:
        (bin_dir / name).write_text("")
        (bin_dir / name).chmod(0o755)
    (tmp_path / ".cache" / "kube").mkdir(parents=True)
    (tmp_path / ".cache" / "kube" / "current").write_text(f"{bin_dir}\n")
    assert find_binaries(tmp_path) == KubeBinaries.in_dir(bin_dir)

    (bin_dir / "kwok").chmod(0o644)
    reason = find_binaries(tmp_path)
    assert isinstance(reason, str) and str(bin_dir / "kwok") in reason

    monkeypatch.setenv(BIN_ENV, str(tmp_path / "elsewhere"))
    reason = find_binaries(tmp_path)
    assert isinstance(reason, str) and BIN_ENV in reason


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::1", "localhost"])
def test_a_cluster_binds_nothing_but_an_ipv4_loopback_address(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        KubeCluster(tmp_path, "c", KubeBinaries.in_dir(tmp_path), host=host)


def test_ready_nodes_reads_the_ready_condition() -> None:
    def node(name: str, **conditions: str) -> dict[str, Any]:
        listed = [{"type": kind, "status": status} for kind, status in conditions.items()]
        return {"metadata": {"name": name}, "status": {"conditions": listed}}

    nodes = {
        "items": [
            node("b", Ready="True"),
            node("a", MemoryPressure="False", Ready="True"),
            node("c", Ready="False"),
            node("d", Ready="Unknown"),
            node("e"),
        ]
    }
    assert ready_nodes(nodes) == ["a", "b"]


# -- with a running cluster ---------------------------------------------------------------------


@pytest.mark.slow
def test_the_api_answers_its_token_and_refuses_anyone_else(kube_cluster: KubeCluster) -> None:
    with http(kube_cluster, kube_cluster.token) as admin:
        namespaces = admin.get("/api/v1/namespaces")
        assert namespaces.status_code == 200
        assert "kube-system" in {n["metadata"]["name"] for n in namespaces.json()["items"]}
        version = admin.get("/version").json()
        # The build stamps the pinned version in, as upstream's release builds do.
        assert version["gitVersion"].startswith("v1.") and version["major"] == "1"
    for token in (None, "not-the-token", kube_cluster.token[:-1]):
        with http(kube_cluster, token) as stranger:
            assert stranger.get("/api/v1/namespaces").status_code == 401, token
    assert kube_cluster.server.startswith("https://127.0.0.1:")
    # Every process listens on 127.0.0.1 alone: a wildcard listener would answer on 127.0.0.2.
    for port in vars(kube_cluster.ports).values():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) == 0, port
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.2", port)) != 0, port


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace of the test's own."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    client = official_client(kube_cluster)
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)
    client.close()


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    container = {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


@pytest.mark.slow
def test_a_deployment_gets_running_ready_pods_on_kwok_nodes(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    client = official_client(kube_cluster)
    apps = kubernetes.client.AppsV1Api(client)
    core = kubernetes.client.CoreV1Api(client)
    apps.create_namespaced_deployment(namespace, deployment("web", 3))

    def ready_replicas() -> int:
        status = apps.read_namespaced_deployment_status("web", namespace).status
        return int(status.ready_replicas or 0)

    eventually(lambda: ready_replicas() == 3, what="3 ready replicas")
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    nodes = {n.metadata.name for n in core.list_node().items}
    assert len(nodes) == 3
    pod_network = ipaddress.ip_network(POD_CIDR)
    for pod in pods:
        assert pod.status.phase == "Running"
        conditions = {c.type: c.status for c in pod.status.conditions}
        assert conditions["Ready"] == "True"
        assert pod.spec.node_name in nodes
        assert ipaddress.ip_address(pod.status.pod_ip) in pod_network
        assert pod.status.host_ip == "127.0.0.1"
        assert all(s.ready and s.state.running for s in pod.status.container_statuses)

    # Scaled down, the surplus pods go away (kwok plays the kubelet's part in deleting them).
    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    eventually(
        lambda: len(core.list_namespaced_pod(namespace, label_selector="app=web").items) == 1,
        what="scaled down to 1 pod",
    )
    assert ready_replicas() == 1
    client.close()


@pytest.mark.slow
def test_an_api_server_stopped_is_unreachable_and_comes_back_with_the_data(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    client = official_client(kube_cluster)
    core = kubernetes.client.CoreV1Api(client)
    marker = uuid.uuid4().hex
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "marker"}, "data": {"value": marker}}
    )
    apiserver = kube_cluster.pids()["kube-apiserver"]

    kube_cluster.stop_apiserver()
    assert gone(apiserver)
    assert "kube-apiserver" not in kube_cluster.pids()
    assert {"etcd", "kube-controller-manager", "kube-scheduler", "kwok"} <= set(kube_cluster.pids())
    with http(kube_cluster, kube_cluster.token) as admin, pytest.raises(httpx.ConnectError):
        admin.get("/readyz")

    kube_cluster.start_apiserver()
    assert kube_cluster.pids()["kube-apiserver"] != apiserver
    assert core.read_namespaced_config_map("marker", namespace).data == {"value": marker}
    # The controllers came back to it too: a new Deployment is served.
    apps = kubernetes.client.AppsV1Api(client)
    apps.create_namespaced_deployment(namespace, deployment("after", 2))
    eventually(
        lambda: (
            (apps.read_namespaced_deployment_status("after", namespace).status.ready_replicas) == 2
        ),
        what="a Deployment made after the restart gets ready",
    )
    client.close()


@pytest.mark.slow
def test_two_clusters_side_by_side_do_not_see_each_other(
    kube_cluster: KubeCluster, kube_binaries: KubeBinaries, tmp_path: Path
) -> None:
    other = KubeCluster(tmp_path / "other", "other", kube_binaries, nodes=1)
    assert not set(vars(other.ports).values()) & set(vars(kube_cluster.ports).values())
    with other.running():
        pids = other.pids()
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert not set(pids.values()) & set(kube_cluster.pids().values())
        with http(other, other.token) as mine, http(kube_cluster, kube_cluster.token) as theirs:
            name = f"only-{uuid.uuid4().hex[:8]}"
            made = mine.post("/api/v1/namespaces", json={"metadata": {"name": name}})
            assert made.status_code == 201
            assert theirs.get(f"/api/v1/namespaces/{name}").status_code == 404
            assert len(mine.get("/api/v1/nodes").json()["items"]) == 1
            assert len(theirs.get("/api/v1/nodes").json()["items"]) == 3
        # Each cluster has its own CA and tokens: one's admin is nobody to the other.
        with http(kube_cluster, other.token) as crossed:
            assert crossed.get("/api/v1/namespaces").status_code == 401
        assert other.layout.ca_cert.read_bytes() != kube_cluster.layout.ca_cert.read_bytes()
    # Stopped: every process is gone, and the first cluster still answers.
    assert other.pids() == {}
    assert all(gone(pid) for pid in pids.values())
    with http(kube_cluster, kube_cluster.token) as theirs:
        assert theirs.get("/readyz").status_code == 200
    for log in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        assert (other.layout.logs / f"{log}.log").stat().st_size > 0, log
    assert os.stat(other.layout.tokens).st_mode & 0o077 == 0
