"""The kubernetes driver's pure side: objects from assignments, the reconcile plan, replicas from
listed objects."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.drivers.kube_objects import (
    APP_LABEL,
    GENERATION_ANNOTATION,
    KEY_ANNOTATION,
    MANAGED_BY,
    SITE_LABEL,
    SPEC_HASH_ANNOTATION,
    TENANT_LABEL,
    AppliedObject,
    ObjectRef,
    body_digest,
    check_namespace_prefix,
    cpu_quantity,
    desired_objects,
    fit_name,
    label_value,
    memory_quantity,
    namespace_name,
    object_name,
    object_version,
    observe_replicas,
    plan_reconcile,
    pod_state,
    ref_of,
    site_selector,
)
from edgefleet.model import AppAssignment

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def assignment(
    workload: dict[str, Any],
    *,
    app: str = "web",
    tenant: str = "shop",
    replicas: int = 2,
    generation: int = 3,
    resources: dict[str, Any] | None = None,
) -> AppAssignment:
    return AppAssignment.model_validate(
        {
            "tenant": tenant,
            "app": app,
            "generation": generation,
            "replicas": replicas,
            "workload": workload,
            "resources": resources or {"cpu": "250m", "memory": "128Mi"},
        }
    )


CONTAINER = {"type": "container", "image": "nginx:1.27", "port": 80, "env": {"MODE": "edge"}}
FUNCTION = {"type": "function", "image": "ghcr.io/shop/thumbs:2", "command": ["/thumbs"]}
VM = {"type": "vm", "image": "quay.io/containerdisks/fedora:40", "cloudInit": "#cloud-config\n"}


def by_kind(objects: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("web", {}, "web"),
        ("9lives", {}, "9lives"),  # a DNS-1123 label may start with a digit
        ("a" * 63, {}, "a" * 63),
        ("web", {"letter_first": True}, "web"),
    ],
)
def test_valid_names_are_kept(name: str, kwargs: dict[str, Any], expected: str) -> None:
    assert fit_name(name, **kwargs) == expected


@pytest.mark.parametrize(
    ("name", "kwargs", "prefix"),
    [
        ("a" * 64, {}, "a" * 54 + "-"),
        ("9lives", {"letter_first": True}, "x9lives-"),
        ("Web_App", {}, "web-app-"),
        ("---", {}, "x-"),
        ("", {}, "x-"),
        ("b" * 40, {"max_length": 20}, "b" * 11 + "-"),
    ],
)
def test_other_names_are_cleaned_and_hashed(name: str, kwargs: dict[str, Any], prefix: str) -> None:
    fitted = fit_name(name, **kwargs)
    assert fitted.startswith(prefix)
    assert re.fullmatch(r"[0-9a-f]{8}", fitted[len(prefix) :])
    assert len(fitted) <= kwargs.get("max_length", 63)
    assert fit_name(name, **kwargs) == fitted  # deterministic


@given(st.text(min_size=0, max_size=120), st.booleans(), st.integers(min_value=10, max_value=63))
def test_fitted_names_are_always_dns_labels(name: str, letter_first: bool, limit: int) -> None:
    fitted = fit_name(name, max_length=limit, letter_first=letter_first)
    assert len(fitted) <= limit
    assert (DNS1035 if letter_first else DNS1123).match(fitted), fitted


def test_long_names_that_share_a_prefix_stay_apart() -> None:
    a, b = "t" * 70 + "a", "t" * 70 + "b"
    assert namespace_name(a) != namespace_name(b)
    assert len(namespace_name(a)) == 63


def test_names_of_the_layout() -> None:
    assert namespace_name("shop") == "ef-shop"
    assert namespace_name("shop", "edge-") == "edge-shop"
    assert namespace_name("shop", "") == "shop"
    assert object_name("web") == "web"
    assert DNS1035.match(object_name("1st"))
    assert label_value("paris") == "paris"
    assert label_value("x" * 70) == fit_name("x" * 70)
    assert site_selector("paris") == (
        "app.kubernetes.io/managed-by=edgefleet,edgefleet.io/site=paris"
    )


@pytest.mark.parametrize("prefix", ["Ef-", "ef_", "-ef", "x" * 21])
def test_bad_namespace_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="namespace prefix"):
        check_namespace_prefix(prefix)


@pytest.mark.parametrize(
    ("cores", "text"), [(0.1, "100m"), (2, "2000m"), (0.0001, "1m"), (0.2505, "250m")]
)
def test_cpu_quantities(cores: float, text: str) -> None:
    assert cpu_quantity(cores) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(64 * 1024**2, "64Mi"), (2 * 1024**3, "2Gi"), (3072, "3Ki"), (1536, "1536"), (1000, "1000")],
)
def test_memory_quantities(size: int, text: str) -> None:
    assert memory_quantity(size) == text


# ---------------------------------------------------------------------------------------------
# Desired objects


def test_process_workloads_are_refused() -> None:
    process = assignment(
        {"type": "process", "command": "edgefleet-hello"}, tenant="demo", app="hello"
    )
    with pytest.raises(ValueError) as refused:
        desired_objects(process, site="paris")
    assert str(refused.value) == (
        "the kubernetes driver runs container, function and vm workloads; "
        "app demo/hello is a process workload"
    )


@pytest.mark.parametrize(
    ("workload", "runner"),
    [(CONTAINER, "Deployment"), (FUNCTION, "Deployment"), (VM, "VirtualMachine")],
)
def test_every_workload_gives_namespace_service_and_runner(
    workload: dict[str, Any], runner: str
) -> None:
    objects = desired_objects(assignment(workload), site="paris")
    assert [obj["kind"] for obj in objects.objects] == ["Namespace", "Service", runner]
    assert (objects.key, objects.namespace, objects.name) == ("shop/web", "ef-shop", "web")
    owner = {MANAGED_BY: "edgefleet", TENANT_LABEL: "shop", APP_LABEL: "web", SITE_LABEL: "paris"}
    for obj in objects.objects[1:]:
        assert obj["metadata"]["labels"] == owner
        assert obj["metadata"]["namespace"] == "ef-shop"
        assert obj["metadata"]["annotations"][KEY_ANNOTATION] == "shop/web"
        assert obj["metadata"]["annotations"][GENERATION_ANNOTATION] == "3"
        # The pods (or the VM's launcher pod) carry the ownership labels too.
        assert obj["kind"] == "Service" or obj["spec"]["template"]["metadata"]["labels"] == owner
    namespace = objects.objects[0]
    assert namespace["metadata"] == {
        "name": "ef-shop",
        "labels": {MANAGED_BY: "edgefleet", TENANT_LABEL: "shop", SITE_LABEL: "paris"},
    }


@pytest.mark.parametrize(("workload", "port"), [(CONTAINER, 80), (FUNCTION, 8080), (VM, 8080)])
def test_services_select_the_apps_pods_at_this_site(workload: dict[str, Any], port: int) -> None:
    service = by_kind(desired_objects(assignment(workload), site="paris").objects)["Service"]
    assert service["apiVersion"] == "v1"
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {TENANT_LABEL: "shop", APP_LABEL: "web", SITE_LABEL: "paris"},
        "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
    }


def test_container_deployment() -> None:
    objects = by_kind(desired_objects(assignment(CONTAINER), site="paris").objects)
    deployment = objects["Deployment"]
    assert deployment["apiVersion"] == "apps/v1"
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {
        "matchLabels": {TENANT_LABEL: "shop", APP_LABEL: "web", SITE_LABEL: "paris"}
    }
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == "nginx:1.27"
    assert "command" not in container and "args" not in container
    assert container["ports"] == [{"name": "http", "containerPort": 80, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["periodSeconds"] == 2
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "128Mi"},
        "limits": {"cpu": "250m", "memory": "128Mi"},
    }
    env = {item["name"]: item for item in container["env"]}
    assert env["MODE"] == {"name": "MODE", "value": "edge"}
    assert env["PORT"] == {"name": "PORT", "value": "80"}
    assert env["EDGEFLEET_SITE"]["value"] == "paris"
    assert env["EDGEFLEET_APP"]["value"] == "shop/web"
    assert env["EDGEFLEET_REPLICA"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_sites_variables_win_over_the_workloads() -> None:
    workload = {**CONTAINER, "env": {"PORT": "1", "EDGEFLEET_SITE": "elsewhere", "Z": "z"}}
    deployment = by_kind(desired_objects(assignment(workload), site="paris").objects)["Deployment"]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [item["name"] for item in env].count("PORT") == 1
    values = {item["name"]: item.get("value") for item in env}
    assert (values["PORT"], values["EDGEFLEET_SITE"], values["Z"]) == ("80", "paris", "z")


def test_function_deployment_is_probed_every_second() -> None:
    objects = desired_objects(assignment(FUNCTION, replicas=0), site="paris")
    deployment = by_kind(objects.objects)["Deployment"]
    assert deployment["spec"]["replicas"] == 0  # asleep until the activator wakes it
    assert deployment["metadata"]["annotations"]["edgefleet.io/workload"] == "function"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/thumbs"]
    assert container["readinessProbe"]["periodSeconds"] == 1
    woken = by_kind(desired_objects(assignment(FUNCTION, replicas=1), site="paris").objects)
    assert woken["Deployment"]["spec"]["replicas"] == 1
    # Waking changes the count only, never the pod template: no rollout.
    assert woken["Deployment"]["spec"]["template"] == deployment["spec"]["template"]


@pytest.mark.parametrize(("replicas", "strategy"), [(0, "Halted"), (1, "Always"), (3, "Always")])
def test_virtual_machine(replicas: int, strategy: str) -> None:
    objects = desired_objects(
        assignment(VM, replicas=replicas, resources={"cpu": 1.5, "memory": "2Gi"}), site="paris"
    )
    vm = by_kind(objects.objects)["VirtualMachine"]
    assert vm["apiVersion"] == "kubevirt.io/v1"
    assert vm["spec"]["runStrategy"] == strategy
    template = vm["spec"]["template"]["spec"]
    assert template["domain"]["cpu"] == {"cores": 2}
    assert template["domain"]["resources"]["requests"] == {"cpu": "1500m", "memory": "2Gi"}
    assert template["domain"]["devices"]["disks"] == [
        {"name": "containerdisk", "disk": {"bus": "virtio"}},
        {"name": "cloudinitdisk", "disk": {"bus": "virtio"}},
    ]
    assert template["volumes"] == [
        {"name": "containerdisk", "containerDisk": {"image": "quay.io/containerdisks/fedora:40"}},
        {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}},
    ]
    assert template["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert len(objects.warnings) == (1 if replicas > 1 else 0)
    if objects.warnings:
        assert "one VirtualMachine per site" in objects.warnings[0]


def test_virtual_machine_without_cloud_init_has_one_disk() -> None:
    vm = by_kind(
        desired_objects(assignment({"type": "vm", "image": "disk:1"}), site="paris").objects
    )["VirtualMachine"]
    assert [v["name"] for v in vm["spec"]["template"]["spec"]["volumes"]] == ["containerdisk"]


def test_long_and_odd_names_fit_everywhere() -> None:
    odd = assignment(CONTAINER, tenant="t" * 63, app="9" + "a" * 62)
    objects = desired_objects(odd, site="s" * 63, namespace_prefix="edgefleet-")
    namespace, service, deployment = objects.objects
    assert len(namespace["metadata"]["name"]) <= 63
    assert DNS1123.match(namespace["metadata"]["name"])
    assert DNS1035.match(service["metadata"]["name"])
    assert service["metadata"]["name"] == deployment["metadata"]["name"]
    assert service["metadata"]["namespace"] == namespace["metadata"]["name"]
    # The exact key survives in the annotation even where labels could not hold it.
    assert deployment["metadata"]["annotations"][KEY_ANNOTATION] == odd.key


def test_spec_hash_follows_what_runs_not_the_count_or_generation() -> None:
    def template_hash(a: AppAssignment) -> str:
        deployment = by_kind(desired_objects(a, site="paris").objects)["Deployment"]
        value: str = deployment["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        return value

    base = template_hash(assignment(CONTAINER))
    assert template_hash(assignment(CONTAINER, replicas=5, generation=9)) == base
    assert template_hash(assignment({**CONTAINER, "image": "nginx:1.28"})) != base
    assert template_hash(assignment(CONTAINER, resources={"cpu": 1})) != base


def test_objects_are_deterministic() -> None:
    one = desired_objects(assignment(CONTAINER), site="paris")
    two = desired_objects(assignment(CONTAINER), site="paris")
    assert one == two
    assert one.digests() == two.digests()
    assert one.digests() == {ref_of(o): body_digest(o) for o in one.objects}
    other = desired_objects(assignment(CONTAINER, replicas=3), site="paris").digests()
    assert [ref for ref in other if other[ref] != one.digests()[ref]] == [DEP]


# ---------------------------------------------------------------------------------------------
# Reconcile plan

NS = ObjectRef("Namespace", "", "ef-shop")
SVC = ObjectRef("Service", "ef-shop", "web")
DEP = ObjectRef("Deployment", "ef-shop", "web")
OLD = ObjectRef("Deployment", "ef-shop", "old")


def digests() -> dict[ObjectRef, str]:
    return desired_objects(assignment(CONTAINER), site="paris").digests()


def applied_as(versions: dict[ObjectRef, str]) -> dict[ObjectRef, AppliedObject]:
    desired = digests()
    return {ref: AppliedObject(desired[ref], v) for ref, v in versions.items()}


@pytest.mark.parametrize(
    ("observed", "applied", "resync", "apply", "delete"),
    [
        # Nothing there yet: everything, namespace first.
        ({}, {}, False, (NS, SVC, DEP), ()),
        # All in place as applied: nothing.
        ({SVC: "r5", DEP: "g2"}, {NS: "", SVC: "r5", DEP: "g2"}, False, (), ()),
        # Resync: everything again.
        ({SVC: "r5", DEP: "g2"}, {NS: "", SVC: "r5", DEP: "g2"}, True, (NS, SVC, DEP), ()),
        # Someone scaled the Deployment by hand (generation moved): put it back.
        ({SVC: "r5", DEP: "g3"}, {NS: "", SVC: "r5", DEP: "g2"}, False, (DEP,), ()),
        # Someone deleted the Service: make it again.
        ({DEP: "g2"}, {NS: "", SVC: "r5", DEP: "g2"}, False, (SVC,), ()),
        # An owned object no assignment wants: delete it.
        ({SVC: "r5", DEP: "g2", OLD: "g1"}, {NS: "", SVC: "r5", DEP: "g2"}, False, (), (OLD,)),
        # Applied before this agent started (no record): apply once to learn its version.
        ({SVC: "r5", DEP: "g2"}, {NS: ""}, False, (SVC, DEP), ()),
    ],
)
def test_plan_reconcile(
    observed: dict[ObjectRef, str],
    applied: dict[ObjectRef, str],
    resync: bool,
    apply: tuple[ObjectRef, ...],
    delete: tuple[ObjectRef, ...],
) -> None:
    plan = plan_reconcile(digests(), observed, applied_as(applied), resync=resync)
    assert (plan.apply, plan.delete) == (apply, delete)
    assert plan.empty == (not apply and not delete)


def test_a_changed_body_is_applied() -> None:
    stale = {ref: AppliedObject("0" * 16, "g2") for ref in (NS, SVC, DEP)}
    plan = plan_reconcile(digests(), {SVC: "g2", DEP: "g2"}, stale)
    assert plan.apply == (NS, SVC, DEP)


def test_namespaces_are_never_deleted() -> None:
    plan = plan_reconcile({}, {NS: "r1", DEP: "g1"}, {})
    assert plan.delete == (DEP,)


def test_object_version_prefers_the_generation() -> None:
    assert object_version({"metadata": {"generation": 4, "resourceVersion": "99"}}) == "g4"
    assert object_version({"metadata": {"resourceVersion": "99"}}) == "r99"


# ---------------------------------------------------------------------------------------------
# Observed replicas


def listed_deployment(generation: str = "3", spec_hash: str = "h1") -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "ef-shop",
            "labels": {APP_LABEL: "web"},
            "annotations": {
                KEY_ANNOTATION: "shop/web",
                GENERATION_ANNOTATION: generation,
                "edgefleet.io/port": "80",
            },
        },
        "spec": {"template": {"metadata": {"annotations": {SPEC_HASH_ANNOTATION: spec_hash}}}},
    }


def pod(
    name: str,
    *,
    created: str,
    phase: str = "Running",
    ready: bool = True,
    ip: str | None = "10.42.0.7",
    spec_hash: str = "h1",
    deleting: bool = False,
    waiting: str | None = None,
    restarts: int = 0,
    app: str = "web",
    namespace: str = "ef-shop",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "creationTimestamp": created,
        "labels": {APP_LABEL: app},
        "annotations": {SPEC_HASH_ANNOTATION: spec_hash},
    }
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:10:00Z"
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": created,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"restartCount": restarts, "state": state}],
    }
    if ip:
        status["podIP"] = ip
    return {"kind": "Pod", "metadata": meta, "status": status}


def endpoint_slice(
    *endpoints: tuple[str, bool | None], namespace: str = "ef-shop"
) -> dict[str, Any]:
    items = []
    for name, ready in endpoints:
        conditions = {} if ready is None else {"ready": ready}
        items.append(
            {
                "addresses": ["10.42.0.7"],
                "conditions": conditions,
                "targetRef": {"kind": "Pod", "name": name},
            }
        )
    return {"kind": "EndpointSlice", "metadata": {"namespace": namespace}, "endpoints": items}


@pytest.mark.parametrize(
    ("pod_kwargs", "state"),
    [
        ({}, "running"),
        ({"ready": False}, "starting"),
        ({"phase": "Pending", "ready": False, "ip": None}, "starting"),
        ({"ready": False, "waiting": "CrashLoopBackOff", "restarts": 4}, "backoff"),
        ({"phase": "Failed", "ready": False}, "crashed"),
        ({"deleting": True}, "stopped"),
    ],
)
def test_pod_states(pod_kwargs: dict[str, Any], state: str) -> None:
    assert pod_state(pod("web-1", created="2025-01-01T00:00:00Z", **pod_kwargs)) == state


def test_replicas_are_ready_when_endpoint_slices_and_pods_agree() -> None:
    pods = [
        pod("web-b", created="2025-01-01T00:00:02Z", ip="10.42.0.8"),
        pod("web-a", created="2025-01-01T00:00:01Z", restarts=2),
        pod("web-c", created="2025-01-01T00:00:03Z"),  # not in any slice yet
        pod("web-d", created="2025-01-01T00:00:04Z", ready=False),  # stale slice says ready
        pod("web-e", created="2025-01-01T00:00:05Z", spec_hash="h0"),  # an older spec
        pod("other-x", created="2025-01-01T00:00:00Z", app="other"),  # no workload of ours
    ]
    slices = [
        endpoint_slice(("web-a", True), ("web-d", True)),
        endpoint_slice(("web-b", None), ("web-e", True)),  # no condition: ready
    ]
    replicas = observe_replicas(workloads=[listed_deployment()], pods=pods, slices=slices)
    assert list(replicas) == ["shop/web"]
    rows = [
        (r.id, r.index, r.ready, r.state, r.address, r.port, r.generation)
        for r in replicas["shop/web"]
    ]
    assert rows == [
        ("web-a", 0, True, "running", "10.42.0.7", 80, 3),
        ("web-b", 1, True, "running", "10.42.0.8", 80, 3),
        ("web-c", 2, False, "running", "10.42.0.7", 80, 3),
        ("web-d", 3, False, "starting", "10.42.0.7", 80, 3),
        ("web-e", 4, True, "running", "10.42.0.7", 80, 0),
    ]
    first = replicas["shop/web"][0]
    assert first.restarts == 2
    assert first.started_at is not None and first.started_at.year == 2025
    state = first.replica_state()
    assert (state.id, state.port, state.ready, state.state) == ("web-a", 80, True, "running")


def test_terminating_endpoints_are_not_ready() -> None:
    pods = [pod("web-a", created="2025-01-01T00:00:01Z")]
    slices = [
        {
            "kind": "EndpointSlice",
            "metadata": {"namespace": "ef-shop"},
            "endpoints": [
                {
                    "conditions": {"ready": True, "terminating": True},
                    "targetRef": {"kind": "Pod", "name": "web-a"},
                }
            ],
        }
    ]
    (replica,) = observe_replicas(workloads=[listed_deployment()], pods=pods, slices=slices)[
        "shop/web"
    ]
    assert not replica.ready


def test_slices_of_another_namespace_do_not_count() -> None:
    pods = [pod("web-a", created="2025-01-01T00:00:01Z")]
    slices = [endpoint_slice(("web-a", True), namespace="ef-other")]
    (replica,) = observe_replicas(workloads=[listed_deployment()], pods=pods, slices=slices)[
        "shop/web"
    ]
    assert not replica.ready


def test_an_app_at_zero_has_no_entry() -> None:
    assert observe_replicas(workloads=[listed_deployment()], pods=[], slices=[]) == {}
