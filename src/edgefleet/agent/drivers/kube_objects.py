"""What the kubernetes driver asks of a cluster, and what it reads back: pure functions over dicts.

Desired side: an ``AppAssignment`` at a site becomes the objects to server-side apply:

* a ``Namespace`` per tenant (``<prefix><tenant>``, ``ef-shop``), never deleted by the driver;
* container and function workloads: a ``Deployment`` (``replicas`` as assigned, 0 keeps the
  objects; a function sits at 0 until the agent's activator wakes it with a converge of 1 or
  more), readiness probe on ``healthPath``, requests and limits from ``resources``, ``env``;
* vm workloads: a KubeVirt ``VirtualMachine`` (``runStrategy`` Always, or Halted at 0; a
  containerDisk; cloud-init NoCloud user data if given; resources); one VM per site;
* every workload: a ``ClusterIP`` ``Service`` on the workload's port.

Every object carries the ownership labels (``app.kubernetes.io/managed-by: edgefleet``,
``edgefleet.io/tenant``, ``edgefleet.io/app``, ``edgefleet.io/site``) and annotations with the app
key, the spec generation and the port. Object names are the app name when it is a valid DNS-1035
label (Service names must start with a letter), else a cleaned prefix and a hash of the name:
deterministic, so two agents (or one agent after a restart) compute the same names. A site is
one cluster; sites that share a cluster (tests, labs) need distinct namespace prefixes, since
object names do not carry the site.

Observed side: the listed Deployments, VirtualMachines, Pods and EndpointSlices become the
replicas per app (``PodReplica``): a pod is ready when the Service's EndpointSlices list it as
ready and its own Ready condition agrees, which is what a client of the Service would get.

The reconcile decision, ``plan_reconcile``, says which objects to apply (missing, changed by us,
changed by someone else, or a periodic resync) and which owned objects to delete.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.model import AppAssignment, ContainerWorkload, ReplicaState, Resources
from edgefleet.model.objects import FunctionWorkload, VmWorkload

MANAGED_BY = "app.kubernetes.io/managed-by"
"""Label key that marks objects made by a tool; ours say ``edgefleet``."""
MANAGER = "edgefleet"
"""Value of ``MANAGED_BY`` on our objects, and the server-side apply field manager."""
TENANT_LABEL = "edgefleet.io/tenant"
"""Label: the app's tenant."""
APP_LABEL = "edgefleet.io/app"
"""Label: the app's name."""
SITE_LABEL = "edgefleet.io/site"
"""Label: the site whose agent owns the object; every list and delete selects on it."""
KEY_ANNOTATION = "edgefleet.io/app-key"
"""Annotation: ``tenant/app`` exactly (label values may have been hashed to fit)."""
GENERATION_ANNOTATION = "edgefleet.io/generation"
"""Annotation: the app spec generation the object was made from."""
SPEC_HASH_ANNOTATION = "edgefleet.io/spec-hash"
"""Annotation: digest of what a replica runs; on the pod template, so old pods are told apart."""
PORT_ANNOTATION = "edgefleet.io/port"
"""Annotation: the port replicas serve on."""
WORKLOAD_ANNOTATION = "edgefleet.io/workload"
"""Annotation: the workload type (container, function, vm)."""

NAME_MAX = 63
"""Longest object and namespace name: one DNS label."""
DEFAULT_NAMESPACE_PREFIX = "ef-"
"""Namespaces are ``<prefix><tenant>``."""

CONTAINER_NAME = "app"
PORT_NAME = "http"

STARTING = "starting"
RUNNING = "running"
BACKOFF = "backoff"
CRASHED = "crashed"
STOPPED = "stopped"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_NOT_NAME = re.compile(r"[^a-z0-9-]+")
_HASH_LENGTH = 8


# ---------------------------------------------------------------------------------------------
# Kinds and references


