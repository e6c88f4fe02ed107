"""The kubernetes driver against a real control plane (etcd, kube-apiserver, controller-manager,
scheduler) whose nodes are kwok's: pods are scheduled, marked Running and Ready, and listed in
EndpointSlices by the real controllers, without running any container.

The cluster is shared by the module; each test uses its own site and tenant, so its objects and
namespaces are its own. Needs the binaries from ``make kube``; skipped without them.
"""

from __future__ import annotations

import importlib.util
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

if importlib.util.find_spec("edgefleet.testbed.kube") is None:
    pytest.skip("edgefleet.testbed.kube is not there: no test clusters", allow_module_level=True)
kubernetes = pytest.importorskip("kubernetes")

from edgefleet.agent.drivers.kube_objects import (  # noqa: E402
    APP_LABEL,
    DEPLOYMENT,
    MANAGED_BY,
    SERVICE,
    SITE_LABEL,
    TENANT_LABEL,
    VIRTUAL_MACHINE,
    ObjectRef,
    site_selector,
)
from edgefleet.agent.drivers.kubernetes import (  # noqa: E402
    ClusterApi,
    KubeRefused,
    KubernetesDriver,
    KubeUnavailable,
    connect,
)
from edgefleet.model import AppAssignment  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
CRDS = Path(__file__).with_name("crds")
AGENT_USER = "system:serviceaccount:edgefleet-system:edgefleet-agent"
_ids = itertools.count(1)


def eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(0.1)


def app(
    name: str,
    tenant: str,
    *,
    replicas: int,
    workload: dict[str, Any] | None = None,
    generation: int = 1,
) -> AppAssignment:
    return AppAssignment.model_validate(
        {
            "tenant": tenant,
            "app": name,
            "generation": generation,
            "replicas": replicas,
            "workload": workload or {"type": "container", "image": "nginx:1.27", "port": 80},
        }
    )


class Changes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def ready(driver: KubernetesDriver, key: str) -> int:
    return sum(r.ready for r in driver.observe().get(key, []))


