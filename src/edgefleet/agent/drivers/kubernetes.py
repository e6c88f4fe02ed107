"""The kubernetes driver: the agent runs its site's apps on the site's cluster, through its API.

The objects come from the pure mapping in ``kube_objects`` (Namespace per tenant; Deployment or
KubeVirt VirtualMachine per app; a ClusterIP Service). This module is the shell around it:

* **Apply** is server-side apply (``PATCH`` with ``application/apply-patch+yaml``,
  ``fieldManager=edgefleet``, ``force=true``): the agent states the whole intent for the fields
  it owns and takes them back from whoever changed them; the fields others own (defaults, the
  status, an admission webhook's additions) are left alone.
* **Level-based reconcile** in one thread, like the process driver's supervisor: list the
  site's owned objects (label selector ``app.kubernetes.io/managed-by=edgefleet,
  edgefleet.io/site=<site>`` on every list; only what such a list returned is ever deleted),
  decide (``plan_reconcile``), apply and delete, then turn pods and EndpointSlices into
  replicas and call ``on_change`` when they changed. A pass runs on ``converge``, on watch
  events and every ``poll`` seconds, and re-applies everything every ``resync`` seconds.
* **Watches** with ``resourceVersion`` on Deployments, Services, Pods and EndpointSlices (site
  selector) only wake the reconcile thread; the pass lists again and decides on the whole
  picture. So a readiness change reaches the ingress at once (a request held for a cold start
  waits for it) and a Deployment scaled by hand is put back at once, while a missed or expired
  watch event (HTTP 410) costs nothing but the next poll: the lists are the truth, never the
  stream of events. VirtualMachines are not watched (their pods are); their drift is corrected
  by the poll.
* **An API that does not answer** (refused connection, timeout, 5xx, 429) marks the driver
  ``unreachable``, keeps the last observation and retries with backoff (0.5 s doubling to 10 s);
  the replicas keep running in the cluster meanwhile. An API that answers no (4xx: an invalid
  object, no KubeVirt) is a problem of that app, listed in ``problems`` and logged, and retried
  at the next resync; the other apps go on.

The client is the official ``kubernetes`` package's ``kubernetes.dynamic.DynamicClient`` with
fixed resource definitions: its calls are the same across client releases (``ApiClient.call_api``
changed its signature between them), it takes plain dicts (what the mapping makes) and custom
kinds (VirtualMachine) without generated models, and it has server-side apply built in. Its API
discovery is skipped: the driver knows its six kinds, so an agent start costs no discovery
round trips, needs no discovery cache file, and a missing KubeVirt is one 404 for that app.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgefleet.agent.backoff import Backoff
from edgefleet.agent.drivers.kube_objects import (
    DEFAULT_NAMESPACE_PREFIX,
    DEPLOYMENT,
    ENDPOINT_SLICE,
    KINDS,
    MANAGER,
    OWNED_KINDS,
    POD,
    SERVICE,
    VIRTUAL_MACHINE,
    AppliedObject,
    AppObjects,
    KubeKind,
    ObjectRef,
    PodReplica,
    check_namespace_prefix,
    desired_objects,
    namespace_name,
    object_version,
    observe_replicas,
    plan_reconcile,
    ref_of,
    site_selector,
)
from edgefleet.model import AppAssignment, ReplicaState

log = logging.getLogger(__name__)

WATCHED_KINDS = (DEPLOYMENT, SERVICE, POD, ENDPOINT_SLICE)
"""Kinds whose changes wake the reconcile thread at once."""

_Mapped = tuple[AppObjects, dict[ObjectRef, str]] | str
"""An assignment's objects and their digests, or why the cluster cannot run it."""


class KubeUnavailable(Exception):
    """The API did not answer (connection refused, timeout, 5xx, 429): try again later."""


class KubeRefused(Exception):
    """The API answered no to this request (4xx); the same request will not do better."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        """HTTP status of the answer."""
        self.message = message
        """The API's message."""


@dataclass(frozen=True)
class WatchEvent:
    """One change of a watched object."""

    type: str
    """ADDED, MODIFIED, DELETED or BOOKMARK."""
    resource_version: str
    """The object's ``resourceVersion``: resume a watch from it."""