@dataclass(frozen=True)
class KubeKind:
    """One API resource the driver uses, with what it takes to build its URL."""

    kind: str
    """``Deployment``."""
    group: str
    """API group; ``""`` for the core group."""
    version: str
    """``v1``."""
    plural: str
    """Resource name in URLs, ``deployments``."""
    namespaced: bool = True
    """Lives in a namespace."""

    @property
    def api_version(self) -> str:
        """``apps/v1``, or ``v1`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version


NAMESPACE = KubeKind("Namespace", "", "v1", "namespaces", namespaced=False)
DEPLOYMENT = KubeKind("Deployment", "apps", "v1", "deployments")
SERVICE = KubeKind("Service", "", "v1", "services")
VIRTUAL_MACHINE = KubeKind("VirtualMachine", "kubevirt.io", "v1", "virtualmachines")
POD = KubeKind("Pod", "", "v1", "pods")
ENDPOINT_SLICE = KubeKind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices")

KINDS = {k.kind: k for k in (NAMESPACE, DEPLOYMENT, SERVICE, VIRTUAL_MACHINE, POD, ENDPOINT_SLICE)}
"""Every kind the driver touches, by kind name."""
OWNED_KINDS = (SERVICE, DEPLOYMENT, VIRTUAL_MACHINE)
"""Kinds the driver creates per app and deletes when the app goes (namespaces stay)."""
_APPLY_ORDER = {"Namespace": 0, "Service": 1, "Deployment": 2, "VirtualMachine": 2}


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Names one object: kind, namespace (``""`` for cluster-wide kinds) and name."""

    kind: str
    """Kind name, a key of ``KINDS``."""
    namespace: str
    """Namespace, ``""`` for namespaces themselves."""
    name: str
    """Object name."""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


def ref_of(obj: Mapping[str, Any]) -> ObjectRef:
    """The reference of an object as sent or as listed."""
    meta = obj.get("metadata") or {}
    return ObjectRef(str(obj["kind"]), str(meta.get("namespace") or ""), str(meta["name"]))


def site_selector(site: str) -> str:
    """Label selector for every object the agent of ``site`` owns."""
    return f"{MANAGED_BY}={MANAGER},{SITE_LABEL}={label_value(site)}"


# ---------------------------------------------------------------------------------------------
# Names


