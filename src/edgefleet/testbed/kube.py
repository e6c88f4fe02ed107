"""Real Kubernetes control planes on loopback, for the tests of the kubernetes driver.

A ``KubeCluster`` runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler, built
from source by ``tools/kube-build.sh`` (``make kube``), plus kwok, which plays the nodes: it
marks the fake nodes Ready and keeps their leases, and moves every pod the real scheduler binds
to them through Running and Ready, without running any container. The real controllers do the
rest (Deployments, ReplicaSets, EndpointSlices, garbage collection), so what a test sees is what
a cluster does, minus the containers.

Everything listens on the loopback address given (127.0.0.1 by default) on ports picked here,
so several clusters run side by side, each in its own workdir::

    <workdir>/pki/       CA, serving certificate, service-account key (openssl)
    <workdir>/etcd/      etcd's data
    <workdir>/logs/      one log per process
    <workdir>/kubeconfig one context, named after the cluster, with the admin token

Addresses that only live in objects are not loopback, because the API rejects loopback
endpoints: pods get addresses from 198.18.0.0/16 and services from 198.19.0.0/16 (RFC 2544's
benchmarking range, which nothing here routes). No process connects to them: there is no
kube-proxy and no container. Nodes carry 127.0.0.1, where kwok answers as their kubelet.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

BIN_ENV = "EDGEFLEET_KUBE_BIN"
"""Environment variable naming a directory of binaries to use instead of the built ones."""
STAGES_FILE = "kwok-stages.yaml"
"""kwok's Stage configuration, copied next to the binaries from the pinned kwok by the build."""
BINARY_FILES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    STAGES_FILE,
)
"""The files a bin directory must hold."""
POD_CIDR = "198.18.0.0/16"
"""Where kwok takes pod addresses from: data only. Nothing serves there and tests must never
connect to them (loopback would be safer, but EndpointSlices refuse loopback addresses)."""
CLUSTER_RANGE = "198.18.0.0/15"
"""Pod and service addresses together: ``guard_cluster_range`` keeps traffic to them here."""
SERVICE_CIDR = "198.19.0.0/16"
"""Where the apiserver takes ClusterIPs from (data only: there is no kube-proxy)."""
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
"""The annotation (value ``fake``) that makes kwok manage a node."""
NODE_LABEL = "edgefleet.io/test-node"
"""Label on the nodes a cluster makes, so they can be listed apart from any other."""

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
# Ports are drawn below Linux's ephemeral range (32768-60999), where outgoing connections take
# theirs, and remembered, so two clusters of one process never draw the same one.
_PORT_RANGE = (20000, 32000)
_ports_taken: set[int] = set()


class KubeClusterError(RuntimeError):
    """A test cluster could not do what was asked; the message says which process and why."""


@dataclass(frozen=True)
class KubeBinaries:
    """The programs of a test control plane, and kwok's configuration."""

    etcd: Path
    """etcd, the store."""
    kube_apiserver: Path
    """kube-apiserver."""
    kube_controller_manager: Path
    """kube-controller-manager: Deployments, ReplicaSets, EndpointSlices, service accounts..."""
    kube_scheduler: Path
    """kube-scheduler: binds pods to kwok's nodes."""
    kwok: Path
    """kwok: plays the kubelets of fake nodes."""
    kwok_stages: Path
    """kwok's Stage configuration (node lifecycle and heartbeats, pods Running and Ready)."""

    @classmethod
    def in_dir(cls, directory: Path) -> KubeBinaries:
        """The files of a bin directory as laid out by tools/kube-build.sh."""
        return cls(*(directory / name for name in BINARY_FILES))

    def missing(self) -> list[Path]:
        """The programs that are not executable files, and the stages file if it is absent."""
        programs = (
            self.etcd,
            self.kube_apiserver,
            self.kube_controller_manager,
            self.kube_scheduler,
            self.kwok,
        )
        gone = [p for p in programs if not (p.is_file() and os.access(p, os.X_OK))]
        return gone + ([] if self.kwok_stages.is_file() else [self.kwok_stages])


