"""The process driver: every replica is a local OS process that the agent supervises.

Layout of ``state_dir/replicas/<replica id>/``:

``replica.json``
    The record of the replica (pid, /proc start time, boot id, port, spec hash, restarts, ...),
    written atomically. It is what a restarted agent adopts.
``successor.json``
    The record of a surge successor while a replica is being replaced (see below).
``stopping-<pid>.json``
    A process being stopped; kept until the process is gone, so that an agent killed during a
    stop finishes the stop after its restart instead of leaking the process.
``replica.log``
    stdout and stderr of every run of the replica, plus one-line notes from the agent (start,
    exit, restart, stop). Kept when the replica is removed.

Adoption: replicas run in their own session, so they outlive the agent. ``start()`` reads the
records; a process that is alive with the recorded /proc start time and boot id is adopted as it
is (not restarted, restarts unchanged); a dead one is restarted with the usual backoff. Until the
first ``converge`` the records are the desired state, so a site that restarts while the hub is
unreachable keeps running what it ran.

Replacement, when an app's workload or resources change (the spec hash differs), is rolling, one
replica of an app at a time:

* surge (the usual case): the successor starts on another port while the old replica serves;
  once the successor is ready the old one is stopped. The replica's ``ReplicaState`` shows the
  serving process until then, so routing switches ports in one step;
* in place (stop, then start) when the successor needs the old replica's port (a fixed
  ``workload.port``), or when the old replica is not ready anyway (nothing to keep serving);
  the new process starts once the old one has released the port.

The next replica is replaced only when every replica of the app that runs the new spec is
ready, so a new spec that never gets ready stalls the rollout instead of taking the app down.

Decisions (``plan``, ``backoff_delay``, ``probe_verdict``) are pure functions; the class below
applies them with processes, files and HTTP probes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgefleet.files import write_atomic
from edgefleet.model import AppAssignment, ProcessWorkload, ReplicaState
from edgefleet.model.objects import Workload
from edgefleet.ports import port_free

log = logging.getLogger(__name__)

STARTING = "starting"
"""The process runs and has not passed a health check since it started."""
RUNNING = "running"
"""The process runs and has passed a health check since it started."""
BACKOFF = "backoff"
"""The process exited (or failed liveness) and waits for its restart."""
STOPPED = "stopped"
"""The process is being stopped because the replica was removed."""

BACKOFF_BASE = 1.0
"""Seconds before the first restart after a crash; doubled for each further crash."""
BACKOFF_MAX = 30.0
"""Longest wait before a restart."""
BACKOFF_RESET_AFTER = 60.0
"""Seconds of running after which earlier crashes no longer lengthen the backoff."""
LIVENESS_FAILURES = 3
"""Consecutive failed probes after which a replica that was ready is restarted."""

_RECORD_VERSION = 1
_PROBE_THREAD = "edgefleet-probe"
_CURRENT = "current"
_SUCCESSOR = "successor"
_STOPPING_RECORD = re.compile(r"^stopping-(\d+)\.json$")


# ---------------------------------------------------------------------------------------------
# Pure decisions


def replica_id(tenant: str, app: str, index: int) -> str:
    """The replica's id at the site: ``tenant-app-index``."""
    return f"{tenant}-{app}-{index}"


def spec_hash(assignment: AppAssignment) -> str:
    """A short digest of what a replica runs (workload and resources); a change means replace."""
    spec = {
        "workload": assignment.workload.model_dump(mode="json"),
        "resources": assignment.resources.model_dump(mode="json"),
    }
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fixed_port(workload: Workload, index: int) -> int | None:
    """The port replica ``index`` must use, or None when the driver picks one."""
    if not isinstance(workload, ProcessWorkload) or workload.port is None:
        return None
    return workload.port + index


def backoff_delay(restarts_in_a_row: int) -> float:
    """Seconds to wait before restarting a replica restarted ``restarts_in_a_row`` times already.

    1 s, 2 s, 4 s, ... up to 30 s; the count goes back to 0 after 60 s of running.
    """
    # Clamp the exponent: beyond it the cap applies anyway, and 2.0**n overflows for huge n.
    exponent = min(max(restarts_in_a_row, 0), 16)
    return min(BACKOFF_MAX, BACKOFF_BASE * 2.0**exponent)


@dataclass(frozen=True)
class ProbeVerdict:
    """What one health probe means for a replica."""

    ready: bool
    """The replica may receive traffic."""
    failures: int
    """Consecutive failed probes, this one included."""
    restart: bool
    """Liveness failed: kill the process and restart it."""


def probe_verdict(*, ok: bool, has_been_ready: bool, failures: int) -> ProbeVerdict:
    """Readiness and liveness after a probe; ``failures`` counts the failures before this one.

    Ready is the last probe's answer. A replica that was ready since it started and then fails
    ``LIVENESS_FAILURES`` probes in a row is restarted; one that never got ready is left alone
    (it may be slow to start).
    """
    if ok:
        return ProbeVerdict(ready=True, failures=0, restart=False)
    failures += 1
    return ProbeVerdict(
        ready=False,
        failures=failures,
        restart=has_been_ready and failures >= LIVENESS_FAILURES,
    )


@dataclass(frozen=True)
class ReplicaRef:
    """One replica slot: an app (``tenant/app``) and an index."""

    key: str
    """App key, ``tenant/app``."""
    index: int
    """Index among the app's replicas at the site."""