def _digest(text: str, length: int = _HASH_LENGTH) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def fit_name(name: str, *, max_length: int = NAME_MAX, letter_first: bool = False) -> str:
    """``name`` when it is a DNS label of at most ``max_length`` characters (starting with a
    letter if ``letter_first``), else a cleaned, shortened prefix of it plus a hash of the whole.

    Deterministic; distinct names stay distinct unless their hashes collide (8 hex digits).
    """
    if max_length < _HASH_LENGTH + 2:
        raise ValueError(f"max_length {max_length} leaves no room for a hash")
    pattern = _DNS1035 if letter_first else _DNS1123
    if len(name) <= max_length and pattern.match(name):
        return name
    head = _NOT_NAME.sub("-", name.lower()).strip("-")
    if letter_first or not head:
        head = head if head[:1].isalpha() else "x" + head
    head = head[: max_length - _HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{_digest(name)}"


def label_value(value: str) -> str:
    """``value`` when it is a valid label value, else a DNS label made of it (``fit_name``)."""
    if len(value) <= NAME_MAX and _LABEL_VALUE.match(value):
        return value
    return fit_name(value)


def namespace_name(tenant: str, prefix: str = DEFAULT_NAMESPACE_PREFIX) -> str:
    """The namespace of a tenant's apps: ``<prefix><tenant>``, hashed to fit 63 characters."""
    return fit_name(f"{prefix}{tenant}")


def object_name(app: str) -> str:
    """Name of an app's Deployment or VirtualMachine and of its Service (a DNS-1035 label)."""
    return fit_name(app, letter_first=True)


def check_namespace_prefix(prefix: str) -> str:
    """``prefix`` if namespaces may start with it; ValueError saying what is allowed."""
    if len(prefix) > 20 or not re.match(r"^([a-z0-9][-a-z0-9]*)?$", prefix):
        raise ValueError(
            f"namespace prefix {prefix!r} is not valid: use at most 20 lowercase letters, "
            "digits and '-', starting with a letter or digit (e.g. 'ef-')"
        )
    return prefix


# ---------------------------------------------------------------------------------------------
# Desired objects


def spec_hash(assignment: AppAssignment) -> str:
    """A short digest of what a replica runs (workload and resources); a change means replace."""
    spec = {
        "workload": assignment.workload.model_dump(mode="json"),
        "resources": assignment.resources.model_dump(mode="json"),
    }
    return _digest(json.dumps(spec, sort_keys=True, separators=(",", ":")), 16)


def body_digest(body: Mapping[str, Any]) -> str:
    """Digest of an object body, to tell whether what we would send changed."""
    return _digest(json.dumps(body, sort_keys=True, separators=(",", ":")), 16)


def cpu_quantity(cores: float) -> str:
    """Cores as a Kubernetes quantity in millicores: ``0.25`` -> ``"250m"`` (at least ``1m``)."""
    return f"{max(1, round(cores * 1000))}m"


def memory_quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity: ``Gi`` or ``Mi`` when exact, else plain bytes."""
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def resource_limits(resources: Resources) -> dict[str, Any]:
    """Requests and limits (equal: the replica gets what it asked for, no more)."""
    amounts: dict[str, str] = {}
    if resources.cpu > 0:
        amounts["cpu"] = cpu_quantity(resources.cpu)
    if resources.memory > 0:
        amounts["memory"] = memory_quantity(resources.memory)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


@dataclass(frozen=True)
class AppObjects:
    """What one assignment becomes in the cluster."""

    key: str
    """``tenant/app``."""
    namespace: str
    """The tenant's namespace."""
    name: str
    """Name of the app's workload object and Service."""
    objects: tuple[dict[str, Any], ...]
    """Bodies to server-side apply, in order: Namespace, Service, Deployment or VirtualMachine."""
    warnings: tuple[str, ...] = ()
    """What the cluster will run differently from the assignment, for the agent's log."""

    def digests(self) -> dict[ObjectRef, str]:
        """``body_digest`` of each object, by reference: the desired side of a reconcile."""
        return {ref_of(body): body_digest(body) for body in self.objects}


def ownership_labels(assignment: AppAssignment, site: str) -> dict[str, str]:
    """The labels that say the agent of ``site`` owns an object of this app."""
    return {
        MANAGED_BY: MANAGER,
        TENANT_LABEL: label_value(assignment.tenant),
        APP_LABEL: label_value(assignment.app),
        SITE_LABEL: label_value(site),
    }


def selector_labels(assignment: AppAssignment, site: str) -> dict[str, str]:
    """Labels that pick the app's pods at this site (immutable in a Deployment, so minimal)."""
    labels = ownership_labels(assignment, site)
    return {key: labels[key] for key in (TENANT_LABEL, APP_LABEL, SITE_LABEL)}


def desired_objects(
    assignment: AppAssignment, *, site: str, namespace_prefix: str = DEFAULT_NAMESPACE_PREFIX
) -> AppObjects:
    """The objects to apply for ``assignment`` at ``site``.

    Raises ValueError for a process workload: the cluster runs images, not local commands.
    """
    workload = assignment.workload
    if not isinstance(workload, ContainerWorkload | FunctionWorkload | VmWorkload):
        raise ValueError(
            "the kubernetes driver runs container, function and vm workloads; "
            f"app {assignment.key} is a {workload.type} workload"
        )
    namespace = namespace_name(assignment.tenant, namespace_prefix)
    name = object_name(assignment.app)
    labels = ownership_labels(assignment, site)
    annotations = {
        KEY_ANNOTATION: assignment.key,
        GENERATION_ANNOTATION: str(assignment.generation),
        PORT_ANNOTATION: str(workload.port),
        WORKLOAD_ANNOTATION: workload.type,
    }
    meta = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    namespace_object = {
        "apiVersion": NAMESPACE.api_version,
        "kind": NAMESPACE.kind,
        "metadata": {
            "name": namespace,
            "labels": {
                MANAGED_BY: MANAGER,
                TENANT_LABEL: labels[TENANT_LABEL],
                SITE_LABEL: labels[SITE_LABEL],
            },
        },
    }
    service = {
        "apiVersion": SERVICE.api_version,
        "kind": SERVICE.kind,
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(assignment, site),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": workload.port,
                    "targetPort": workload.port,
                    "protocol": "TCP",
                }
            ],
        },
    }
    warnings: list[str] = []
    if isinstance(workload, VmWorkload):
        runner = _virtual_machine(assignment, workload, site=site, meta=meta)
        if assignment.replicas > 1:
            warnings.append(
                f"{assignment.key}: a vm app runs one VirtualMachine per site; "
                f"{assignment.replicas} replicas were asked, 1 runs"
            )
    else:
        runner = _deployment(assignment, workload, site=site, meta=meta)
    return AppObjects(
        key=assignment.key,
        namespace=namespace,
        name=name,
        objects=(namespace_object, service, runner),
        warnings=tuple(warnings),
    )