@pytest.fixture(scope="module")
def admin(kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The official client's dynamic client, with discovery, as the cluster's admin."""
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kube_cluster.kubeconfig),
        context=kube_cluster.name,
        client_configuration=configuration,
        persist_config=False,
    )
    client = kubernetes.client.ApiClient(configuration)
    cache = tmp_path_factory.mktemp("discovery") / "cache.json"
    yield kubernetes.dynamic.DynamicClient(client, cache_file=str(cache))
    client.close()


@pytest.fixture
def names() -> tuple[str, str]:
    """A site and a tenant of this test's own."""
    n = next(_ids)
    return f"site-{n}", f"tenant-{n}"


@pytest.fixture
def make_driver(kube_cluster: Any) -> Iterator[Callable[..., KubernetesDriver]]:
    drivers: list[KubernetesDriver] = []

    def make(site: str, api: ClusterApi | None = None, **kwargs: Any) -> KubernetesDriver:
        options: dict[str, Any] = {"poll": 2.0, "resync": 30.0, "watch_timeout": 10}
        options.update(kwargs)
        api = api or connect(kubeconfig=kube_cluster.kubeconfig, context=kube_cluster.name)
        driver = KubernetesDriver(site, api, **options)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


def admin_api(kube_cluster: Any) -> ClusterApi:
    return connect(kubeconfig=kube_cluster.kubeconfig, context=kube_cluster.name)


def get(api: ClusterApi, ref: ObjectRef, selector: str) -> dict[str, Any] | None:
    kind = {"Deployment": DEPLOYMENT, "Service": SERVICE, "VirtualMachine": VIRTUAL_MACHINE}
    for item in api.list(kind[ref.kind], selector):
        meta = item["metadata"]
        if (meta["namespace"], meta["name"]) == (ref.namespace, ref.name):
            return item
    return None


def test_an_app_runs_scales_sleeps_and_is_adopted(
    kube_cluster: Any, make_driver: Callable[..., KubernetesDriver], names: tuple[str, str]
) -> None:
    site, tenant = names
    key = f"{tenant}/web"
    api = admin_api(kube_cluster)
    selector = site_selector(site)
    deployment = ObjectRef("Deployment", f"ef-{tenant}", "web")
    service = ObjectRef("Service", f"ef-{tenant}", "web")

    driver = make_driver(site)
    changes = Changes()
    driver.start(changes)
    driver.converge([app("web", tenant, replicas=2)])
    eventually(lambda: get(api, deployment, selector) is not None, what="Deployment applied")
    stored = get(api, service, selector)
    assert stored is not None
    assert stored["spec"]["type"] == "ClusterIP"
    assert stored["spec"]["ports"][0]["port"] == 80
    assert stored["metadata"]["labels"] == {
        MANAGED_BY: "edgefleet",
        TENANT_LABEL: tenant,
        APP_LABEL: "web",
        SITE_LABEL: site,
    }
    eventually(lambda: ready(driver, key) == 2, what="2 ready pods (kwok)")
    assert changes.count >= 1
    replicas = driver.replicas()[key]
    assert all(r.address and r.port == 80 and r.state == "running" for r in replicas)
    assert len({r.id for r in replicas}) == 2

    driver.converge([app("web", tenant, replicas=3)])
    eventually(lambda: ready(driver, key) == 3, what="scaled to 3")

    driver.converge([app("web", tenant, replicas=0)])
    eventually(lambda: key not in driver.observe(), what="scaled to 0")
    kept = get(api, deployment, selector)
    assert kept is not None and kept["spec"]["replicas"] == 0
    assert get(api, service, selector) is not None

    driver.converge([app("web", tenant, replicas=1)])
    eventually(lambda: ready(driver, key) == 1)
    driver.close()  # the app keeps running

    successor = make_driver(site)
    successor.start(Changes())
    eventually(lambda: ready(successor, key) == 1, what="adopted by a new driver")
    assert successor.wait_for_round(30)
    assert get(api, deployment, selector) is not None  # nothing deleted before a converge
    api.close()


def test_removing_an_app_deletes_only_what_the_site_owns(
    kube_cluster: Any,
    admin: Any,
    make_driver: Callable[..., KubernetesDriver],
    names: tuple[str, str],
) -> None:
    site, tenant = names
    namespace = f"ef-{tenant}"
    driver = make_driver(site)
    driver.start(Changes())
    driver.converge([app("web", tenant, replicas=1), app("api", tenant, replicas=1)])
    eventually(lambda: ready(driver, f"{tenant}/web") == 1 and ready(driver, f"{tenant}/api") == 1)

    deployments = admin.resources.get(api_version="apps/v1", kind="Deployment")
    labels = {"team": "ops"}
    unowned = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ops-tool", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "tool", "image": "busybox:1"}]},
            },
        },
    }
    # Another site's app in the same namespace: same labels but the site.
    other_labels = {MANAGED_BY: "edgefleet", TENANT_LABEL: tenant, APP_LABEL: "web"}
    other = {
        **unowned,
        "metadata": {
            "name": "web-elsewhere",
            "namespace": namespace,
            "labels": {**other_labels, SITE_LABEL: f"{site}-other"},
        },
    }
    deployments.create(body=unowned, namespace=namespace)
    deployments.create(body=other, namespace=namespace)

    driver.converge([app("api", tenant, replicas=1)])
    api = admin_api(kube_cluster)
    selector = site_selector(site)
    gone = [ObjectRef(kind, namespace, "web") for kind in ("Deployment", "Service")]
    eventually(lambda: all(get(api, ref, selector) is None for ref in gone), what="web deleted")
    eventually(lambda: f"{tenant}/web" not in driver.observe(), what="web's pods gone")
    assert deployments.get(name="ops-tool", namespace=namespace).metadata.name == "ops-tool"
    assert deployments.get(name="web-elsewhere", namespace=namespace).metadata.name
    assert get(api, ObjectRef("Deployment", namespace, "api"), selector) is not None
    namespaces = admin.resources.get(api_version="v1", kind="Namespace")
    assert namespaces.get(name=namespace).metadata.name == namespace  # namespaces stay
    api.close()