class KubeApi(Protocol):
    """The few calls the driver makes; ``ClusterApi`` is the real one. Calls raise
    ``KubeUnavailable`` or ``KubeRefused``."""

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``body`` (field manager ``edgefleet``, forced); the stored object."""

    def list(self, kind: KubeKind, selector: str) -> list[dict[str, Any]]:
        """Objects of ``kind`` in every namespace that match the label ``selector``."""

    def delete(self, ref: ObjectRef) -> None:
        """Delete one object; one already gone is fine."""

    def watch(
        self, kind: KubeKind, selector: str, *, resource_version: str | None, timeout: int
    ) -> Iterator[WatchEvent]:
        """Changes of matching objects after ``resource_version`` (None: from now, with the
        existing objects as ADDED), for ``timeout`` seconds at most. HTTP 410: too old."""

    def pod_log(self, namespace: str, name: str, *, tail: int) -> str:
        """The last ``tail`` lines of a pod's log."""

    def close(self) -> None:
        """Release connections."""


# ---------------------------------------------------------------------------------------------
# The real API, through the kubernetes package


def _module(name: str) -> Any:
    """A module of the optional ``kubernetes`` package, typed Any (its typing varies by release)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ValueError(
            "the kubernetes driver needs the kubernetes client: pip install 'edgefleet[kubernetes]'"
        ) from None


class _NoDiscovery:
    """Stands in for the dynamic client's discoverer: the driver names its resources itself."""

    def __init__(self, client: Any, cache_file: Any) -> None:
        self.client = client


def _as_dict(client: Any, data: Any) -> Any:
    """Serializer for the dynamic client: the decoded JSON as it is (no ResourceInstance)."""
    return data


def _log_text(client: Any, data: Any) -> str:
    # A log that happens to be one JSON document was decoded: give it back as text.
    return json.dumps(data)


class ClusterApi:
    """``KubeApi`` over an API server, with the official client's ``DynamicClient``."""

    def __init__(self, api_client: Any, *, request_timeout: float = 10.0) -> None:
        """Use ``api_client`` (a configured ``kubernetes.client.ApiClient``)."""
        dynamic = _module("kubernetes.dynamic")
        self._api_client = api_client
        self._dynamic = dynamic.DynamicClient(api_client, discoverer=_NoDiscovery)
        self._resource_class = _module("kubernetes.dynamic.resource").Resource
        self._api_exception = _module("kubernetes.client.rest").ApiException
        self._http_error = _module("urllib3.exceptions").HTTPError
        self._watch_module = _module("kubernetes.watch")
        self._timeout = request_timeout
        self._resources: dict[str, Any] = {}
        self._watchers: set[Any] = set()
        self._lock = threading.Lock()

    def _resource(self, kind: KubeKind) -> Any:
        resource = self._resources.get(kind.kind)
        if resource is None:
            resource = self._resource_class(
                prefix="apis" if kind.group else "api",
                group=kind.group,
                api_version=kind.version,
                kind=kind.kind,
                namespaced=kind.namespaced,
                name=kind.plural,
                client=self._dynamic,
            )
            self._resources[kind.kind] = resource
        return resource

    def _translate(self, error: Exception) -> Exception:
        if isinstance(error, self._api_exception):
            status = int(getattr(error, "status", 0) or 0)
            if status in (0, 408, 429) or status >= 500:
                return KubeUnavailable(f"HTTP {status}: {_summary(error)}")
            return KubeRefused(status, _summary(error))
        if isinstance(error, self._http_error | OSError):
            return KubeUnavailable(str(error) or type(error).__name__)
        return error

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply; see ``KubeApi``."""
        ref = ref_of(body)
        try:
            result = self._dynamic.server_side_apply(
                self._resource(KINDS[ref.kind]),
                # JSON is YAML: sent as text, the apply-patch+yaml content type is honoured by
                # every client release (some only serialise dicts for JSON content types).
                body=json.dumps(body),
                name=ref.name,
                namespace=ref.namespace or None,
                field_manager=MANAGER,
                force_conflicts=True,
                serializer=_as_dict,
                _request_timeout=self._timeout,
            )
        except Exception as error:
            raise self._translate(error) from error
        return dict(result)

    def list(self, kind: KubeKind, selector: str) -> list[dict[str, Any]]:
        """Matching objects in every namespace; see ``KubeApi``."""
        try:
            result = self._dynamic.get(
                self._resource(kind),
                label_selector=selector,
                serializer=_as_dict,
                _request_timeout=self._timeout,
            )
        except Exception as error:
            raise self._translate(error) from error
        items = result.get("items") or []
        for item in items:  # list items leave out kind and apiVersion
            item.setdefault("kind", kind.kind)
            item.setdefault("apiVersion", kind.api_version)
        return list(items)

    def delete(self, ref: ObjectRef) -> None:
        """Delete one object; see ``KubeApi``."""
        try:
            self._dynamic.delete(
                self._resource(KINDS[ref.kind]),
                name=ref.name,
                namespace=ref.namespace or None,
                serializer=_as_dict,
                _request_timeout=self._timeout,
            )
        except Exception as error:
            translated = self._translate(error)
            if isinstance(translated, KubeRefused) and translated.status == 404:
                return
            raise translated from error

    def watch(
        self, kind: KubeKind, selector: str, *, resource_version: str | None, timeout: int
    ) -> Iterator[WatchEvent]:
        """Stream changes; see ``KubeApi``."""
        watcher = self._watch_module.Watch()
        with self._lock:
            self._watchers.add(watcher)
        try:
            stream = self._dynamic.watch(
                self._resource(kind),
                label_selector=selector,
                resource_version=resource_version or None,
                timeout=timeout,
                watcher=watcher,
            )
            for event in stream:
                raw = event.get("raw_object") or {}
                version = str((raw.get("metadata") or {}).get("resourceVersion") or "")
                yield WatchEvent(type=str(event.get("type")), resource_version=version)
        except Exception as error:
            raise self._translate(error) from error
        finally:
            with self._lock:
                self._watchers.discard(watcher)

    def pod_log(self, namespace: str, name: str, *, tail: int) -> str:
        """A pod's last log lines; see ``KubeApi``."""
        try:
            text = self._dynamic.request(
                "get",
                f"/api/v1/namespaces/{namespace}/pods/{name}/log",
                query_params=[("tailLines", tail)],
                serializer=_log_text,
                _request_timeout=self._timeout,
            )
        except Exception as error:
            raise self._translate(error) from error
        return str(text)

    def close(self) -> None:
        """Stop open watches and release the connection pool."""
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.stop()
            # A watch blocks in a read until the next event: close its response to end it now.
            response = getattr(watcher, "_resp", None)
            if response is not None:
                try:
                    response.close()
                except Exception:  # best effort: the stream ends at its timeout anyway
                    log.debug("closing a watch stream failed", exc_info=True)
        self._api_client.close()