def _project_root() -> Path:
    """The checkout this module runs from (the folder with tools/kube-build.sh), else the cwd."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "tools" / "kube-build.sh").is_file():
            return parent
    return Path.cwd()


def find_binaries(root: Path | None = None) -> KubeBinaries | str:
    """The built control plane, or why there is none and what to run.

    ``$EDGEFLEET_KUBE_BIN`` names a bin directory to use; otherwise ``.cache/kube/current``
    under ``root`` (default: this checkout) names the one the last build wrote.
    """
    build = "run `make kube` (tools/kube-build.sh; it needs Go >= 1.26 and the Go module proxy)"
    override = os.environ.get(BIN_ENV)
    if override:
        directory = Path(override)
        where = f"${BIN_ENV}={override}"
    else:
        root = root or _project_root()
        current = root / ".cache" / "kube" / "current"
        try:
            directory = Path(current.read_text().strip())
        except OSError:
            return f"no Kubernetes test binaries: {current} does not exist; {build}"
        where = str(current)
    binaries = KubeBinaries.in_dir(directory)
    missing = binaries.missing()
    if missing:
        names = ", ".join(str(p) for p in missing)
        return f"Kubernetes test binaries incomplete ({where}): missing {names}; {build}"
    return binaries


@dataclass(frozen=True)
class ClusterPorts:
    """The ports one cluster listens on, all on its loopback host."""

    etcd_client: int
    """etcd's clients (the apiserver)."""
    etcd_peer: int
    """etcd's peers (none; etcd listens anyway)."""
    apiserver: int
    """The Kubernetes API (HTTPS)."""
    controller_manager: int
    """kube-controller-manager's /healthz and /metrics (HTTPS)."""
    scheduler: int
    """kube-scheduler's /healthz and /metrics (HTTPS)."""
    kwok: int
    """kwok's server: /healthz, and the kubelet API of every fake node (HTTPS)."""


@dataclass(frozen=True)
class ClusterLayout:
    """Where one cluster keeps its files."""

    workdir: Path
    """The cluster's own directory."""

    @property
    def pki(self) -> Path:
        """Keys and certificates."""
        return self.workdir / "pki"

    @property
    def ca_cert(self) -> Path:
        """The cluster's CA: signs the serving certificate; clients trust it."""
        return self.pki / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's key (the controller-manager signs CSRs with it)."""
        return self.pki / "ca.key"

    @property
    def serving_cert(self) -> Path:
        """Serving certificate of every HTTPS listener, for the loopback host."""
        return self.pki / "serving.crt"

    @property
    def serving_key(self) -> Path:
        """Its key."""
        return self.pki / "serving.key"

    @property
    def sa_key(self) -> Path:
        """Signs service-account tokens."""
        return self.pki / "sa.key"

    @property
    def sa_pub(self) -> Path:
        """Verifies service-account tokens."""
        return self.pki / "sa.pub"

    @property
    def tokens(self) -> Path:
        """The apiserver's static token file (admin, controller-manager, scheduler, kwok)."""
        return self.pki / "tokens.csv"

    @property
    def etcd_data(self) -> Path:
        """etcd's data directory."""
        return self.workdir / "etcd"

    @property
    def logs(self) -> Path:
        """One log file per process."""
        return self.workdir / "logs"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig."""
        return self.workdir / "kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        """The kubeconfig a component talks to the apiserver with."""
        return self.pki / f"{component}.kubeconfig"

    @property
    def kwok_home(self) -> Path:
        """kwok's HOME (it keeps a cache there)."""
        return self.workdir / "kwok"


@dataclass(frozen=True)
class Component:
    """One process of a cluster: how to run it and how to tell it is up."""

    name: str
    """Its name, also its log's (``logs/<name>.log``)."""
    argv: tuple[str, ...]
    """The command line."""
    health: str
    """The URL that answers 200 once it serves."""


IDENTITIES = {
    "admin": ("admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", ""),
    "kube-scheduler": ("system:kube-scheduler", ""),
    "kwok": ("kwok", "system:masters"),
}
"""Who each token is (user, groups): the components get the identities the built-in RBAC roles
bind; kwok edits node and pod status and leases, so it is a cluster admin like kwokctl's."""