@dataclass(frozen=True)
class ReplicaView:
    """What ``plan`` needs to know about a running replica slot."""

    spec_hash: str
    """Spec hash of the serving replica."""
    ready: bool
    """The serving replica passed its last health check."""
    port: int | None = None
    """Port of the serving replica."""
    successor_hash: str | None = None
    """Spec hash of a surge successor being started, if any."""


@dataclass(frozen=True)
class Replacement:
    """Replace a replica with one running the desired spec."""

    ref: ReplicaRef
    """The slot."""
    surge: bool
    """Start the successor beside the old replica (True) or stop the old one first (False)."""


@dataclass(frozen=True)
class Plan:
    """What to change so that the running replicas match the desired ones."""

    start: tuple[ReplicaRef, ...] = ()
    """Missing slots to create."""
    stop: tuple[ReplicaRef, ...] = ()
    """Slots to remove (surplus indices, highest first, and apps no longer desired)."""
    replace: tuple[Replacement, ...] = ()
    """Slots whose spec changed, to replace now."""
    cancel: tuple[ReplicaRef, ...] = ()
    """Slots whose surge successor runs an outdated spec: stop the successor."""

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (self.start or self.stop or self.replace or self.cancel)


def plan(
    desired: Sequence[AppAssignment], running: Mapping[str, Mapping[int, ReplicaView]]
) -> Plan:
    """Compare desired assignments with the running slots; see the module docstring for rules."""
    wanted = {assignment.key: assignment for assignment in desired}
    start: list[ReplicaRef] = []
    stop: list[ReplicaRef] = []
    replace: list[Replacement] = []
    cancel: list[ReplicaRef] = []

    for key in sorted(running):
        assignment = wanted.get(key)
        count = assignment.replicas if assignment is not None else 0
        stop.extend(ReplicaRef(key, i) for i in sorted(running[key], reverse=True) if i >= count)

    for key, assignment in wanted.items():
        slots = running.get(key, {})
        want_hash = spec_hash(assignment)
        kept = {i: view for i, view in slots.items() if i < assignment.replicas}
        missing = [i for i in range(assignment.replicas) if i not in slots]
        start.extend(ReplicaRef(key, i) for i in missing)

        # Replicas of the new spec that are not ready yet: the rollout waits for them.
        in_flight = len(missing)
        stale_ready: list[int] = []
        stale_unready: list[int] = []
        for i, view in sorted(kept.items()):
            successor = view.successor_hash
            if successor is not None and successor != want_hash:
                cancel.append(ReplicaRef(key, i))
                successor = None
            if successor is not None:
                in_flight += 1
            elif view.spec_hash == want_hash:
                in_flight += 0 if view.ready else 1
            elif view.ready:
                stale_ready.append(i)
            else:
                stale_unready.append(i)

        stale = stale_ready + stale_unready
        if not stale:
            continue
        ports = {i: fixed_port(assignment.workload, i) for i in range(assignment.replicas)}
        # A fixed port that another slot's old process holds (the base port changed) can only
        # be had by replacing all stale replicas at once; one at a time would deadlock.
        crossing = any(
            ports[i] is not None and ports[i] == kept[j].port and i != j
            for i in range(assignment.replicas)
            for j in stale
        )
        if crossing:
            replace.extend(Replacement(ReplicaRef(key, i), surge=False) for i in sorted(stale))
            continue
        # An unready old replica serves nobody: replace it at once, in place.
        replace.extend(Replacement(ReplicaRef(key, i), surge=False) for i in stale_unready)
        if stale_ready and in_flight == 0:
            i = stale_ready[0]
            surge = ports[i] is None or ports[i] != kept[i].port
            replace.append(Replacement(ReplicaRef(key, i), surge=surge))

    return Plan(start=tuple(start), stop=tuple(stop), replace=tuple(replace), cancel=tuple(cancel))


# ---------------------------------------------------------------------------------------------
# Processes, /proc and files


def proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks after boot, field 22) of a process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _reap(pid: int, start_ticks: int | None) -> tuple[bool, int | None]:
    """Whether the process is gone, and its exit code if it was our child and just exited.

    A recorded pid may have been reused: the /proc start time tells the processes apart.
    Children of this process are reaped here (waitpid), so they do not linger as zombies;
    others (adopted from an earlier agent) are reaped by init.
    """
    stat = proc_stat(pid)
    if stat is None or start_ticks is None or stat[1] != start_ticks:
        return True, None
    if stat[0] not in ("Z", "X"):
        return False, None
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True, None
    return True, (os.waitstatus_to_exitcode(status) if reaped == pid else None)