def test_a_deployment_scaled_by_hand_is_put_back(
    kube_cluster: Any,
    admin: Any,
    make_driver: Callable[..., KubernetesDriver],
    names: tuple[str, str],
) -> None:
    site, tenant = names
    namespace = f"ef-{tenant}"
    # Poll and resync far away: the watch must bring it back.
    driver = make_driver(site, poll=600.0, resync=600.0)
    driver.start(Changes())
    driver.converge([app("web", tenant, replicas=2)])
    eventually(lambda: ready(driver, f"{tenant}/web") == 2)
    deployments = admin.resources.get(api_version="apps/v1", kind="Deployment")
    # A hand edit, as `kubectl patch` makes it: another field manager takes the replicas.
    deployments.patch(
        body={"spec": {"replicas": 5}},
        name="web",
        namespace=namespace,
        content_type="application/merge-patch+json",
    )
    seen: list[int] = []

    def put_back() -> bool:
        replicas = int(deployments.get(name="web", namespace=namespace).spec.replicas)
        seen.append(replicas)
        return replicas == 2 and len(seen) > 1

    eventually(put_back, what="replicas back to 2")
    eventually(lambda: ready(driver, f"{tenant}/web") == 2)


def test_a_function_sleeps_until_woken(
    make_driver: Callable[..., KubernetesDriver], names: tuple[str, str], kube_cluster: Any
) -> None:
    site, tenant = names
    key = f"{tenant}/thumbs"
    function = {"type": "function", "image": "ghcr.io/shop/thumbs:2"}
    driver = make_driver(site)
    driver.start(Changes())
    driver.converge([app("thumbs", tenant, replicas=0, workload=function)])
    api = admin_api(kube_cluster)
    ref = ObjectRef("Deployment", f"ef-{tenant}", "thumbs")
    eventually(lambda: get(api, ref, site_selector(site)) is not None, what="Deployment at 0")
    assert driver.wait_for_round(30)
    assert key not in driver.observe()
    driver.converge([app("thumbs", tenant, replicas=1, workload=function)])
    eventually(lambda: ready(driver, key) == 1, what="woken")
    api.close()


def install_virtual_machine_crd(admin: Any, api: ClusterApi) -> None:
    crds = admin.resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    body = yaml.safe_load((CRDS / "virtualmachines.kubevirt.io.yaml").read_text())
    crds.server_side_apply(body=body, field_manager="edgefleet-tests", force_conflicts=True)

    def served() -> bool:
        try:
            api.list(VIRTUAL_MACHINE, "edgefleet.io/none=1")
        except (KubeRefused, KubeUnavailable):  # 404, then 429 while its storage starts
            return False
        return True

    eventually(served, what="VirtualMachine served")


def test_a_vm_app_becomes_a_virtual_machine(
    kube_cluster: Any,
    admin: Any,
    make_driver: Callable[..., KubernetesDriver],
    names: tuple[str, str],
) -> None:
    site, tenant = names
    api = admin_api(kube_cluster)
    install_virtual_machine_crd(admin, api)
    workload = {"type": "vm", "image": "quay.io/containerdisks/fedora:40", "cloudInit": "#c\n"}
    driver = make_driver(site)
    driver.start(Changes())
    driver.converge([app("legacy", tenant, replicas=1, workload=workload)])
    ref = ObjectRef("VirtualMachine", f"ef-{tenant}", "legacy")
    selector = site_selector(site)
    eventually(lambda: get(api, ref, selector) is not None, what="VirtualMachine applied")
    vm = get(api, ref, selector)
    assert vm is not None
    assert vm["spec"]["runStrategy"] == "Always"
    volumes = vm["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["containerDisk"]["image"] == "quay.io/containerdisks/fedora:40"
    assert volumes[1]["cloudInitNoCloud"]["userData"] == "#c\n"
    assert get(api, ObjectRef("Service", f"ef-{tenant}", "legacy"), selector) is not None
    assert driver.problems == {}

    driver.converge([app("legacy", tenant, replicas=0, workload=workload, generation=2)])
    eventually(
        lambda: (get(api, ref, selector) or {}).get("spec", {}).get("runStrategy") == "Halted",
        what="halted at 0",
    )
    driver.converge([])
    eventually(lambda: get(api, ref, selector) is None, what="VirtualMachine deleted")
    api.close()


def apply_manifests(admin: Any, paths: list[Path]) -> None:
    for path in paths:
        for body in yaml.safe_load_all(path.read_text()):
            if not body:
                continue
            resource = admin.resources.get(api_version=body["apiVersion"], kind=body["kind"])
            resource.server_side_apply(
                body=body,
                namespace=body["metadata"].get("namespace"),
                field_manager="edgefleet-tests",
                force_conflicts=True,
            )


def allowed(admin: Any, verb: str, resource: str, **where: str) -> bool:
    reviews = admin.resources.get(api_version="authorization.k8s.io/v1", kind="SubjectAccessReview")
    attributes = {"verb": verb, "resource": resource, **where}
    answer = reviews.create(
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": AGENT_USER,
                "groups": ["system:serviceaccounts", "system:serviceaccounts:edgefleet-system"],
                "resourceAttributes": attributes,
            },
        }
    )
    return bool(answer.status.allowed)