def plan_components(
    *,
    name: str,
    host: str,
    ports: ClusterPorts,
    layout: ClusterLayout,
    binaries: KubeBinaries,
) -> tuple[Component, ...]:
    """The cluster's processes in start order, every listener on ``host``."""
    https = f"https://{host}"
    etcd_client = f"http://{host}:{ports.etcd_client}"
    etcd_peer = f"http://{host}:{ports.etcd_peer}"
    tls = (f"--tls-cert-file={layout.serving_cert}", f"--tls-private-key-file={layout.serving_key}")

    def delegated(component: str) -> tuple[str, ...]:
        config = layout.component_kubeconfig(component)
        return (
            f"--kubeconfig={config}",
            f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}",
            # The apiserver has no front proxy, so there is no request-header CA to look up.
            "--authentication-skip-lookup=true",
            f"--bind-address={host}",
            "--leader-elect=false",  # one of each; and electing would exit when the API is down
            *tls,
        )

    etcd = Component(
        name="etcd",
        argv=(
            str(binaries.etcd),
            f"--name={name}",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_client}",
            f"--advertise-client-urls={etcd_client}",
            f"--listen-peer-urls={etcd_peer}",
            f"--initial-advertise-peer-urls={etcd_peer}",
            f"--initial-cluster={name}={etcd_peer}",
            f"--initial-cluster-token={name}",
            # Test data: a crash of the machine may lose it, a crash of etcd does not.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ),
        health=f"{etcd_client}/health",
    )
    apiserver = Component(
        name="kube-apiserver",
        argv=(
            str(binaries.kube_apiserver),
            f"--etcd-servers={etcd_client}",
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={ports.apiserver}",
            *tls,
            f"--client-ca-file={layout.ca_cert}",
            f"--token-auth-file={layout.tokens}",
            # A request without credentials is refused (401), not served as system:anonymous.
            "--anonymous-auth=false",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={https}:{ports.apiserver}",
            f"--service-account-key-file={layout.sa_pub}",
            f"--service-account-signing-key-file={layout.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The `kubernetes` Service's endpoints would be the loopback address, which the API
            # refuses; nothing in the cluster needs them.
            "--endpoint-reconciler-type=none",
            f"--kubelet-certificate-authority={layout.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--cert-dir={layout.pki}",
            "--allow-privileged=true",
            "--profiling=false",
        ),
        health=f"{https}:{ports.apiserver}/readyz",
    )
    controller_manager = Component(
        name="kube-controller-manager",
        argv=(
            str(binaries.kube_controller_manager),
            *delegated("kube-controller-manager"),
            f"--secure-port={ports.controller_manager}",
            f"--cluster-name={name}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={layout.sa_key}",
            f"--root-ca-file={layout.ca_cert}",
            f"--cluster-signing-cert-file={layout.ca_cert}",
            f"--cluster-signing-key-file={layout.ca_key}",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--profiling=false",
        ),
        health=f"{https}:{ports.controller_manager}/healthz",
    )
    scheduler = Component(
        name="kube-scheduler",
        argv=(
            str(binaries.kube_scheduler),
            *delegated("kube-scheduler"),
            f"--secure-port={ports.scheduler}",
            "--profiling=false",
        ),
        health=f"{https}:{ports.scheduler}/healthz",
    )
    kwok = Component(
        name="kwok",
        argv=(
            str(binaries.kwok),
            f"--kubeconfig={layout.component_kubeconfig('kwok')}",
            f"--config={binaries.kwok_stages}",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            f"--server-address={host}:{ports.kwok}",
            f"--node-ip={host}",
            f"--node-port={ports.kwok}",
            f"--cidr={POD_CIDR}",
            *tls,
        ),
        health=f"{https}:{ports.kwok}/healthz",
    )
    return (etcd, apiserver, controller_manager, scheduler, kwok)


def node_manifest(index: int) -> dict[str, Any]:
    """A fake node for kwok: a roomy amd64 Linux machine, ``kwok-node-<index>``."""
    name = f"kwok-node-{index}"
    resources = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                NODE_LABEL: "true",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {"allocatable": resources, "capacity": resources},
    }


def ready_nodes(node_list: dict[str, Any]) -> list[str]:
    """Names of the nodes of a NodeList whose Ready condition is True."""
    names = []
    for node in node_list.get("items", []):
        conditions = node.get("status", {}).get("conditions", [])
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            names.append(node["metadata"]["name"])
    return sorted(names)