def _signal_group(pid: int, start_ticks: int | None, sig: signal.Signals) -> None:
    """Send ``sig`` to the replica's process group, if its leader is still the same process."""
    # Checked first: after PID reuse the group id could name somebody else's processes.
    gone, _ = _reap(pid, start_ticks)
    if gone:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _boot_id() -> str:
    """Identifies this boot: pids and start times from another boot mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a record atomically (tmp file, fsync, rename): a reader sees old or new, whole."""
    # 0600: the record holds the workload's environment, which may carry secrets.
    write_atomic(
        path, json.dumps(data, indent=2, sort_keys=True).encode(), mode=0o600, durable=False
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    """A record, or None (with a warning) when it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable replica record %s: %s", path, error)
        return None
    if not isinstance(data, dict):
        log.warning("ignoring replica record %s: not a JSON object", path)
        return None
    return data


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a file, read from the end (logs grow large)."""
    if lines <= 0:
        return ""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return ""
    with file:
        position = file.seek(0, os.SEEK_END)
        data = b""
        while position > 0 and data.count(b"\n") <= lines:
            step = min(65536, position)
            position -= step
            file.seek(position)
            data = file.read(step) + data
    text = b"".join(data.splitlines(keepends=True)[-lines:]).decode("utf-8", "replace")
    return text if not text or text.endswith("\n") else text + "\n"


PROBE_BODY_MAX = 64 * 1024
"""Bytes of a health answer read (the rest is dropped with the connection)."""


def probe_health(host: str, port: int, path: str, timeout: float) -> bool:
    """``GET path`` on a new connection, as kubelet probes (a kept-alive connection to a dead
    process would fail the probe, not the process): True on a 2xx answer within ``timeout``
    seconds for the connection and as much for each read."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        # The answer is read before closing, and the replica told not to wait for another
        # request: a socket closed with unread data resets the connection under the replica.
        connection.request("GET", path, headers={"Connection": "close"})
        answer = connection.getresponse()
        answer.read(PROBE_BODY_MAX)
        return 200 <= answer.status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with status {code}"


# ---------------------------------------------------------------------------------------------
# Driver state


@dataclass(eq=False)
class _Replica:
    """One replica slot's process across its restarts (or a surge successor); under the lock."""

    tenant: str
    app: str
    index: int
    generation: int
    spec_hash: str
    workload: ProcessWorkload
    port: int | None
    role: str = _CURRENT
    pid: int | None = None
    start_ticks: int | None = None
    started_at: datetime | None = None
    started_mono: float | None = None
    state: str = STARTING
    ready: bool = False
    has_been_ready: bool = False
    failures: int = 0
    restarts: int = 0
    restarts_in_a_row: int = 0
    next_start: float | None = None
    """When ``pid`` is None: when to spawn (again)."""
    restart_pending: bool = False
    """The next spawn is a restart and counts in ``restarts``."""

    @property
    def id(self) -> str:
        return replica_id(self.tenant, self.app, self.index)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.app}"

    @property
    def record_name(self) -> str:
        return "replica.json" if self.role == _CURRENT else "successor.json"


@dataclass(eq=False)
class _Slot:
    current: _Replica
    successor: _Replica | None = None


@dataclass(eq=False)
class _Stopping:
    """A process on its way out: SIGTERM sent, SIGKILL at ``deadline``."""

    tenant: str
    app: str
    index: int
    port: int | None
    pid: int
    start_ticks: int | None
    deadline: float
    record: Path
    killed: bool = False

    @property
    def id(self) -> str:
        return replica_id(self.tenant, self.app, self.index)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.app}"


_Fingerprint = tuple[tuple[str, str, str, bool, int | None, int | None, int, int], ...]