def _readiness(health_path: str, *, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": health_path, "port": PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 1,
        "failureThreshold": 3,
    }


def _template_meta(assignment: AppAssignment, site: str) -> dict[str, Any]:
    return {
        "labels": ownership_labels(assignment, site),
        # Not the generation: a placement change bumps it and must not roll the pods.
        "annotations": {SPEC_HASH_ANNOTATION: spec_hash(assignment)},
    }


def _deployment(
    assignment: AppAssignment,
    workload: ContainerWorkload | FunctionWorkload,
    *,
    site: str,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    env: dict[str, dict[str, Any]] = {
        name: {"name": name, "value": value} for name, value in sorted(workload.env.items())
    }
    # As the process driver does: the site's variables win over the workload's.
    env["PORT"] = {"name": "PORT", "value": str(workload.port)}
    env["EDGEFLEET_SITE"] = {"name": "EDGEFLEET_SITE", "value": site}
    env["EDGEFLEET_APP"] = {"name": "EDGEFLEET_APP", "value": assignment.key}
    env["EDGEFLEET_REPLICA"] = {
        "name": "EDGEFLEET_REPLICA",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": workload.image,
        "ports": [{"name": PORT_NAME, "containerPort": workload.port, "protocol": "TCP"}],
        "env": list(env.values()),
        # A function's first request waits for this probe: probe it as often as kubelet allows.
        "readinessProbe": _readiness(
            workload.health_path, period=1 if isinstance(workload, FunctionWorkload) else 2
        ),
    }
    if workload.command is not None:
        container["command"] = list(workload.command)
    if workload.args is not None:
        container["args"] = list(workload.args)
    resources = resource_limits(assignment.resources)
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": DEPLOYMENT.api_version,
        "kind": DEPLOYMENT.kind,
        "metadata": dict(meta),
        "spec": {
            "replicas": assignment.replicas,
            "selector": {"matchLabels": selector_labels(assignment, site)},
            # One new pod at a time, the old one serving until the new one is ready: the
            # process driver's surge rollout.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": 2,
            "template": {
                "metadata": _template_meta(assignment, site),
                "spec": {
                    "enableServiceLinks": False,
                    "containers": [container],
                },
            },
        },
    }