def kubeconfig_document(
    *, name: str, server: str, ca_pem: bytes, user: str, token: str
) -> dict[str, Any]:
    """A kubeconfig with one cluster, one user and one context, all named after the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": f"{name}-{user}", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-{user}"}}],
        "current-context": name,
    }


def _pick_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``host`` now, none handed out before by this process."""
    chosen: list[int] = []
    rng = random.SystemRandom()
    while len(chosen) < count:
        port = rng.randrange(*_PORT_RANGE)
        if port in _ports_taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        _ports_taken.add(port)
        chosen.append(port)
    return chosen


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        command = " ".join(["openssl", *args])
        raise KubeClusterError(f"`{command}` failed: {done.stderr.strip()}")


def make_pki(layout: ClusterLayout, *, name: str, host: str) -> None:
    """Create the cluster's CA, serving certificate and service-account key, unless present.

    ECDSA P-256 throughout: fast to make, and what Kubernetes accepts everywhere. The serving
    certificate names the loopback host, ``localhost`` and the in-cluster names.
    """
    if shutil.which("openssl") is None:
        raise KubeClusterError("openssl is not installed: apt-get install openssl")
    pki = layout.pki
    pki.mkdir(parents=True, exist_ok=True)
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    if not (layout.ca_cert.is_file() and layout.ca_key.is_file()):
        _openssl(
            "req", "-x509", *curve, "-days", "3650", "-subj", f"/CN={name}-ca",
            "-keyout", str(layout.ca_key), "-out", str(layout.ca_cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
    if not (layout.serving_cert.is_file() and layout.serving_key.is_file()):
        csr = pki / "serving.csr"
        _openssl(
            "req", *curve, "-subj", f"/CN={name}-apiserver",
            "-keyout", str(layout.serving_key), "-out", str(csr),
        )  # fmt: skip
        names = [f"IP:{host}", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default"]
        names.append("DNS:kubernetes.default.svc")
        extensions = pki / "serving.ext"
        extensions.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
            f"subjectAltName={','.join(names)}\n"
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(layout.ca_cert),
            "-CAkey", str(layout.ca_key), "-CAcreateserial", "-days", "3650",
            "-extfile", str(extensions), "-out", str(layout.serving_cert),
        )  # fmt: skip
    if not (layout.sa_key.is_file() and layout.sa_pub.is_file()):
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(layout.sa_key),
        )  # fmt: skip
        _openssl("pkey", "-in", str(layout.sa_key), "-pubout", "-out", str(layout.sa_pub))
    for key in (layout.ca_key, layout.serving_key, layout.sa_key):
        key.chmod(0o600)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class KubeCluster:
    """One Kubernetes control plane with kwok nodes, on loopback, for tests.

    ``start()`` brings it up and returns when the API is ready and ``nodes`` nodes are Ready;
    ``stop()`` ends every process. Certificates, tokens, ports and etcd's data survive a stop, so
    a cluster started again is the same cluster.
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        binaries: KubeBinaries,
        *,
        nodes: int = 3,
        host: str = "127.0.0.1",
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(
                f"cluster name {name!r}: use 1-40 lowercase letters, digits and '-' "
                "(it names the kubeconfig context and etcd's member)"
            )
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback or ":" in host:
            raise ValueError(f"host {host!r}: a test cluster binds an IPv4 loopback address only")
        if nodes < 0:
            raise ValueError(f"nodes={nodes}: must be 0 or more")
        self.workdir = workdir
        """The cluster's directory (pki, etcd data, logs, kubeconfig)."""
        self.name = name
        """The cluster's name, and its kubeconfig context's."""
        self.binaries = binaries
        """The programs it runs."""
        self.nodes = nodes
        """How many kwok nodes it has."""
        self.host = host
        """The loopback address every process listens on."""
        self.layout = ClusterLayout(workdir)
        """Where its files are."""
        self.ports = ClusterPorts(*_pick_ports(host, 6))
        """Where it listens."""
        self.server = f"https://{host}:{self.ports.apiserver}"
        """The API's URL."""
        self.kubeconfig = self.layout.kubeconfig
        """The admin's kubeconfig, written by ``start()``."""
        self.token = secrets.token_urlsafe(24)
        """A bearer token of a cluster admin (group ``system:masters``)."""
        self._tokens = {who: secrets.token_urlsafe(24) for who in IDENTITIES}
        self._tokens["admin"] = self.token
        self._components = {
            c.name: c
            for c in plan_components(
                name=name, host=host, ports=self.ports, layout=self.layout, binaries=binaries
            )
        }
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"KubeCluster({self.name!r}, server={self.server!r}, workdir={self.workdir})"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, timeout: float = 120.0) -> None:
        """Start etcd, the apiserver, the controller-manager, the scheduler and kwok; create
        the nodes; return once the API is ready and every node is Ready.

        What already runs is left running, so calling it again only restarts what is missing.
        On failure everything started is stopped and KubeClusterError names the process and
        shows the end of its log.
        """
        deadline = time.monotonic() + timeout
        try:
            self._prepare()
            self._launch("etcd")
            self._wait_healthy("etcd", deadline)
            self._launch("kube-apiserver")
            self._wait_healthy("kube-apiserver", deadline)
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                self._launch(name)
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                self._wait_healthy(name, deadline)
            with self._api() as api:
                self._create_nodes(api)
                self._wait(
                    lambda: len(self._ready_nodes(api)) >= self.nodes,
                    deadline,
                    f"{self.nodes} Ready kwok nodes",
                )
                # Pods need their namespace's default service account, which the
                # controller-manager makes: the sign that it works, not just that it listens.
                self._wait(
                    lambda: (
                        api.get("/api/v1/namespaces/default/serviceaccounts/default").status_code
                        == 200
                    ),
                    deadline,
                    "the default service account",
                )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End every process of the cluster (kwok first, etcd last); nothing is left running."""
        for name in reversed(list(self._components)):
            self._terminate(name)

    def stop_apiserver(self) -> None:
        """End the apiserver alone: the API is unreachable when this returns (etcd, the
        controllers and kwok keep running, and reconnect when ``start_apiserver`` is called)."""
        self._terminate("kube-apiserver")

    def start_apiserver(self, *, timeout: float = 60.0) -> None:
        """Start the apiserver again on the same port and wait until it is ready."""
        self._launch("kube-apiserver")
        self._wait_healthy("kube-apiserver", time.monotonic() + timeout)

    @contextlib.contextmanager
    def running(self) -> Iterator[KubeCluster]:
        """The cluster started for the ``with`` block, stopped after it whatever happens."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def pids(self) -> dict[str, int]:
        """Process ids of the running processes, by name."""
        return {name: p.pid for name, p in self._processes.items() if p.poll() is None}

    def api(self) -> httpx.Client:
        """An HTTP client of the API as the admin (the caller closes it)."""
        context = ssl.create_default_context(cafile=str(self.layout.ca_cert))
        return httpx.Client(
            base_url=self.server,
            verify=context,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10.0,
            trust_env=False,  # loopback: never through a proxy from the environment
        )

    # -- internals -----------------------------------------------------------------------------

    def _prepare(self) -> None:
        layout = self.layout
        for directory in (layout.workdir, layout.logs, layout.kwok_home):
            directory.mkdir(parents=True, exist_ok=True)
        make_pki(layout, name=self.name, host=self.host)
        rows = [
            f'{self._tokens[who]},{user},{user},"{groups}"'
            for who, (user, groups) in IDENTITIES.items()
        ]
        _write_private(layout.tokens, "\n".join(rows) + "\n")
        ca_pem = layout.ca_cert.read_bytes()
        for who in IDENTITIES:
            document = kubeconfig_document(
                name=self.name, server=self.server, ca_pem=ca_pem, user=who, token=self._tokens[who]
            )
            path = layout.kubeconfig if who == "admin" else layout.component_kubeconfig(who)
            # JSON is YAML: every client reads it.
            _write_private(path, json.dumps(document, indent=2) + "\n")

    def _launch(self, name: str) -> None:
        if self._alive(name):
            return
        component = self._components[name]
        environment = dict(os.environ)
        if name == "kwok":
            environment["HOME"] = str(self.layout.kwok_home)
        log = (self.layout.logs / f"{name}.log").open("ab")
        try:
            self._processes[name] = subprocess.Popen(
                component.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=environment,
                start_new_session=True,
            )
        finally:
            log.close()

    def _alive(self, name: str) -> bool:
        process = self._processes.get(name)
        return process is not None and process.poll() is None

    def _terminate(self, name: str) -> None:
        # The apiserver stops listening at once on SIGTERM but then waits for its clients' open
        # watches; it keeps no state of its own, so it gets less time than etcd.
        grace = 3.0 if name == "kube-apiserver" else 10.0
        process = self._processes.pop(name, None)
        if process is None:
            return
        # Each process leads its own session: signal the whole group, so no child outlives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def _check_running(self, name: str) -> None:
        process = self._processes.get(name)
        if process is None or process.poll() is None:
            return
        log = self.layout.logs / f"{name}.log"
        raise KubeClusterError(
            f"{name} of cluster {self.name} exited with code {process.returncode} while "
            f"starting; end of {log}:\n{_tail(log)}"
        )

    def _wait(self, check: Callable[[], bool], deadline: float, what: str) -> None:
        last: Exception | None = None
        while True:
            for name in self._processes:
                self._check_running(name)
            try:
                if check():
                    return
            except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise KubeClusterError(
                    f"cluster {self.name}: no {what} in time"
                    + (f" (last error: {last})" if last else "")
                    + f"; logs in {self.layout.logs}"
                )
            time.sleep(0.2)

    def _wait_healthy(self, name: str, deadline: float) -> None:
        url = self._components[name].health
        context = ssl.create_default_context(cafile=str(self.layout.ca_cert))
        headers = {"Authorization": f"Bearer {self.token}"} if name == "kube-apiserver" else {}
        with httpx.Client(verify=context, headers=headers, timeout=5.0, trust_env=False) as client:

            def healthy() -> bool:
                response = client.get(url)
                if name == "etcd":
                    return response.status_code == 200 and response.json().get("health") == "true"
                return response.status_code == 200

            try:
                self._wait(healthy, deadline, f"healthy {name} at {url}")
            except KubeClusterError as exc:
                log = self.layout.logs / f"{name}.log"
                raise KubeClusterError(f"{exc}\nend of {log}:\n{_tail(log)}") from None

    @contextlib.contextmanager
    def _api(self) -> Iterator[httpx.Client]:
        client = self.api()
        try:
            yield client
        finally:
            client.close()

    def _create_nodes(self, api: httpx.Client) -> None:
        for index in range(1, self.nodes + 1):
            response = api.post("/api/v1/nodes", json=node_manifest(index))
            if response.status_code not in (201, 409):  # 409: there from an earlier start
                raise KubeClusterError(
                    f"cluster {self.name}: creating node {index} answered "
                    f"{response.status_code}: {response.text}"
                )

    def _ready_nodes(self, api: httpx.Client) -> list[str]:
        response = api.get("/api/v1/nodes", params={"labelSelector": f"{NODE_LABEL}=true"})
        response.raise_for_status()
        return ready_nodes(response.json())


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


@contextlib.contextmanager
def guard_cluster_range() -> Iterator[bool]:
    """While open, packets to the test clusters' pod and service addresses go nowhere.

    kwok's pods have addresses (``POD_CIDR``) but nothing serves there; an agent's ingress that
    proxies a request to one would send it out of this machine by the default route. An
    ``unreachable`` route for ``CLUSTER_RANGE`` makes such a connection fail at once, here.
    Needs root; yields False (and changes nothing) without it. The route is removed on exit if
    this call added it.
    """
    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield False
        return
    shown = subprocess.run(
        ["ip", "route", "show", CLUSTER_RANGE], capture_output=True, text=True, check=False
    )
    if "unreachable" in shown.stdout:
        yield True  # already there (another run): leave it as found
        return
    added = subprocess.run(
        ["ip", "route", "add", "unreachable", CLUSTER_RANGE],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        yield added.returncode == 0
    finally:
        if added.returncode == 0:
            subprocess.run(
                ["ip", "route", "del", "unreachable", CLUSTER_RANGE],
                capture_output=True,
                check=False,
            )