class ProcessDriver:
    """Runs replicas as local processes bound to the site address; see the module docstring."""

    def __init__(
        self,
        site: str,
        state_dir: Path,
        host: str,
        *,
        port_range: tuple[int, int] = (20000, 29999),
        probe_interval: float = 1.0,
        startup_probe_interval: float = 0.05,
        probe_timeout: float = 1.0,
        stop_grace: float = 5.0,
        extra_path: Sequence[str] = (),
    ) -> None:
        """Prepare a driver; nothing runs until ``start``.

        A replica that has never been ready is probed every ``startup_probe_interval`` seconds
        instead of every ``probe_interval``: a request held for a cold start waits for that
        probe, so it must come soon after the replica listens.

        ``host`` is the site address replicas bind (env ``HOST``) and are probed on; ports come
        from ``port_range`` unless the workload fixes one. ``extra_path`` goes first on the
        replicas' PATH, then the agent's own bin directory, then the agent's PATH.
        """
        if not 0 < port_range[0] <= port_range[1] <= 65535:
            raise ValueError(f"port_range {port_range} must be (low, high) within 1..65535")
        if probe_interval <= 0 or startup_probe_interval <= 0 or probe_timeout <= 0:
            raise ValueError("probe intervals and probe_timeout must be > 0")
        if stop_grace < 0:
            raise ValueError("stop_grace must be >= 0")
        self.site = site
        self.state_dir = Path(state_dir)
        self.host = host
        self._port_range = port_range
        self._probe_interval = probe_interval
        self._startup_probe_interval = min(startup_probe_interval, probe_interval)
        self._next_startup_probe = 0.0
        self._probe_timeout = probe_timeout
        self._stop_grace = stop_grace
        self._extra_path = list(extra_path)
        self._boot_id = _boot_id()

        self._lock = threading.Lock()
        self._slots: dict[str, dict[int, _Slot]] = {}
        self._stopping: list[_Stopping] = []
        self._desired: dict[str, AppAssignment] | None = None
        self._adopted = False
        self._closed = False
        self._next_probe = 0.0

        self._on_change: Callable[[], None] = lambda: None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._last_fingerprint: _Fingerprint | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def replicas_dir(self) -> Path:
        """Where replica records and logs live."""
        return self.state_dir / "replicas"

    # -- Driver protocol ----------------------------------------------------------------------

    def start(self, on_change: Callable[[], None]) -> None:
        """Adopt the replicas the records describe and start the supervisor thread."""
        with self._lock:
            if self._thread is not None or self._closed:
                raise RuntimeError("ProcessDriver.start() may be called once, before close()")
            self._on_change = on_change
            self._adopt_locked()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=16, thread_name_prefix=f"{_PROBE_THREAD}-{self.site}"
        )
        self._thread = threading.Thread(
            target=self._run, name=f"process-driver-{self.site}", daemon=True
        )
        self._thread.start()

    def converge(self, assignments: Sequence[AppAssignment]) -> None:
        """Start, stop and replace replicas to match ``assignments``; returns without waiting.

        Assignments whose workload is not a process are dropped with a warning (this driver
        cannot run them), as is an app whose replica ids would clash with another's.
        """
        desired = self._accept(assignments)
        with self._lock:
            if self._closed:
                raise RuntimeError("ProcessDriver is closed")
            self._adopt_locked()
            self._desired = desired
            now = time.monotonic()
            self._converge_locked(now)
            self._start_due(now)  # restarts already due, e.g. replicas that went with a reboot
        self._wake.set()

    def observe(self) -> dict[str, list[ReplicaState]]:
        """Replicas per ``tenant/app``, by index; a surge successor shows once it is promoted."""
        with self._lock:
            return {
                key: [ReplicaState(**fields) for fields in states]
                for key, states in self._observe_locked().items()
            }

    def problem(self) -> str | None:
        """None: processes start as long as the agent runs."""
        return None

    def logs(self, tenant: str, app: str, *, replica: str | None = None, tail: int = 100) -> str:
        """The last ``tail`` lines of each replica's log, each headed by ``==> <id> <==``.

        Without ``replica``: the app's current replicas, or, for an app that no longer runs
        here, every replica log left on disk. Raises LookupError for an unknown replica.
        """
        pattern = re.compile(rf"^{re.escape(tenant)}-{re.escape(app)}-(\d+)$")
        if replica is not None:
            # The id comes from a request: a path separator or '..' must not escape the dir.
            safe = "/" not in replica and replica not in (".", "..")
            if not safe or not pattern.match(replica) or not (self.replicas_dir / replica).is_dir():
                raise LookupError(
                    f"no replica {replica!r} of {tenant}/{app} at site {self.site}: "
                    "see the replica ids in the app's status"
                )
            ids = [replica]
        else:
            with self._lock:
                states = self._observe_locked().get(f"{tenant}/{app}", [])
            ids = [str(state["id"]) for state in states]
            if not ids and self.replicas_dir.is_dir():
                found = [
                    (int(match.group(1)), entry.name)
                    for entry in self.replicas_dir.iterdir()
                    if (match := pattern.match(entry.name))
                ]
                ids = [name for _, name in sorted(found)]
        blocks = [
            f"==> {rid} <==\n{_tail(self.replicas_dir / rid / 'replica.log', tail)}" for rid in ids
        ]
        return "\n".join(blocks)

    def close(self) -> None:
        """Stop the supervisor thread; the replicas keep running (the next agent adopts them)."""
        with self._lock:
            self._closed = True
        self._closing.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def stop_all(self) -> None:
        """Stop every replica (SIGTERM, SIGKILL after the grace period) and wait for them.

        The supervisor is stopped first so that it restarts nothing meanwhile. Works on a driver
        that was never started too: it then stops what the records describe.
        """
        self.close()
        with self._lock:
            self._adopt_locked()
            self._desired = {}
            now = time.monotonic()
            for slots in self._slots.values():
                for slot in slots.values():
                    self._retire(slot.current, now)
                    if slot.successor is not None:
                        self._retire(slot.successor, now)
            self._slots.clear()
        # SIGKILL comes at the grace deadline; allow a little more for the kernel to finish.
        give_up = time.monotonic() + self._stop_grace + 5.0
        while True:
            with self._lock:
                self._advance_stopping(time.monotonic())
                left = [entry.pid for entry in self._stopping]
            if not left or time.monotonic() > give_up:
                break
            time.sleep(0.02)
        if left:
            log.warning("site %s: processes %s did not exit after SIGKILL", self.site, left)

    # -- Supervisor ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing.is_set():
            # Cleared before the tick, so a converge() during the tick wakes the next one.
            self._wake.clear()
            try:
                self._tick()
            except Exception:
                log.exception("site %s: process driver supervisor tick failed", self.site)
            with self._lock:
                timeout = self._sleep_time(time.monotonic())
            self._wake.wait(timeout)

    def _tick(self) -> None:
        """One supervision round: probe if due, then apply exits, probes, stops and the plan."""
        targets: list[tuple[_Replica, int, tuple[int, str]]] = []
        with self._lock:
            now = time.monotonic()
            everyone = now >= self._next_probe
            if everyone:
                self._next_probe = now + self._probe_interval
            if everyone or now >= self._next_startup_probe:
                self._next_startup_probe = now + self._startup_probe_interval
                targets = [
                    (replica, replica.pid, (replica.port, replica.workload.health_path))
                    for replica in self._replicas()
                    if replica.pid is not None
                    and replica.port is not None
                    and (everyone or not replica.has_been_ready)
                ]
        # Probes run without the lock: converge() and observe() must not wait for slow replicas.
        results = self._probe_all([health for _, _, health in targets])
        if self._closing.is_set():
            return  # close() came first: act on nothing more, the replicas stay as they are
        with self._lock:
            now = time.monotonic()
            for replica in list(self._replicas()):
                self._check_exit(replica, now)
            for (replica, pid, _), ok in zip(targets, results, strict=True):
                if self._tracked(replica) and replica.pid == pid:
                    self._apply_probe(replica, ok, now)
            self._advance_stopping(now)
            self._start_due(now)
            self._promote_ready_successors(now)
            self._converge_locked(now)
            fingerprint = self._fingerprint_locked()
        if fingerprint != self._last_fingerprint:
            self._last_fingerprint = fingerprint
            try:
                self._on_change()
            except Exception:
                log.exception("site %s: on_change callback failed", self.site)

    def _probe_all(self, targets: list[tuple[int, str]]) -> list[bool]:
        """Probe each ``(port, health path)`` on the site address, in parallel."""
        if not targets or self._pool is None:
            return [False] * len(targets)
        return list(self._pool.map(self._probe, targets))

    def _probe(self, target: tuple[int, str]) -> bool:
        port, path = target
        return probe_health(self.host, port, path, self._probe_timeout)

    def _sleep_time(self, now: float) -> float:
        """Until the next probe round, restart or kill deadline; short while stops are pending."""
        wake_at = [self._next_probe]
        for replica in self._replicas():
            if replica.pid is None and replica.next_start is not None:
                wake_at.append(max(replica.next_start, now + 0.05))
            elif replica.pid is not None and not replica.has_been_ready:
                wake_at.append(self._next_startup_probe)
        if self._stopping:
            # Exits are polled (non-children cannot be waited on); a fixed port may wait on one.
            wake_at.append(now + 0.05)
        return max(0.01, min(wake_at) - now)

    # -- State transitions (all under the lock) -----------------------------------------------

    def _replicas(self) -> Iterator[_Replica]:
        for slots in self._slots.values():
            for slot in slots.values():
                yield slot.current
                if slot.successor is not None:
                    yield slot.successor

    def _tracked(self, replica: _Replica) -> bool:
        slot = self._slots.get(replica.key, {}).get(replica.index)
        return slot is not None and (slot.current is replica or slot.successor is replica)

    def _check_exit(self, replica: _Replica, now: float) -> None:
        if replica.pid is None:
            return
        gone, code = _reap(replica.pid, replica.start_ticks)
        if gone:
            delay = self._schedule_restart(replica, now)
            self._note(replica.id, f"{_describe_exit(code)}; restarting in {delay:g} s")
        elif (
            replica.restarts_in_a_row
            and replica.started_mono is not None
            and now - replica.started_mono >= BACKOFF_RESET_AFTER
        ):
            replica.restarts_in_a_row = 0
            self._save(replica)

    def _apply_probe(self, replica: _Replica, ok: bool, now: float) -> None:
        verdict = probe_verdict(
            ok=ok, has_been_ready=replica.has_been_ready, failures=replica.failures
        )
        replica.ready = verdict.ready
        replica.failures = verdict.failures
        if verdict.ready and not replica.has_been_ready:
            replica.has_been_ready = True
            replica.state = RUNNING
            # Recorded, so that liveness applies to this process after an agent restart too.
            self._save(replica)
        if verdict.restart:
            self._begin_stop(replica, now)
            delay = self._schedule_restart(replica, now)
            self._note(
                replica.id,
                f"failed {verdict.failures} health checks in a row; restarting in {delay:g} s",
            )

    def _schedule_restart(self, replica: _Replica, now: float) -> float:
        delay = backoff_delay(replica.restarts_in_a_row)
        replica.pid = None
        replica.start_ticks = None
        replica.ready = False
        replica.failures = 0
        replica.state = BACKOFF
        replica.next_start = now + delay
        replica.restart_pending = True
        return delay

    def _start_due(self, now: float) -> None:
        for replica in list(self._replicas()):
            if replica.pid is None and replica.next_start is not None and now >= replica.next_start:
                self._spawn(replica, now)

    def _promote_ready_successors(self, now: float) -> None:
        for slots in self._slots.values():
            for slot in slots.values():
                successor = slot.successor
                if successor is None or not successor.ready:
                    continue
                old = slot.current
                # Order matters for a crash in between: stopping record first, then the new
                # replica.json, then the successor record goes (adoption sorts out each step).
                self._begin_stop(old, now)
                successor.role = _CURRENT
                slot.current, slot.successor = successor, None
                self._save(successor)
                self._unlink(successor.id, "successor.json")
                self._note(successor.id, f"replaced pid {old.pid} by ready pid {successor.pid}")

    def _converge_locked(self, now: float) -> None:
        """Apply the plan for the desired state (nothing before the first converge)."""
        if self._desired is None:
            return
        running = {
            key: {index: self._view(slot) for index, slot in slots.items()}
            for key, slots in self._slots.items()
        }
        todo = plan(list(self._desired.values()), running)
        for ref in todo.stop:
            slot = self._slots[ref.key].pop(ref.index)
            self._retire(slot.current, now)
            if slot.successor is not None:
                self._retire(slot.successor, now)
        for ref in todo.cancel:
            slot = self._slots[ref.key][ref.index]
            if slot.successor is not None:
                self._retire(slot.successor, now)
                slot.successor = None
        for ref in todo.start:
            replica = self._new_replica(self._desired[ref.key], ref.index, _CURRENT)
            self._slots.setdefault(ref.key, {})[ref.index] = _Slot(current=replica)
            self._spawn(replica, now)
        for replacement in todo.replace:
            ref = replacement.ref
            slot = self._slots[ref.key][ref.index]
            assignment = self._desired[ref.key]
            if replacement.surge:
                slot.successor = self._new_replica(assignment, ref.index, _SUCCESSOR)
                self._note(slot.current.id, "spec changed: starting a successor")
                self._spawn(slot.successor, now)
            else:
                self._note(slot.current.id, "spec changed: stopping to restart with the new spec")
                self._retire(slot.current, now)
                slot.current = self._new_replica(assignment, ref.index, _CURRENT)
                self._save(slot.current)
                self._spawn(slot.current, now)
        for key in [key for key, slots in self._slots.items() if not slots]:
            del self._slots[key]
        self._refresh_generations()

    def _refresh_generations(self) -> None:
        """A new generation with the same spec (e.g. a scale change) needs no restart."""
        assert self._desired is not None
        hashes = {key: spec_hash(assignment) for key, assignment in self._desired.items()}
        for replica in self._replicas():
            assignment = self._desired.get(replica.key)
            if (
                assignment is not None
                and replica.generation != assignment.generation
                and replica.spec_hash == hashes[replica.key]
            ):
                replica.generation = assignment.generation
                self._save(replica)

    @staticmethod
    def _view(slot: _Slot) -> ReplicaView:
        return ReplicaView(
            spec_hash=slot.current.spec_hash,
            ready=slot.current.ready,
            port=slot.current.port,
            successor_hash=slot.successor.spec_hash if slot.successor is not None else None,
        )

    def _new_replica(self, assignment: AppAssignment, index: int, role: str) -> _Replica:
        assert isinstance(assignment.workload, ProcessWorkload)
        return _Replica(
            tenant=assignment.tenant,
            app=assignment.app,
            index=index,
            generation=assignment.generation,
            spec_hash=spec_hash(assignment),
            workload=assignment.workload,
            port=fixed_port(assignment.workload, index),
            role=role,
            next_start=time.monotonic(),
        )

    def _spawn(self, replica: _Replica, now: float) -> None:
        """Start the replica's process, or leave it pending (port still held) or in backoff."""
        port = self._port_for(replica)
        if port is not None and any(entry.port == port for entry in self._stopping):
            # The process being replaced still holds the fixed port: start once it is gone.
            replica.port = port
            return
        if replica.restart_pending:
            replica.restart_pending = False
            replica.restarts += 1
            replica.restarts_in_a_row += 1
        if port is None:
            self._spawn_failed(replica, now, self._no_port_reason(replica))
            return
        replica.port = port
        env = self._environment(replica, port)
        command = replica.workload.command
        executable = shutil.which(command, path=env["PATH"])
        if executable is None:
            self._spawn_failed(replica, now, f"command {command!r} not found on PATH {env['PATH']}")
            return
        directory = self.replicas_dir / replica.id
        directory.mkdir(parents=True, exist_ok=True)
        log_path = str(directory / "replica.log")
        file_actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        argv = [command, *replica.workload.args]
        self._note(replica.id, f"starting {' '.join(argv)} on {self.host}:{port}")
        try:
            # posix_spawn, not Popen: a Popen object warns when dropped with its process still
            # running, which is the point here (replicas outlive the agent). setsid puts the
            # replica in its own session and process group; SIGPIPE/SIGXFSZ, which Python
            # ignores, get their default action back as with Popen(restore_signals=True).
            pid = os.posix_spawn(
                executable,
                argv,
                env,
                file_actions=file_actions,
                setsid=True,
                setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        except OSError as error:
            self._spawn_failed(replica, now, f"cannot start {executable}: {error}")
            return
        stat = proc_stat(pid)
        replica.pid = pid
        replica.start_ticks = stat[1] if stat is not None else None
        replica.started_at = datetime.now(UTC)
        replica.started_mono = now
        replica.state = STARTING
        replica.ready = False
        replica.has_been_ready = False
        replica.failures = 0
        replica.next_start = None
        self._save(replica)
        self._note(replica.id, f"started pid {pid}")

    def _spawn_failed(self, replica: _Replica, now: float, reason: str) -> None:
        delay = self._schedule_restart(replica, now)
        self._save(replica)
        self._note(replica.id, f"{reason}; retrying in {delay:g} s")
        log.warning("site %s: replica %s: %s", self.site, replica.id, reason)

    def _no_port_reason(self, replica: _Replica) -> str:
        if replica.workload.port is not None:
            return f"port {replica.workload.port}+{replica.index} is beyond 65535"
        low, high = self._port_range
        return f"no free port in {low}-{high} on {self.host}"

    def _port_for(self, replica: _Replica) -> int | None:
        """The fixed port, else the replica's last port if still free, else the lowest free."""
        fixed = fixed_port(replica.workload, replica.index)
        if fixed is not None:
            return fixed if fixed <= 65535 else None
        taken = {other.port for other in self._replicas() if other is not replica}
        taken |= {entry.port for entry in self._stopping}
        # A restarted replica keeps its port when it can: fewer routing changes.
        if (
            replica.port is not None
            and replica.port not in taken
            and port_free(self.host, replica.port)
        ):
            return replica.port
        low, high = self._port_range
        for port in range(low, high + 1):
            if port not in taken and port_free(self.host, port):
                return port
        return None

    def _environment(self, replica: _Replica, port: int) -> dict[str, str]:
        path = [
            *self._extra_path,
            # Not resolved: a venv's python is a symlink, and its bin directory is the point.
            os.path.dirname(sys.executable),
            os.environ.get("PATH", os.defpath),
        ]
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(entry for entry in path if entry)
        env.update(replica.workload.env)
        env.update(
            PORT=str(port),
            HOST=self.host,
            EDGEFLEET_SITE=self.site,
            EDGEFLEET_REPLICA=replica.id,
            EDGEFLEET_APP=replica.key,
        )
        return env

    def _retire(self, replica: _Replica, now: float) -> None:
        """The replica is going away: stop its process and drop its record."""
        self._begin_stop(replica, now)
        self._unlink(replica.id, replica.record_name)

    def _begin_stop(self, replica: _Replica, now: float) -> None:
        """SIGTERM the replica's process group; the supervisor SIGKILLs it after the grace."""
        if replica.pid is None:
            return
        record = self.replicas_dir / replica.id / f"stopping-{replica.pid}.json"
        entry = _Stopping(
            tenant=replica.tenant,
            app=replica.app,
            index=replica.index,
            port=replica.port,
            pid=replica.pid,
            start_ticks=replica.start_ticks,
            deadline=now + self._stop_grace,
            record=record,
        )
        # Recorded before the signal: an agent killed right now finishes the stop on restart.
        _write_json(record, self._record(replica) | {"role": "stopping"})
        self._stopping.append(entry)
        self._terminate(entry)
        self._note(replica.id, f"stopping pid {replica.pid} (SIGTERM)")

    @staticmethod
    def _terminate(entry: _Stopping) -> None:
        _signal_group(entry.pid, entry.start_ticks, signal.SIGTERM)
        # A stopped (SIGSTOP) process would not act on SIGTERM until continued.
        _signal_group(entry.pid, entry.start_ticks, signal.SIGCONT)

    def _advance_stopping(self, now: float) -> None:
        for entry in list(self._stopping):
            gone, code = _reap(entry.pid, entry.start_ticks)
            if gone:
                self._stopping.remove(entry)
                entry.record.unlink(missing_ok=True)
                self._note(entry.id, f"pid {entry.pid} {_describe_exit(code)}")
            elif not entry.killed and now >= entry.deadline:
                _signal_group(entry.pid, entry.start_ticks, signal.SIGKILL)
                entry.killed = True
                self._note(entry.id, f"pid {entry.pid} ignored SIGTERM for {self._stop_grace:g} s")

    # -- Records, adoption, notes -------------------------------------------------------------

    def _record(self, replica: _Replica) -> dict[str, Any]:
        return {
            "version": _RECORD_VERSION,
            "id": replica.id,
            "role": replica.role,
            "tenant": replica.tenant,
            "app": replica.app,
            "index": replica.index,
            "generation": replica.generation,
            "spec_hash": replica.spec_hash,
            "workload": replica.workload.model_dump(mode="json"),
            "port": replica.port,
            "pid": replica.pid,
            # /proc/<pid>/stat field 22 and the boot id: a pid alone may have been reused.
            "start_ticks": replica.start_ticks,
            "boot_id": self._boot_id,
            "restarts": replica.restarts,
            "restarts_in_a_row": replica.restarts_in_a_row,
            "has_been_ready": replica.has_been_ready,
            "started_at": replica.started_at.isoformat() if replica.started_at else None,
        }

    def _save(self, replica: _Replica) -> None:
        _write_json(self.replicas_dir / replica.id / replica.record_name, self._record(replica))

    def _unlink(self, rid: str, name: str) -> None:
        (self.replicas_dir / rid / name).unlink(missing_ok=True)

    def _alive(self, record: Mapping[str, Any]) -> bool:
        pid, ticks = record.get("pid"), record.get("start_ticks")
        if not isinstance(pid, int) or not isinstance(ticks, int):
            return False
        if record.get("boot_id") != self._boot_id:
            return False
        return not _reap(pid, ticks)[0]

    def _adopt_locked(self) -> None:
        """Load the records once: adopt live processes, resume stops, restart the dead."""
        if self._adopted:
            return
        self._adopted = True
        if not self.replicas_dir.is_dir():
            return
        now = time.monotonic()
        for directory in sorted(self.replicas_dir.iterdir()):
            if directory.is_dir():
                try:
                    self._adopt_directory(directory, now)
                except (KeyError, TypeError, ValueError) as error:
                    log.warning("site %s: cannot adopt %s: %s", self.site, directory, error)

    def _adopt_directory(self, directory: Path, now: float) -> None:
        stopping: set[tuple[int, int]] = set()
        for path in sorted(directory.iterdir()):
            if not _STOPPING_RECORD.match(path.name):
                continue
            record = _read_json(path)
            if record is None or not self._alive(record):
                path.unlink(missing_ok=True)
                continue
            entry = _Stopping(
                tenant=str(record["tenant"]),
                app=str(record["app"]),
                index=int(record["index"]),
                port=record.get("port"),
                pid=int(record["pid"]),
                start_ticks=int(record["start_ticks"]),
                deadline=now + self._stop_grace,
                record=path,
            )
            stopping.add((entry.pid, int(record["start_ticks"])))
            self._stopping.append(entry)
            self._terminate(entry)
            self._note(entry.id, f"agent restarted: still stopping pid {entry.pid}")

        current = self._load(directory / "replica.json", now, stopping)
        successor = self._load(directory / "successor.json", now, stopping)
        current_pid = current.pid if current is not None else None
        if successor is not None and (successor.pid is None or successor.pid == current_pid):
            # A dead successor is dropped (the plan starts another if still needed); one with
            # the current's pid is a leftover of an interrupted promotion.
            (directory / "successor.json").unlink(missing_ok=True)
            successor = None
        if successor is not None and (current is None or current.pid is None):
            # Promotion was interrupted after the old process was marked for stopping.
            successor.role = _CURRENT
            self._save(successor)
            (directory / "successor.json").unlink(missing_ok=True)
            current, successor = successor, None
        if current is None:
            return
        self._slots.setdefault(current.key, {})[current.index] = _Slot(current, successor)
        for replica in (current, successor):
            if replica is None:
                continue
            if replica.pid is None:
                self._note(replica.id, "agent restarted: process gone; restarting")
            else:
                self._note(replica.id, f"agent restarted: adopted pid {replica.pid}")

    def _load(self, path: Path, now: float, stopping: set[tuple[int, int]]) -> _Replica | None:
        if not path.exists():
            return None
        record = _read_json(path)
        if record is None:
            return None
        started_at = record.get("started_at")
        replica = _Replica(
            tenant=str(record["tenant"]),
            app=str(record["app"]),
            index=int(record["index"]),
            generation=int(record["generation"]),
            spec_hash=str(record["spec_hash"]),
            workload=ProcessWorkload.model_validate(record["workload"]),
            port=record.get("port"),
            role=_CURRENT if path.name == "replica.json" else _SUCCESSOR,
            restarts=int(record.get("restarts", 0)),
            restarts_in_a_row=int(record.get("restarts_in_a_row", 0)),
            started_at=datetime.fromisoformat(started_at) if started_at else None,
        )
        pid, ticks = record.get("pid"), record.get("start_ticks")
        if (
            self._alive(record)
            and isinstance(pid, int)
            and isinstance(ticks, int)
            and (pid, ticks) not in stopping
        ):
            replica.pid, replica.start_ticks = pid, ticks
            # Not ready until probed again; a process that was ready is subject to liveness.
            replica.has_been_ready = bool(record.get("has_been_ready", False))
            replica.state = RUNNING if replica.has_been_ready else STARTING
            running_for = (
                (datetime.now(UTC) - replica.started_at).total_seconds()
                if replica.started_at
                else 0.0
            )
            replica.started_mono = now - max(running_for, 0.0)
        else:
            self._schedule_restart(replica, now)
            if record.get("has_been_ready"):
                # It served until it went down with the agent (the site rebooted, or was
                # killed): start it at once. Backoff is for processes that crash on their own.
                replica.restarts_in_a_row = 0
                replica.next_start = now
        return replica

    def _note(self, rid: str, message: str) -> None:
        """A line from the agent in the replica's log, so `logs` tells what happened."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        directory = self.replicas_dir / rid
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with (directory / "replica.log").open("a", encoding="utf-8") as file:
                file.write(f"[edgefleet-agent {stamp}] {message}\n")
        except OSError as error:
            log.warning("site %s: cannot write the log of %s: %s", self.site, rid, error)

    # -- Views ----------------------------------------------------------------------------------

    def _accept(self, assignments: Sequence[AppAssignment]) -> dict[str, AppAssignment]:
        desired: dict[str, AppAssignment] = {}
        prefixes: dict[str, str] = {}
        for assignment in assignments:
            if not isinstance(assignment.workload, ProcessWorkload):
                log.warning(
                    "site %s: %s has a %s workload; the process driver runs only processes",
                    self.site,
                    assignment.key,
                    assignment.workload.type,
                )
                continue
            # tenant "a-b"/app "c" and tenant "a"/app "b-c" would share replica ids and files.
            prefix = f"{assignment.tenant}-{assignment.app}"
            other = prefixes.setdefault(prefix, assignment.key)
            if other != assignment.key:
                log.error(
                    "site %s: %s not run: its replica ids (%s-N) clash with those of %s",
                    self.site,
                    assignment.key,
                    prefix,
                    other,
                )
                continue
            desired[assignment.key] = assignment
        return desired

    def _observe_locked(self) -> dict[str, list[dict[str, Any]]]:
        result: dict[str, list[dict[str, Any]]] = {}
        for key, slots in self._slots.items():
            for index in sorted(slots):
                replica = slots[index].current
                result.setdefault(key, []).append(
                    {
                        "id": replica.id,
                        "index": replica.index,
                        "port": replica.port,
                        "pid": replica.pid,
                        "state": replica.state,
                        "ready": replica.ready,
                        "restarts": replica.restarts,
                        "started_at": replica.started_at,
                        "generation": replica.generation,
                    }
                )
        # Removed replicas still on their way out, unless their index is already taken again.
        for entry in self._stopping:
            if entry.index in self._slots.get(entry.key, {}):
                continue
            states = result.setdefault(entry.key, [])
            if any(state["index"] == entry.index for state in states):
                continue
            states.append(
                {
                    "id": entry.id,
                    "index": entry.index,
                    "port": entry.port,
                    "pid": entry.pid,
                    "state": STOPPED,
                    "ready": False,
                }
            )
        for states in result.values():
            states.sort(key=lambda state: int(state["index"]))
        return result

    def _fingerprint_locked(self) -> _Fingerprint:
        return tuple(
            (
                key,
                str(state["id"]),
                str(state["state"]),
                bool(state["ready"]),
                state["port"],
                state["pid"],
                int(state.get("restarts", 0)),
                int(state.get("generation", 0)),
            )
            for key, states in sorted(self._observe_locked().items())
            for state in states
        )