def _summary(error: Exception) -> str:
    body = getattr(error, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return str(message)
    return str(getattr(error, "reason", None) or error)


def connect(
    *, kubeconfig: Path | None = None, context: str | None = None, request_timeout: float = 10.0
) -> ClusterApi:
    """The API of the site's cluster: from ``kubeconfig`` (and ``context``, else its current
    one) when the agent runs outside the cluster, else the pod's service account (in-cluster).

    Raises ValueError saying what is missing.
    """
    client = _module("kubernetes.client")
    config = _module("kubernetes.config")
    configuration = client.Configuration()
    # No retries inside the client: the driver's own backoff decides when to try again.
    configuration.retries = 0
    try:
        if kubeconfig is not None:
            config.load_kube_config(
                config_file=str(kubeconfig),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        elif context is not None:
            raise ValueError(f"--context {context} needs --kubeconfig: the file that defines it")
        else:
            config.load_incluster_config(client_configuration=configuration)
    except ValueError:
        raise
    except Exception as error:
        where = (
            f"kubeconfig {kubeconfig}" + (f", context {context}" if context else "")
            if kubeconfig is not None
            else "the in-cluster service account (not running in a pod? give --kubeconfig PATH)"
        )
        raise ValueError(
            f"cannot load the Kubernetes client settings from {where}: {error}"
        ) from None
    return ClusterApi(client.ApiClient(configuration), request_timeout=request_timeout)


# ---------------------------------------------------------------------------------------------
# The driver


class KubernetesDriver:
    """Runs a site's container, function and vm apps on its cluster; see the module docstring."""

    def __init__(
        self,
        site: str,
        api: KubeApi,
        *,
        namespace_prefix: str = DEFAULT_NAMESPACE_PREFIX,
        poll: float = 10.0,
        resync: float = 60.0,
        watch: bool = True,
        watch_timeout: int = 60,
        settle: float = 0.05,
        backoff: Backoff | None = None,
    ) -> None:
        """Prepare a driver for ``site`` over ``api``; nothing happens until ``start``.

        ``poll``: seconds between passes that list and correct drift without any event;
        ``resync``: seconds between passes that apply every object again; ``watch``: wake on
        watch events (off: passes only on converge and every ``poll``); ``settle``: seconds a
        woken pass waits for more events, so a burst costs one pass.
        """
        if poll <= 0 or resync <= 0 or watch_timeout <= 0 or settle < 0:
            raise ValueError("poll, resync and watch_timeout must be > 0, settle >= 0")
        self.site = site
        self.namespace_prefix = check_namespace_prefix(namespace_prefix)
        self._api = api
        self._selector = site_selector(site)
        self._poll = poll
        self._resync = resync
        self._watch = watch
        self._watch_timeout = watch_timeout
        self._settle = settle
        self._backoff = backoff or Backoff(first=0.5, cap=10.0)

        self._lock = threading.Lock()
        self._desired: dict[str, AppAssignment] | None = None
        self._observation: dict[str, tuple[PodReplica, ...]] = {}
        self._problems: dict[str, str] = {}
        self._unreachable = False
        self._last_failure = ""
        self._closed = False
        self._on_change: Callable[[], None] = lambda: None

        # Owned by the reconcile thread.
        self._applied: dict[ObjectRef, AppliedObject] = {}
        self._refused: dict[ObjectRef, tuple[str, str]] = {}
        """Refused objects: digest of the body refused and why; not retried before a resync."""
        self._warned: set[str] = set()
        self._mapped: dict[str, tuple[AppAssignment, _Mapped]] = {}
        """Per app: the assignment last mapped, and its objects and digests (or why not)."""
        self._next_poll = 0.0
        self._next_resync = 0.0
        self._retry_at = 0.0
        self._rounds_started = 0
        self._rounds_done = 0

        self._thread: threading.Thread | None = None
        self._watchers: list[threading.Thread] = []
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._pass_done = threading.Condition(self._lock)

    # -- Driver protocol ----------------------------------------------------------------------

    def start(self, on_change: Callable[[], None]) -> None:
        """Start the reconcile thread (and the watches). Until the first ``converge`` it only
        observes: what runs in the cluster is adopted, nothing is deleted."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise RuntimeError("KubernetesDriver.start() may be called once, before close()")
            self._on_change = on_change
        self._thread = threading.Thread(
            target=self._run, name=f"kubernetes-driver-{self.site}", daemon=True
        )
        self._thread.start()
        if self._watch:
            for kind in WATCHED_KINDS:
                watcher = threading.Thread(
                    target=self._watch_kind,
                    args=(kind,),
                    name=f"kubernetes-watch-{self.site}-{kind.plural}",
                    daemon=True,
                )
                self._watchers.append(watcher)
                watcher.start()

    def converge(self, assignments: Sequence[AppAssignment]) -> None:
        """Make the cluster run ``assignments``; returns at once, the reconcile thread applies.

        Apps with a process workload are not run here (see ``problems``).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("KubernetesDriver is closed")
            self._desired = {assignment.key: assignment for assignment in assignments}
            # A new desired state is worth a try even while backing off.
            self._retry_at = 0.0
        self._wake.set()

    def observe(self) -> dict[str, list[ReplicaState]]:
        """Replicas per ``tenant/app`` as last listed (kept while the API does not answer)."""
        with self._lock:
            observation = self._observation
        return {
            key: [replica.replica_state() for replica in replicas]
            for key, replicas in observation.items()
        }

    def replicas(self) -> dict[str, tuple[PodReplica, ...]]:
        """Replicas per ``tenant/app`` with their pod addresses, for routing to them."""
        with self._lock:
            return dict(self._observation)

    def logs(self, tenant: str, app: str, *, replica: str | None = None, tail: int = 100) -> str:
        """The last ``tail`` lines of each pod's log, each headed by ``==> <pod> <==``.

        Raises LookupError for a replica that is not one of the app's pods.
        """
        with self._lock:
            pods = [r.id for r in self._observation.get(f"{tenant}/{app}", ())]
        if replica is not None:
            if replica not in pods:
                raise LookupError(
                    f"no replica {replica!r} of {tenant}/{app} at site {self.site}: "
                    "see the replica ids in the app's status"
                )
            pods = [replica]
        namespace = namespace_name(tenant, self.namespace_prefix)
        blocks = []
        for pod in pods:
            try:
                text = self._api.pod_log(namespace, pod, tail=tail)
            except (KubeUnavailable, KubeRefused) as error:
                text = f"[edgefleet-agent] no log from the cluster: {error}\n"
            if text and not text.endswith("\n"):
                text += "\n"
            blocks.append(f"==> {pod} <==\n{text}")
        return "\n".join(blocks)

    def close(self) -> None:
        """Stop the reconcile thread and the watches; the apps keep running in the cluster."""
        self._stop_threads()
        self._api.close()
        self._join_watchers()

    def stop_all(self) -> None:
        """Delete every object this site owns (namespaces stay), then close."""
        self._stop_threads()
        try:
            for kind in OWNED_KINDS:
                try:
                    items = self._api.list(kind, self._selector)
                except KubeRefused as error:
                    log.info("site %s: not removing %s: %s", self.site, kind.plural, error)
                    continue
                for item in items:
                    self._api.delete(ref_of(item))
        except KubeUnavailable as error:
            log.warning(
                "site %s: cannot remove the apps: the API does not answer: %s", self.site, error
            )
        finally:
            self._api.close()
            self._join_watchers()

    # -- What the agent may look at -------------------------------------------------------------

    @property
    def unreachable(self) -> bool:
        """The API did not answer the last pass; ``observe`` shows the last answer."""
        with self._lock:
            return self._unreachable

    def problem(self) -> str | None:
        """Why nothing can be run or changed now: the API does not answer; else None."""
        with self._lock:
            if not self._unreachable:
                return None
            return f"the Kubernetes API of site {self.site} does not answer ({self._last_failure})"

    @property
    def problems(self) -> dict[str, str]:
        """Apps (``tenant/app``) the cluster does not run as asked, and why."""
        with self._lock:
            return dict(self._problems)

    def wait_for_round(self, timeout: float) -> bool:
        """Wake the reconcile thread and wait until a round that started after this call has
        ended (a round makes a pass unless it is backing off); False on timeout."""
        with self._pass_done:
            target = self._rounds_started + 1
            self._wake.set()
            return self._pass_done.wait_for(lambda: self._rounds_done >= target, timeout)

    # -- Reconcile thread ---------------------------------------------------------------------

    def _stop_threads(self) -> None:
        with self._lock:
            self._closed = True
        self._closing.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _join_watchers(self) -> None:
        # Closing the API ends the open watches; a watch that does not end within the grace
        # ends at its timeout (its thread is a daemon).
        for watcher in self._watchers:
            if watcher is not threading.current_thread():
                watcher.join(timeout=2.0)
        self._watchers = [w for w in self._watchers if w.is_alive()]

    def _run(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                self._rounds_started += 1
            self._wake.clear()
            now = time.monotonic()
            if now >= self._retry_at:
                self._pass(now)
            with self._pass_done:
                self._rounds_done = self._rounds_started
                self._pass_done.notify_all()
                due = min(self._next_poll, self._next_resync)
                if self._retry_at > time.monotonic():
                    due = self._retry_at  # backing off: events wait, converge does not
            self._wake.wait(max(0.0, due - time.monotonic()))
            # Let a burst of events (a rollout) arrive: one pass for all of them.
            if self._settle:
                self._closing.wait(self._settle)

    def _pass(self, now: float) -> None:
        resync = now >= self._next_resync
        if resync:
            self._refused.clear()  # a resync tries refused objects again
        try:
            self._reconcile(resync=resync)
        except KubeUnavailable as error:
            delay = self._backoff.next()
            with self._lock:
                was = self._unreachable
                self._unreachable = True
                self._last_failure = str(error)[:300]
                self._retry_at = time.monotonic() + delay
            if not was:
                log.warning(
                    "site %s: the Kubernetes API does not answer (%s); replicas as last seen, "
                    "retrying",
                    self.site,
                    error,
                )
            return
        except Exception:
            log.exception("site %s: kubernetes driver pass failed", self.site)
            with self._lock:
                self._retry_at = time.monotonic() + self._backoff.next()
            return
        self._backoff.reset()
        with self._lock:
            if self._unreachable:
                log.info("site %s: the Kubernetes API answers again", self.site)
            self._unreachable = False
            self._retry_at = 0.0
        self._next_poll = now + self._poll
        if resync:
            self._next_resync = now + self._resync

    def _reconcile(self, *, resync: bool) -> None:
        with self._lock:
            desired = None if self._desired is None else list(self._desired.values())
        listed = {kind.kind: self._api.list(kind, self._selector) for kind in WATCHED_KINDS}
        try:
            listed[VIRTUAL_MACHINE.kind] = self._api.list(VIRTUAL_MACHINE, self._selector)
        except KubeRefused:
            listed[VIRTUAL_MACHINE.kind] = []  # no KubeVirt in this cluster: no VMs of ours
        if desired is not None:
            self._apply(desired, listed, resync=resync)
        observation = observe_replicas(
            workloads=listed[DEPLOYMENT.kind] + listed[VIRTUAL_MACHINE.kind],
            pods=listed[POD.kind],
            slices=listed[ENDPOINT_SLICE.kind],
        )
        with self._lock:
            changed = observation != self._observation
            self._observation = observation
            on_change = self._on_change
        if changed:
            on_change()

    def _apply(
        self,
        desired: Sequence[AppAssignment],
        listed: Mapping[str, Sequence[Mapping[str, Any]]],
        *,
        resync: bool,
    ) -> None:
        bodies: dict[ObjectRef, dict[str, Any]] = {}
        digests: dict[ObjectRef, str] = {}
        owner: dict[ObjectRef, str] = {}
        problems: dict[str, str] = {}
        mapped: dict[str, tuple[AppAssignment, _Mapped]] = {}
        for assignment in desired:
            # Mapped again only when the assignment changed: a pass runs on every watch event.
            cached = self._mapped.get(assignment.key)
            entry = cached[1] if cached is not None and cached[0] == assignment else None
            if entry is None:
                entry = self._map(assignment)
            mapped[assignment.key] = (assignment, entry)
            if isinstance(entry, str):
                problems[assignment.key] = entry
                continue
            objects, object_digests = entry
            for warning in objects.warnings:
                if warning not in self._warned:
                    self._warned.add(warning)
                    log.warning("site %s: %s", self.site, warning)
            for body in objects.objects:
                ref = ref_of(body)
                bodies[ref] = body
                digests[ref] = object_digests[ref]
                owner.setdefault(ref, assignment.key)
        self._mapped = mapped
        observed = {
            ref_of(item): object_version(item) for kind in OWNED_KINDS for item in listed[kind.kind]
        }
        plan = plan_reconcile(digests, observed, self._applied, resync=resync)
        for ref in plan.apply:
            body = bodies[ref]
            digest = digests[ref]
            refused = self._refused.get(ref)
            if refused is not None and refused[0] == digest:
                problems.setdefault(owner[ref], refused[1])
                continue
            try:
                stored = self._api.apply(body)
            except KubeRefused as error:
                reason = f"{ref} refused: {error}"
                if ref.kind == VIRTUAL_MACHINE.kind and error.status == 404:
                    reason += " (is KubeVirt installed in this cluster?)"
                self._refused[ref] = (digest, reason)
                self._applied.pop(ref, None)
                problems.setdefault(owner[ref], reason)
                continue
            self._refused.pop(ref, None)
            self._applied[ref] = AppliedObject(digest=digest, version=object_version(stored))
            log.debug("site %s: applied %s", self.site, ref)
        for ref in plan.delete:
            self._api.delete(ref)
            self._applied.pop(ref, None)
            log.info("site %s: deleted %s (no longer assigned)", self.site, ref)
        for ref in [ref for ref in self._applied if ref not in bodies]:
            del self._applied[ref]
        with self._lock:
            before = self._problems
            self._problems = problems
        for key, reason in problems.items():
            if before.get(key) != reason:
                log.error("site %s: %s not run as asked: %s", self.site, key, reason)

    def _map(self, assignment: AppAssignment) -> _Mapped:
        try:
            objects = desired_objects(
                assignment, site=self.site, namespace_prefix=self.namespace_prefix
            )
        except ValueError as error:
            return str(error)
        return objects, objects.digests()

    # -- Watches --------------------------------------------------------------------------------

    def _watch_kind(self, kind: KubeKind) -> None:
        backoff = Backoff(first=0.5, cap=10.0)
        version: str | None = None
        while not self._closing.is_set():
            try:
                for event in self._api.watch(
                    kind, self._selector, resource_version=version, timeout=self._watch_timeout
                ):
                    if self._closing.is_set():
                        return
                    version = event.resource_version or version
                    backoff.reset()
                    if event.type != "BOOKMARK":
                        self._wake.set()
                continue
            except KubeRefused as error:
                if error.status == 410:
                    version = None  # expired: watch from now; the pass lists everything
                    self._wake.set()
                    continue
                log.debug("site %s: watch of %s refused: %s", self.site, kind.plural, error)
            except KubeUnavailable as error:
                log.debug("site %s: watch of %s failed: %s", self.site, kind.plural, error)
            except Exception:
                if self._closing.is_set():
                    return
                log.exception("site %s: watch of %s failed", self.site, kind.plural)
            self._closing.wait(backoff.next())