def _virtual_machine(
    assignment: AppAssignment, workload: VmWorkload, *, site: str, meta: Mapping[str, Any]
) -> dict[str, Any]:
    disks: list[dict[str, Any]] = [{"name": "containerdisk", "disk": {"bus": "virtio"}}]
    volumes: list[dict[str, Any]] = [
        {"name": "containerdisk", "containerDisk": {"image": workload.image}}
    ]
    if workload.cloud_init is not None:
        disks.append({"name": "cloudinitdisk", "disk": {"bus": "virtio"}})
        volumes.append(
            {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": workload.cloud_init}}
        )
    domain: dict[str, Any] = {
        # Guest vCPUs: the whole cores the replica may use, at least one.
        "cpu": {"cores": max(1, math.ceil(assignment.resources.cpu))},
        "devices": {
            "disks": disks,
            # Masquerade: the VM is reached at its pod's address, so the Service works.
            "interfaces": [{"name": "default", "masquerade": {}}],
        },
    }
    resources = resource_limits(assignment.resources)
    if resources:
        domain["resources"] = resources
    return {
        "apiVersion": VIRTUAL_MACHINE.api_version,
        "kind": VIRTUAL_MACHINE.kind,
        "metadata": dict(meta),
        "spec": {
            "runStrategy": "Always" if assignment.replicas > 0 else "Halted",
            "template": {
                "metadata": _template_meta(assignment, site),
                "spec": {
                    "domain": domain,
                    "networks": [{"name": "default", "pod": {}}],
                    "readinessProbe": {
                        "httpGet": {"path": workload.health_path, "port": workload.port},
                        "periodSeconds": 2,
                        "timeoutSeconds": 1,
                        "failureThreshold": 3,
                    },
                    "volumes": volumes,
                },
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# Reconcile decision


def object_version(obj: Mapping[str, Any]) -> str:
    """What changes when somebody changes the object's spec: ``metadata.generation`` where the
    kind keeps one (Deployments, custom resources), else ``resourceVersion`` (Services)."""
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    if generation is not None:
        return f"g{generation}"
    return f"r{meta.get('resourceVersion', '')}"


@dataclass(frozen=True)
class AppliedObject:
    """What the driver last applied to one object, and the version the server answered."""

    digest: str
    """``body_digest`` of the body sent."""
    version: str
    """``object_version`` of the object the apply returned."""


@dataclass(frozen=True)
class ReconcilePlan:
    """What one reconcile pass changes in the cluster."""

    apply: tuple[ObjectRef, ...] = ()
    """Objects to server-side apply, namespaces first."""
    delete: tuple[ObjectRef, ...] = ()
    """Owned objects no assignment wants any more."""

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (self.apply or self.delete)


def _needs_apply(
    ref: ObjectRef,
    digest: str,
    observed: str | None,
    last: AppliedObject | None,
    *,
    resync: bool,
) -> bool:
    if resync or last is None or last.digest != digest:
        return True
    # Missing (deleted by hand) or changed by someone else since our apply.
    return ref.kind != NAMESPACE.kind and observed != last.version


def plan_reconcile(
    desired: Mapping[ObjectRef, str],
    observed: Mapping[ObjectRef, str],
    applied: Mapping[ObjectRef, AppliedObject],
    *,
    resync: bool = False,
) -> ReconcilePlan:
    """Compare the desired objects (ref -> ``body_digest``) with the owned objects listed
    (ref -> ``object_version``) and what was applied before.

    Apply an object that is missing, whose body differs from the last one applied, whose version
    moved since our apply (changed by hand: drift), or every object on a ``resync``. Namespaces
    are not listed: applied when first seen or changed, and on a resync. Delete every listed
    object that no assignment wants; the listing holds only what this site owns.
    """
    apply = [
        ref
        for ref, digest in desired.items()
        if _needs_apply(ref, digest, observed.get(ref), applied.get(ref), resync=resync)
    ]
    delete = [ref for ref in observed if ref not in desired and ref.kind != NAMESPACE.kind]
    return ReconcilePlan(
        apply=tuple(sorted(apply, key=lambda ref: (_APPLY_ORDER.get(ref.kind, 9), ref))),
        delete=tuple(sorted(delete)),
    )


# ---------------------------------------------------------------------------------------------
# Observed replicas


@dataclass(frozen=True)
class PodReplica:
    """One replica as the cluster shows it: a pod of the app's Deployment (or a VM's launcher)."""

    key: str
    """``tenant/app``."""
    id: str
    """Pod name."""
    index: int
    """Position among the app's pods, oldest first."""
    address: str | None
    """Pod IP: where the replica serves, with ``port``."""
    port: int | None
    """Port the replica serves on."""
    state: str
    """starting | running | backoff | crashed | stopped."""
    ready: bool
    """Listed as ready in the Service's EndpointSlices, and its Ready condition is True."""
    restarts: int = 0
    """Container restarts in this pod."""
    started_at: datetime | None = None
    """When the pod started."""
    generation: int = 0
    """App generation the pod runs; 0 for a pod of an earlier spec (not known)."""

    def replica_state(self) -> ReplicaState:
        """The agent's view of the replica."""
        return ReplicaState(
            id=self.id,
            index=self.index,
            port=self.port,
            host=self.address,
            state=self.state,
            ready=self.ready,
            restarts=self.restarts,
            started_at=self.started_at,
            generation=self.generation,
        )


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: object, default: int = 0) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def _condition(pod: Mapping[str, Any], kind: str) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def pod_state(pod: Mapping[str, Any]) -> str:
    """The replica state of a pod: stopped while deleted, crashed when it ended, backoff while a
    container waits to restart, running once Ready, else starting."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return STOPPED
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase in ("Failed", "Succeeded"):
        return CRASHED
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff":
            return BACKOFF
    if phase == "Running" and _condition(pod, "Ready"):
        return RUNNING
    return STARTING


def _slice_readiness(slices: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], bool]:
    """(namespace, pod name) -> ready, from EndpointSlices; a missing condition means ready."""
    ready: dict[tuple[str, str], bool] = {}
    for item in slices:
        namespace = str((item.get("metadata") or {}).get("namespace") or "")
        for endpoint in item.get("endpoints") or []:
            target = endpoint.get("targetRef") or {}
            if target.get("kind") != "Pod" or not target.get("name"):
                continue
            conditions = endpoint.get("conditions") or {}
            # EndpointConditions: "nil should be interpreted as ready"; terminating is not.
            is_ready = conditions.get("ready") is not False and not conditions.get("terminating")
            where = (namespace, str(target["name"]))
            ready[where] = ready.get(where, False) or is_ready
    return ready


def observe_replicas(
    *,
    workloads: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    slices: Sequence[Mapping[str, Any]],
) -> dict[str, tuple[PodReplica, ...]]:
    """Replicas per ``tenant/app`` from the owned objects listed at a site.

    ``workloads`` are the app's Deployments and VirtualMachines: their annotations give the app
    key, generation and port. A pod belongs to the workload in its namespace with the same app
    label; pods of no workload (left by a deleted app) are skipped. Replicas are ordered oldest
    first; ``index`` is that position.
    """
    owners: dict[tuple[str, str], Mapping[str, Any]] = {}
    for workload in workloads:
        meta = workload.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        key = annotations.get(KEY_ANNOTATION)
        app_label = (meta.get("labels") or {}).get(APP_LABEL)
        if not key or not app_label:
            continue
        owners[(str(meta.get("namespace") or ""), str(app_label))] = workload
    ready_in_slices = _slice_readiness(slices)
    found: dict[str, list[tuple[tuple[str, str], PodReplica]]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        namespace = str(meta.get("namespace") or "")
        owner = owners.get((namespace, str((meta.get("labels") or {}).get(APP_LABEL))))
        if owner is None:
            continue
        owner_notes = (owner.get("metadata") or {}).get("annotations") or {}
        key = str(owner_notes[KEY_ANNOTATION])
        status = pod.get("status") or {}
        state = pod_state(pod)
        template_notes = (
            ((owner.get("spec") or {}).get("template") or {}).get("metadata") or {}
        ).get("annotations") or {}
        pod_hash = (meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION)
        current = pod_hash is None or pod_hash == template_notes.get(SPEC_HASH_ANNOTATION)
        port = owner_notes.get(PORT_ANNOTATION)
        name = str(meta.get("name") or "")
        replica = PodReplica(
            key=key,
            id=name,
            index=0,
            address=status.get("podIP") or None,
            port=_int(port) if port is not None else None,
            state=state,
            ready=state == RUNNING and ready_in_slices.get((namespace, name), False),
            restarts=sum(
                _int(c.get("restartCount")) for c in status.get("containerStatuses") or []
            ),
            started_at=_time(status.get("startTime")),
            generation=_int(owner_notes.get(GENERATION_ANNOTATION)) if current else 0,
        )
        order = (str(meta.get("creationTimestamp") or ""), name)
        found.setdefault(key, []).append((order, replica))
    result: dict[str, tuple[PodReplica, ...]] = {}
    for key, entries in sorted(found.items()):
        if entries:  # as the process driver: an app at zero has no entry
            entries.sort(key=lambda entry: entry[0])
            result[key] = tuple(
                replace(replica, index=index) for index, (_, replica) in enumerate(entries)
            )
    return result
