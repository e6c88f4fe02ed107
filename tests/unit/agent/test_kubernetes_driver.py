"""The kubernetes driver's shell against an in-memory API server with a tiny controller manager.

The fake keeps what the API server keeps for these tests: objects with labels, a
``resourceVersion`` per write, a ``generation`` bumped on spec changes (Deployments, custom
resources), label selectors, watches, kinds that are not installed (404); its controller makes
pods and EndpointSlices from Deployments and Services. The real server is in
``tests/integration/kube``.
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefleet.agent.drivers.kube_objects import (
    APP_LABEL,
    DEPLOYMENT,
    ENDPOINT_SLICE,
    MANAGED_BY,
    POD,
    SITE_LABEL,
    TENANT_LABEL,
    KubeKind,
    ObjectRef,
    desired_objects,
    ref_of,
)
from edgefleet.agent.drivers.kubernetes import (
    ClusterApi,
    KubeApi,
    KubeRefused,
    KubernetesDriver,
    KubeUnavailable,
    WatchEvent,
    connect,
)
from edgefleet.agent.service import AgentConfig
from edgefleet.agent.service import make_driver as make_agent_driver
from edgefleet.model import AppAssignment

GENERATION_KINDS = {"Deployment", "VirtualMachine"}


@dataclass(frozen=True)
class _Event:
    version: int
    kind: str
    type: str
    labels: Mapping[str, str]


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _server_fields_dropped(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "generation")}
    return {**obj, "metadata": meta}


class FakeCluster(KubeApi):
    """An honest in-memory stand-in for the API server and its controllers."""

    def __init__(self, *, kubevirt: bool = False) -> None:
        self.objects: dict[ObjectRef, dict[str, Any]] = {}
        self.version = 0
        self.events: list[_Event] = []
        self.kubevirt = kubevirt
        self.down = False
        self.closed = False
        self.pods_ready = True
        self.deleted: list[ObjectRef] = []
        self.applied: list[ObjectRef] = []
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._controller = threading.Thread(target=self._control, daemon=True)

    # -- KubeApi ------------------------------------------------------------------------------

    def _check(self, kind: str) -> None:
        if self.down:
            raise KubeUnavailable("connection refused")
        if kind == "VirtualMachine" and not self.kubevirt:
            raise KubeRefused(404, "the server could not find the requested resource")

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        ref = ref_of(body)
        with self.cond:
            self._check(ref.kind)
            self.applied.append(ref)
            new = copy.deepcopy(dict(body))
            old = self.objects.get(ref)
            if old is not None:
                new["metadata"] = {**old["metadata"], **new["metadata"]}
                if "status" in old:
                    new["status"] = old["status"]
            self._write(ref, new, old)
            return copy.deepcopy(self.objects[ref])

    def list(self, kind: KubeKind, selector: str) -> list[dict[str, Any]]:
        with self.cond:
            self._check(kind.kind)
            return [
                copy.deepcopy(obj)
                for ref, obj in sorted(self.objects.items())
                if ref.kind == kind.kind and _matches(obj["metadata"].get("labels") or {}, selector)
            ]

    def delete(self, ref: ObjectRef) -> None:
        with self.cond:
            self._check(ref.kind)
            obj = self.objects.pop(ref, None)
            if obj is not None:
                self.deleted.append(ref)
                self._event(ref.kind, "DELETED", obj)

    def watch(
        self, kind: KubeKind, selector: str, *, resource_version: str | None, timeout: int
    ) -> Iterator[WatchEvent]:
        deadline = time.monotonic() + timeout
        with self.cond:
            self._check(kind.kind)
            cursor = int(resource_version) if resource_version else self.version
            initial = [] if resource_version else [obj for obj in self.list(kind, selector)]
        for obj in initial:
            yield WatchEvent("ADDED", obj["metadata"]["resourceVersion"])
        while True:
            with self.cond:
                self._check(kind.kind)
                if self.closed:
                    raise KubeUnavailable("Response ended prematurely")
                pending = [
                    e
                    for e in self.events
                    if e.version > cursor and e.kind == kind.kind and _matches(e.labels, selector)
                ]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self.cond.wait(min(left, 0.05))
                    continue
            for event in pending:
                cursor = event.version
                yield WatchEvent(event.type, str(event.version))

    def pod_log(self, namespace: str, name: str, *, tail: int) -> str:
        with self.cond:
            self._check("Pod")
            if ObjectRef("Pod", namespace, name) not in self.objects:
                raise KubeRefused(404, f'pods "{name}" not found')
        lines = [f"{name} line {i}" for i in range(1, 11)]
        return "\n".join(lines[-tail:]) + "\n"

    def close(self) -> None:
        """As the real client: open watches end."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # -- Server internals ----------------------------------------------------------------------

    def _event(self, kind: str, type_: str, obj: Mapping[str, Any]) -> None:
        self.version += 1
        labels = dict(obj.get("metadata", {}).get("labels") or {})
        self.events.append(_Event(self.version, kind, type_, labels))
        self.cond.notify_all()

    def _write(self, ref: ObjectRef, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Store ``new`` unless it equals ``old``: a new resourceVersion, and a new generation
        when the spec changed (for the kinds that keep one)."""
        if old is not None and _server_fields_dropped(old) == _server_fields_dropped(new):
            return
        meta = new["metadata"]
        if ref.kind in GENERATION_KINDS:
            generation = int((old or {}).get("metadata", {}).get("generation", 0))
            if old is None or old.get("spec") != new.get("spec"):
                generation += 1
            meta["generation"] = generation
        meta["resourceVersion"] = str(self.version + 1)  # the number _event takes
        self.objects[ref] = new
        self._event(ref.kind, "ADDED" if old is None else "MODIFIED", new)

    def put(self, obj: dict[str, Any]) -> None:
        """Create or replace an object as another client would."""
        with self.cond:
            ref = ref_of(obj)
            self._write(ref, copy.deepcopy(obj), self.objects.get(ref))

    def scale_by_hand(self, ref: ObjectRef, replicas: int) -> None:
        """What ``kubectl scale`` does."""
        with self.cond:
            obj = copy.deepcopy(self.objects[ref])
            obj["spec"]["replicas"] = replicas
            self._write(ref, obj, self.objects[ref])

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        with self.cond:
            obj = self.objects.get(ref)
            return copy.deepcopy(obj) if obj is not None else None

    # -- Controllers ---------------------------------------------------------------------------

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._stop.set()
        self._controller.join()

    def _control(self) -> None:
        while not self._stop.wait(0.01):
            with self.cond:
                self._deployments()
                self._endpoint_slices()

    def _deployments(self) -> None:
        for ref, deployment in list(self.objects.items()):
            if ref.kind != "Deployment":
                continue
            template = deployment["spec"]["template"]["metadata"]
            selector = deployment["spec"]["selector"]["matchLabels"]
            pods = sorted(
                r
                for r, obj in self.objects.items()
                if r.kind == "Pod"
                and r.namespace == ref.namespace
                and all(obj["metadata"]["labels"].get(k) == v for k, v in selector.items())
            )
            want = deployment["spec"]["replicas"]
            for extra in pods[want:]:
                self._event("Pod", "DELETED", self.objects.pop(extra))
            for i in range(len(pods), want):
                name = f"{ref.name}-{self.version}-{i}"
                ready = "True" if self.pods_ready else "False"
                pod = {
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "namespace": ref.namespace,
                        "labels": dict(template["labels"]),
                        "annotations": dict(template.get("annotations") or {}),
                        "creationTimestamp": f"2025-01-01T00:00:{len(pods) + i:02d}Z",
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": f"10.42.0.{len(self.objects) % 250 + 1}",
                        "conditions": [{"type": "Ready", "status": ready}],
                    },
                }
                self._write(ObjectRef("Pod", ref.namespace, name), pod, None)
        for ref in [r for r in self.objects if r.kind == "Pod"]:
            pod = self.objects[ref]
            owners = [
                d
                for r, d in self.objects.items()
                if r.kind == "Deployment"
                and r.namespace == ref.namespace
                and d["metadata"]["labels"].get(APP_LABEL)
                == pod["metadata"]["labels"].get(APP_LABEL)
            ]
            if not owners:
                self._event("Pod", "DELETED", self.objects.pop(ref))

    def _endpoint_slices(self) -> None:
        for ref, service in list(self.objects.items()):
            if ref.kind != "Service":
                continue
            selector = service["spec"]["selector"]
            endpoints = [
                {
                    "addresses": [obj["status"]["podIP"]],
                    "conditions": {"ready": obj["status"]["conditions"][0]["status"] == "True"},
                    "targetRef": {"kind": "Pod", "name": r.name},
                }
                for r, obj in sorted(self.objects.items())
                if r.kind == "Pod"
                and r.namespace == ref.namespace
                and all(obj["metadata"]["labels"].get(k) == v for k, v in selector.items())
            ]
            slice_ref = ObjectRef("EndpointSlice", ref.namespace, f"{ref.name}-abcde")
            body = {
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_ref.name,
                    "namespace": ref.namespace,
                    "labels": dict(service["metadata"]["labels"]),
                },
                "endpoints": endpoints,
            }
            old = self.objects.get(slice_ref)
            if old is None or old["endpoints"] != endpoints:
                self._write(slice_ref, body, old)
        for ref in [r for r in self.objects if r.kind == "EndpointSlice"]:
            if (
                ObjectRef("Service", ref.namespace, ref.name.removesuffix("-abcde"))
                not in self.objects
            ):
                self._event("EndpointSlice", "DELETED", self.objects.pop(ref))


# ---------------------------------------------------------------------------------------------


def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        time.sleep(0.01)


def app(
    name: str = "web",
    *,
    replicas: int = 2,
    workload: dict[str, Any] | None = None,
    tenant: str = "shop",
) -> AppAssignment:
    return AppAssignment.model_validate(
        {
            "tenant": tenant,
            "app": name,
            "generation": 1,
            "replicas": replicas,
            "workload": workload or {"type": "container", "image": "nginx:1.27", "port": 80},
        }
    )


DEP = ObjectRef("Deployment", "ef-shop", "web")
SVC = ObjectRef("Service", "ef-shop", "web")
NS = ObjectRef("Namespace", "", "ef-shop")


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster()
    fake.start()
    yield fake
    fake.stop()


class Changes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def make_driver(cluster: FakeCluster) -> Iterator[Callable[..., KubernetesDriver]]:
    drivers: list[KubernetesDriver] = []

    def make(**kwargs: Any) -> KubernetesDriver:
        options: dict[str, Any] = {"watch_timeout": 1, "settle": 0.01}
        options.update(kwargs)
        driver = KubernetesDriver("paris", cluster, **options)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


def ready(driver: KubernetesDriver, key: str = "shop/web") -> int:
    return sum(r.ready for r in driver.observe().get(key, []))


def test_an_app_runs_scales_and_sleeps(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    driver = make_driver()
    changes = Changes()
    driver.start(changes)
    driver.converge([app(replicas=2)])
    eventually(lambda: ready(driver) == 2, what="2 ready replicas")
    assert changes.count >= 1
    # What the cluster holds is what the mapping made, applied as it is.
    for body in desired_objects(app(replicas=2), site="paris").objects:
        stored = cluster.get(ref_of(body))
        assert stored is not None
        assert stored.get("spec") == body.get("spec")
        for field in ("labels", "annotations"):
            assert stored["metadata"].get(field) == body["metadata"].get(field)
    replicas = driver.replicas()["shop/web"]
    assert all(r.address and r.address.startswith("10.42.") and r.port == 80 for r in replicas)

    driver.converge([app(replicas=3)])
    eventually(lambda: ready(driver) == 3, what="3 ready replicas")

    driver.converge([app(replicas=0)])
    eventually(lambda: driver.observe() == {}, what="no replicas")
    deployment = cluster.get(DEP)
    assert deployment is not None and deployment["spec"]["replicas"] == 0
    assert cluster.get(SVC) is not None  # scale to zero keeps the objects


def test_a_deployment_scaled_by_hand_is_put_back(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    driver = make_driver(poll=600, resync=600)  # only the watch can bring it back this fast
    driver.start(Changes())
    driver.converge([app(replicas=2)])
    eventually(lambda: ready(driver) == 2)
    cluster.scale_by_hand(DEP, 5)
    eventually(
        lambda: (
            (cluster.get(DEP) or {})["spec"]["replicas"] == 2
            and (cluster.get(DEP) or {})["metadata"]["generation"] >= 3
        ),
        what="replicas put back to 2",
    )
    eventually(lambda: ready(driver) == 2)


def test_without_watches_the_poll_corrects_drift(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    driver = make_driver(watch=False, poll=0.1, resync=600)
    driver.start(Changes())
    driver.converge([app(replicas=1)])
    eventually(lambda: ready(driver) == 1)
    cluster.scale_by_hand(DEP, 4)
    eventually(lambda: (cluster.get(DEP) or {})["spec"]["replicas"] == 1, what="put back")
    with cluster.cond:
        del cluster.objects[SVC]  # deleted by hand
    eventually(lambda: cluster.get(SVC) is not None, what="Service made again")


def test_an_app_no_longer_assigned_loses_only_its_own_objects(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    unowned = {
        "kind": "Deployment",
        "metadata": {"name": "mine", "namespace": "ef-shop", "labels": {"team": "ops"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"team": "ops"}},
            "template": {"metadata": {"labels": {"team": "ops"}}},
        },
    }
    lyon_labels = {
        MANAGED_BY: "edgefleet",
        TENANT_LABEL: "shop",
        APP_LABEL: "web",
        SITE_LABEL: "lyon",
    }
    lyon = {
        "kind": "Service",
        "metadata": {"name": "web-lyon", "namespace": "ef-shop", "labels": lyon_labels},
        "spec": {"selector": {SITE_LABEL: "lyon"}},
    }
    cluster.put(unowned)
    cluster.put(lyon)
    driver = make_driver()
    driver.start(Changes())
    driver.converge([app(replicas=1), app("api", replicas=1)])
    eventually(lambda: ready(driver) == 1 and ready(driver, "shop/api") == 1)
    driver.converge([app("api", replicas=1)])
    eventually(lambda: cluster.get(DEP) is None and cluster.get(SVC) is None, what="web gone")
    eventually(lambda: "shop/web" not in driver.observe())
    assert cluster.get(ref_of(unowned)) is not None
    assert cluster.get(ref_of(lyon)) is not None
    assert cluster.get(NS) is not None  # namespaces stay
    assert cluster.get(ObjectRef("Deployment", "ef-shop", "api")) is not None
    assert set(cluster.deleted) == {DEP, SVC}


def test_nothing_is_deleted_before_the_first_converge(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    for body in desired_objects(app(replicas=2), site="paris").objects:
        cluster.apply(body)
    cluster.applied.clear()
    driver = make_driver()
    changes = Changes()
    driver.start(changes)
    # Adopted: observed as they run, and left alone.
    eventually(lambda: ready(driver) == 2, what="adopted replicas")
    assert changes.count >= 1
    assert driver.wait_for_round(5)
    assert cluster.deleted == [] and cluster.applied == []


def test_an_api_that_does_not_answer(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    driver = make_driver(poll=0.2)
    driver.start(Changes())
    driver.converge([app(replicas=2)])
    eventually(lambda: ready(driver) == 2)
    before = driver.observe()
    cluster.down = True
    eventually(lambda: driver.unreachable, what="unreachable")
    assert driver.observe() == before  # the last observation is kept
    driver.converge([app(replicas=3)])  # does not raise, does not block
    assert driver.wait_for_round(5)
    assert driver.unreachable
    cluster.down = False
    eventually(lambda: not driver.unreachable, timeout=15, what="reachable again")
    eventually(lambda: ready(driver) == 3, what="the converge made during the outage")


def test_apps_the_cluster_cannot_run_are_problems_not_failures(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    process = app("hello", tenant="demo", workload={"type": "process", "command": "x"})
    vm = app("legacy", replicas=1, workload={"type": "vm", "image": "disk:1"})
    driver = make_driver(resync=0.3)
    driver.start(Changes())
    driver.converge([process, vm, app(replicas=1)])
    eventually(lambda: ready(driver) == 1, what="the container app runs")
    problems = driver.problems
    assert problems["demo/hello"] == (
        "the kubernetes driver runs container, function and vm workloads; "
        "app demo/hello is a process workload"
    )
    assert "is KubeVirt installed" in problems["shop/legacy"]
    assert cluster.get(ObjectRef("Service", "ef-shop", "legacy")) is not None
    # KubeVirt comes: the next resync makes the VirtualMachine.
    cluster.kubevirt = True
    vm_ref = ObjectRef("VirtualMachine", "ef-shop", "legacy")
    eventually(lambda: cluster.get(vm_ref) is not None, what="VirtualMachine applied")
    assert (cluster.get(vm_ref) or {})["spec"]["runStrategy"] == "Always"
    eventually(lambda: "shop/legacy" not in driver.problems)


def test_a_function_sleeps_until_woken(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    function = {"type": "function", "image": "ghcr.io/shop/thumbs:2"}
    driver = make_driver()
    driver.start(Changes())
    driver.converge([app("thumbs", replicas=0, workload=function)])
    ref = ObjectRef("Deployment", "ef-shop", "thumbs")
    eventually(lambda: cluster.get(ref) is not None)
    assert driver.wait_for_round(5)
    assert driver.observe() == {}
    driver.converge([app("thumbs", replicas=1, workload=function)])
    eventually(lambda: ready(driver, "shop/thumbs") == 1, what="woken")


def test_stop_all_removes_the_sites_objects(
    cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]
) -> None:
    driver = make_driver()
    driver.start(Changes())
    driver.converge([app(replicas=1)])
    eventually(lambda: ready(driver) == 1)
    driver.stop_all()
    assert cluster.get(DEP) is None and cluster.get(SVC) is None
    assert cluster.get(NS) is not None
    with pytest.raises(RuntimeError, match="closed"):
        driver.converge([])


def test_logs(cluster: FakeCluster, make_driver: Callable[..., KubernetesDriver]) -> None:
    driver = make_driver()
    driver.start(Changes())
    driver.converge([app(replicas=2)])
    eventually(lambda: ready(driver) == 2)
    pods = [r.id for r in driver.observe()["shop/web"]]
    text = driver.logs("shop", "web", tail=2)
    assert text.splitlines() == [
        f"==> {pods[0]} <==",
        f"{pods[0]} line 9",
        f"{pods[0]} line 10",
        "",
        f"==> {pods[1]} <==",
        f"{pods[1]} line 9",
        f"{pods[1]} line 10",
    ]
    assert driver.logs("shop", "web", replica=pods[1], tail=1) == (
        f"==> {pods[1]} <==\n{pods[1]} line 10\n"
    )
    with pytest.raises(LookupError, match="no replica 'web-x'"):
        driver.logs("shop", "web", replica="web-x")


def test_bad_options_are_refused(cluster: FakeCluster) -> None:
    with pytest.raises(ValueError, match="namespace prefix"):
        KubernetesDriver("paris", cluster, namespace_prefix="EF")
    with pytest.raises(ValueError, match="poll"):
        KubernetesDriver("paris", cluster, poll=0)


# ---------------------------------------------------------------------------------------------
# ClusterApi on the wire: what the official client sends, to a recorder on loopback


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: bytes


class _Recorder:
    """An HTTP server on 127.0.0.1 that records requests and answers from a table."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, str, str]]) -> None:
        self.answers = answers
        self.requests: list[_Request] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append(
                    _Request(
                        self.command,
                        url.path,
                        urllib.parse.parse_qs(url.query),
                        self.headers.get("Content-Type") or "",
                        self.rfile.read(length) if length else b"",
                    )
                )
                status, content_type, text = recorder.answers.get(
                    (self.command, url.path), (404, "application/json", '{"message":"nope"}')
                )
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _cluster_api(url: str) -> ClusterApi:
    kubernetes = pytest.importorskip("kubernetes")
    configuration = kubernetes.client.Configuration(host=url)
    configuration.retries = 0
    return ClusterApi(kubernetes.client.ApiClient(configuration), request_timeout=5)


def test_cluster_api_speaks_server_side_apply_and_selectors() -> None:
    body = desired_objects(app(replicas=2), site="paris").objects[2]
    stored = {**body, "metadata": {**body["metadata"], "generation": 4}}
    pods_list = {
        "kind": "PodList",
        "metadata": {"resourceVersion": "7"},
        "items": [{"metadata": {"name": "web-1", "namespace": "ef-shop"}}],
    }

    def event(type_: str, version: str) -> dict[str, Any]:
        return {
            "type": type_,
            "object": {"kind": "Deployment", "metadata": {"resourceVersion": version}},
        }

    watch_stream = "".join(
        json.dumps(
            {"type": t, "object": {"kind": "Deployment", "metadata": {"resourceVersion": v}}}
        )
        + "\n"
        for t, v in (("ADDED", "8"), ("MODIFIED", "9"))
    )
    answers = {
        ("PATCH", "/apis/apps/v1/namespaces/ef-shop/deployments/web"): (
            200,
            "application/json",
            json.dumps(stored),
        ),
        ("PATCH", "/api/v1/namespaces/ef-shop"): (
            422,
            "application/json",
            json.dumps({"kind": "Status", "message": "metadata.name: Invalid value"}),
        ),
        ("GET", "/api/v1/pods"): (200, "application/json", json.dumps(pods_list)),
        ("GET", "/apis/discovery.k8s.io/v1/endpointslices"): (503, "text/plain", "busy"),
        ("GET", "/apis/apps/v1/deployments"): (200, "application/json", watch_stream),
        ("GET", "/api/v1/namespaces/ef-shop/pods/web-1/log"): (200, "text/plain", "a\nb\n"),
    }
    with _Recorder(answers) as recorder:
        api = _cluster_api(recorder.url)
        assert api.apply(body)["metadata"]["generation"] == 4
        apply = recorder.requests[-1]
        assert apply.method == "PATCH"
        assert apply.content_type == "application/apply-patch+yaml"
        assert apply.query["fieldManager"] == ["edgefleet"]
        assert apply.query["force"][0].lower() == "true"
        assert json.loads(apply.body) == body

        namespace = desired_objects(app(replicas=2), site="paris").objects[0]
        with pytest.raises(KubeRefused, match=r"metadata\.name: Invalid value") as refused:
            api.apply(namespace)
        assert refused.value.status == 422

        pods = api.list(POD, "app.kubernetes.io/managed-by=edgefleet,edgefleet.io/site=paris")
        assert pods == [
            {
                "metadata": {"name": "web-1", "namespace": "ef-shop"},
                "kind": "Pod",
                "apiVersion": "v1",
            }
        ]
        assert recorder.requests[-1].query["labelSelector"] == [
            "app.kubernetes.io/managed-by=edgefleet,edgefleet.io/site=paris"
        ]
        with pytest.raises(KubeUnavailable, match="503"):
            api.list(ENDPOINT_SLICE, "a=b")

        events = list(api.watch(DEPLOYMENT, "a=b", resource_version="7", timeout=3))
        assert events == [WatchEvent("ADDED", "8"), WatchEvent("MODIFIED", "9")]
        watch = recorder.requests[-1]
        assert watch.query["watch"][0].lower() == "true"
        assert watch.query["resourceVersion"] == ["7"]
        assert watch.query["labelSelector"] == ["a=b"]
        assert watch.query["timeoutSeconds"] == ["3"]

        api.delete(ObjectRef("Service", "ef-shop", "gone"))  # 404: already gone, fine
        assert recorder.requests[-1].method == "DELETE"
        assert recorder.requests[-1].path == "/api/v1/namespaces/ef-shop/services/gone"

        assert api.pod_log("ef-shop", "web-1", tail=2) == "a\nb\n"
        assert recorder.requests[-1].query["tailLines"] == ["2"]
        api.close()
    # Nobody listens any more: no answer.
    closed = _cluster_api(recorder.url)
    with pytest.raises(KubeUnavailable):
        closed.list(POD, "a=b")
    closed.close()


def test_connect_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kubernetes")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(
        ValueError,
        match=r"in-cluster service account \(not running in a pod\? give --kubeconfig PATH\)",
    ):
        connect()
    with pytest.raises(ValueError, match="--context edge needs --kubeconfig"):
        connect(context="edge")
    with pytest.raises(ValueError, match=f"kubeconfig {tmp_path / 'none'}"):
        connect(kubeconfig=tmp_path / "none")


def test_the_agent_makes_a_kubernetes_driver(tmp_path: Path) -> None:
    pytest.importorskip("kubernetes")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "edge", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "admin", "user": {"token": "t"}}],
                "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "admin"}}],
                "current-context": "edge",
            }
        )
    )
    config = AgentConfig(
        site="paris", kubeconfig=kubeconfig, kube_context="edge", kube_namespace_prefix="edge-"
    )
    driver = make_agent_driver("kubernetes", config)
    assert isinstance(driver, KubernetesDriver)
    assert (driver.site, driver.namespace_prefix) == ("paris", "edge-")
    driver.close()
    with pytest.raises(ValueError, match=r"kubeconfig .*, context nowhere: .*nowhere"):
        make_agent_driver("kubernetes", replace(config, kube_context="nowhere"))
    with pytest.raises(ValueError, match="namespace prefix"):
        make_agent_driver("kubernetes", replace(config, kube_namespace_prefix="EF"))
    with pytest.raises(ValueError, match="use 'process', 'kubernetes' or 'simulated'"):
        make_agent_driver("lxc", config)