def test_the_agents_service_account_can_do_what_the_driver_needs_and_no_more(
    kube_cluster: Any,
    admin: Any,
    make_driver: Callable[..., KubernetesDriver],
    names: tuple[str, str],
) -> None:
    manifests = ("namespace.yaml", "rbac.yaml", "agent.yaml")
    apply_manifests(admin, [ROOT / "deploy" / name for name in manifests])
    site, tenant = names
    namespace = f"ef-{tenant}"
    needed = [
        ("create", "namespaces", {}),
        ("patch", "namespaces", {}),
        ("list", "deployments", {"group": "apps"}),
        ("watch", "deployments", {"group": "apps"}),
        ("patch", "deployments", {"group": "apps", "namespace": namespace}),
        ("delete", "services", {"namespace": namespace}),
        ("list", "endpointslices", {"group": "discovery.k8s.io"}),
        ("watch", "pods", {}),
        ("get", "pods", {"namespace": namespace, "subresource": "log"}),
        ("create", "virtualmachines", {"group": "kubevirt.io", "namespace": namespace}),
    ]
    for verb, resource, where in needed:
        assert allowed(admin, verb, resource, **where), (verb, resource, where)
    beyond = [
        ("delete", "namespaces", {}),
        ("get", "secrets", {"namespace": "kube-system"}),
        ("list", "secrets", {}),
        ("create", "pods", {"namespace": namespace}),
        ("delete", "pods", {"namespace": namespace}),
        ("update", "deployments", {"group": "apps", "namespace": namespace}),
        ("patch", "nodes", {}),
        ("create", "clusterrolebindings", {"group": "rbac.authorization.k8s.io"}),
        ("patch", "endpointslices", {"group": "discovery.k8s.io", "namespace": namespace}),
        ("impersonate", "users", {}),
    ]
    for verb, resource, where in beyond:
        assert not allowed(admin, verb, resource, **where), (verb, resource, where)

    # And the driver really runs with only these rights: impersonate the service account.
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kube_cluster.kubeconfig),
        context=kube_cluster.name,
        client_configuration=configuration,
        persist_config=False,
    )
    client = kubernetes.client.ApiClient(configuration)
    client.set_default_header("Impersonate-User", AGENT_USER)
    driver = make_driver(site, ClusterApi(client))
    driver.start(Changes())
    driver.converge([app("web", tenant, replicas=1)])
    eventually(lambda: ready(driver, f"{tenant}/web") == 1, what="running as the agent")
    assert driver.problems == {} and not driver.unreachable
    driver.converge([])
    api = admin_api(kube_cluster)
    eventually(
        lambda: get(api, ObjectRef("Deployment", namespace, "web"), site_selector(site)) is None,
        what="deleted as the agent",
    )
    assert not driver.unreachable
    api.close()


def test_an_api_server_that_goes_away(
    kube_cluster: Any, make_driver: Callable[..., KubernetesDriver], names: tuple[str, str]
) -> None:
    site, tenant = names
    key = f"{tenant}/web"
    driver = make_driver(site, poll=1.0)
    driver.start(Changes())
    driver.converge([app("web", tenant, replicas=2)])
    eventually(lambda: ready(driver, key) == 2)
    before = driver.observe()
    kube_cluster.stop_apiserver()
    try:
        eventually(lambda: driver.unreachable, what="unreachable")
        assert driver.observe() == before
        driver.converge([app("web", tenant, replicas=3)])  # returns; applied once it is back
        assert driver.wait_for_round(30)
        assert driver.unreachable
    finally:
        kube_cluster.start_apiserver()
    eventually(lambda: not driver.unreachable, timeout=120, what="reachable again")
    eventually(lambda: ready(driver, key) == 3, timeout=120, what="the converge made meanwhile")
