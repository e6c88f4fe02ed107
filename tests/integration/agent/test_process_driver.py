"""The process driver with real replicas (the bundled hello app) on loopback addresses."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.agent.drivers.process import ProcessDriver, proc_stat, spec_hash
from edgefleet.model import AppAssignment, ProcessWorkload, ReplicaState

SITE = "lab-1"
KEY = "acme/hello"
_hosts = itertools.count(1)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def hello(
    replicas: int,
    *,
    generation: int = 1,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> AppAssignment:
    return AppAssignment(
        tenant="acme",
        app="hello",
        generation=generation,
        replicas=replicas,
        workload=ProcessWorkload(command="edgefleet-hello", env=env or {}, port=port),
    )


def start_ticks(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])


class Processes:
    """Remembers replica processes by pid and /proc start time, to tell when they are gone."""

    def __init__(self) -> None:
        self.seen: dict[int, int | None] = {}

    def note(self, states: list[ReplicaState]) -> list[int]:
        pids = [state.pid for state in states if state.pid is not None]
        for pid in pids:
            self.seen.setdefault(pid, start_ticks(pid))
        return pids

    def gone(self, *pids: int) -> bool:
        return all(start_ticks(pid) != self.seen.get(pid) for pid in pids)


@pytest.fixture
def host() -> str:
    # A loopback address of our own per test, so ports never clash with other suites.
    return f"127.77.{os.getpid() % 250}.{next(_hosts) % 250 + 1}"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        yield client


@pytest.fixture
def processes() -> Processes:
    return Processes()


@pytest.fixture
def make_driver(
    tmp_path: Path, host: str, processes: Processes
) -> Iterator[Callable[..., ProcessDriver]]:
    """New drivers on one state dir; every replica is stopped at the end, even on failure."""
    made: list[ProcessDriver] = []

    def make(**options: Any) -> ProcessDriver:
        options = {"probe_interval": 0.1, "probe_timeout": 0.5, "stop_grace": 2.0} | options
        driver = ProcessDriver(SITE, tmp_path / "state", host, **options)
        made.append(driver)
        return driver

    yield make
    for driver in reversed(made):
        driver.stop_all()
    # The last resort, should stop_all be broken: no test leaves processes behind.
    leftovers = [pid for pid in processes.seen if not processes.gone(pid)]
    for pid in leftovers:
        os.killpg(pid, signal.SIGKILL)
    assert not leftovers, f"replicas still running after stop_all: {leftovers}"


def replicas(driver: ProcessDriver, key: str = KEY) -> list[ReplicaState]:
    return driver.observe().get(key, [])


def all_ready(driver: ProcessDriver, count: int, key: str = KEY) -> list[ReplicaState] | None:
    states = replicas(driver, key)
    if [s.index for s in states] == list(range(count)) and all(
        s.ready and s.state == "running" for s in states
    ):
        return states
    return None


def started(make_driver: Callable[..., ProcessDriver], **options: Any) -> ProcessDriver:
    driver = make_driver(**options)
    driver.start(lambda: None)
    return driver


def test_replicas_get_ready_and_answer_as_themselves(
    make_driver: Callable[..., ProcessDriver], host: str, http: httpx.Client, tmp_path: Path
) -> None:
    changes: list[float] = []
    driver = make_driver()
    driver.start(lambda: changes.append(time.monotonic()))
    driver.converge([hello(2)])

    states = wait_for(lambda: all_ready(driver, 2), what="2 ready replicas")
    assert changes, "on_change was not called"
    for state in states:
        answer = http.get(f"http://{host}:{state.port}/").json()
        assert answer == {
            "app": KEY,
            "site": SITE,
            "replica": f"acme-hello-{state.index}",
            "message": f"hello from {SITE}",
        }
        assert state.id == f"acme-hello-{state.index}"
        assert (state.restarts, state.generation) == (0, 1)
        record = json.loads(
            (tmp_path / "state" / "replicas" / state.id / "replica.json").read_text()
        )
        assert record["pid"] == state.pid
        assert record["start_ticks"] == start_ticks(state.pid)
        assert record["port"] == state.port
        assert record["spec_hash"] == spec_hash(hello(2))
    assert http.get(f"http://{host}:{states[0].port}/nope").status_code == 404
    assert states[0].port != states[1].port


def test_scale_up_then_down_keeps_the_lower_replicas(
    make_driver: Callable[..., ProcessDriver], processes: Processes, tmp_path: Path
) -> None:
    driver = started(make_driver)
    driver.converge([hello(2)])
    first = processes.note(wait_for(lambda: all_ready(driver, 2), what="2 ready"))

    driver.converge([hello(3, generation=2)])
    three = processes.note(wait_for(lambda: all_ready(driver, 3), what="3 ready"))
    assert three[:2] == first
    assert all(s.generation == 2 for s in replicas(driver))

    driver.converge([hello(1, generation=3)])
    wait_for(lambda: all_ready(driver, 1), what="scaled down to 1")
    wait_for(lambda: processes.gone(*three[1:]), what="replicas 1 and 2 to exit")
    assert replicas(driver)[0].pid == first[0]
    replica_dirs = tmp_path / "state" / "replicas"
    assert not (replica_dirs / "acme-hello-2" / "replica.json").exists()
    assert (replica_dirs / "acme-hello-2" / "replica.log").exists()


def test_removed_app_is_stopped(
    make_driver: Callable[..., ProcessDriver], processes: Processes
) -> None:
    driver = started(make_driver)
    driver.converge([hello(2)])
    pids = processes.note(wait_for(lambda: all_ready(driver, 2), what="2 ready"))

    driver.converge([])
    wait_for(lambda: KEY not in driver.observe(), what="the app to disappear")
    assert processes.gone(*pids)


def test_killed_replica_is_restarted(
    make_driver: Callable[..., ProcessDriver], processes: Processes
) -> None:
    driver = started(make_driver)
    driver.converge([hello(2)])
    before = processes.note(wait_for(lambda: all_ready(driver, 2), what="2 ready"))

    os.kill(before[0], signal.SIGKILL)

    def restarted() -> list[ReplicaState] | None:
        states = all_ready(driver, 2)
        return states if states and states[0].restarts == 1 else None

    after = processes.note(wait_for(restarted, what="replica 0 restarted"))
    assert after[0] != before[0]
    assert after[1] == before[1]
    assert replicas(driver)[1].restarts == 0
    assert "killed by SIGKILL" in driver.logs("acme", "hello", replica="acme-hello-0")


def test_replica_that_crashes_on_its_own_is_restarted(
    make_driver: Callable[..., ProcessDriver], processes: Processes, host: str, http: httpx.Client
) -> None:
    driver = started(make_driver)
    driver.converge([hello(1, env={"HELLO_CRASH_AFTER": "1"})])
    (state,) = wait_for(lambda: all_ready(driver, 1), what="ready")
    processes.note([state])

    http.get(f"http://{host}:{state.port}/")  # the one request it serves before exiting 1

    def back() -> list[ReplicaState] | None:
        states = all_ready(driver, 1)
        return states if states and states[0].restarts == 1 else None

    processes.note(wait_for(back, what="restart after the crash"))
    assert "exited with status 1" in driver.logs("acme", "hello")


def test_hung_replica_fails_liveness_and_is_restarted(
    make_driver: Callable[..., ProcessDriver], processes: Processes
) -> None:
    driver = started(make_driver, probe_timeout=0.2)
    driver.converge([hello(1)])
    (before,) = processes.note(wait_for(lambda: all_ready(driver, 1), what="ready"))

    os.kill(before, signal.SIGSTOP)  # alive, listening, answering nothing

    def restarted() -> list[ReplicaState] | None:
        states = all_ready(driver, 1)
        return states if states and states[0].restarts == 1 else None

    processes.note(wait_for(restarted, timeout=15, what="liveness restart"))
    wait_for(lambda: processes.gone(before), what="the hung process to be stopped")
    assert "failed 3 health checks in a row" in driver.logs("acme", "hello")


def test_new_driver_adopts_running_replicas(
    make_driver: Callable[..., ProcessDriver], processes: Processes
) -> None:
    first = started(make_driver)
    first.converge([hello(2)])
    before = wait_for(lambda: all_ready(first, 2), what="2 ready")
    pids = processes.note(before)
    first.close()
    # While no agent runs, replica 1 dies: dead before the next agent looks (a kill takes
    # effect a moment later, and a replica adopted alive that dies then is a crash of its own).
    os.kill(pids[1], signal.SIGKILL)
    wait_for(
        lambda: (stat := proc_stat(pids[1])) is None or stat[0] in ("Z", "X"),
        what="replica 1 to be dead",
    )

    second = make_driver()
    second.start(lambda: None)
    second.converge([hello(2)])
    # converge() starts whatever it decides to start before it returns.
    assert replicas(second)[0].pid == pids[0]
    # Replica 1 served until it died with no agent around (as in a reboot): it is started at
    # once, not after a crash backoff.
    assert replicas(second)[1].pid is not None

    def recovered() -> list[ReplicaState] | None:
        states = all_ready(second, 2)
        return states if states and states[1].restarts == 1 else None

    after = wait_for(recovered, what="adoption of 0 and a restart of 1")
    assert after[0].pid == pids[0]
    assert after[0].restarts == before[0].restarts == 0
    assert after[0].started_at == before[0].started_at
    assert after[1].pid != pids[1]
    processes.note(after)
    log = second.logs("acme", "hello", replica="acme-hello-0")
    assert log.count("started pid") == 1
    assert f"adopted pid {pids[0]}" in log


def test_changed_spec_replaces_replicas_without_downtime(
    make_driver: Callable[..., ProcessDriver], processes: Processes, tmp_path: Path
) -> None:
    driver = started(make_driver)
    driver.converge([hello(2, env={"GREETING": "v1"})])
    old = wait_for(lambda: all_ready(driver, 2), what="2 ready")
    old_pids = processes.note(old)

    driver.converge([hello(2, generation=2, env={"GREETING": "v2"})])
    fewest_ready = 2

    def replaced() -> list[ReplicaState] | None:
        nonlocal fewest_ready
        states = replicas(driver)
        processes.note(states)
        fewest_ready = min(fewest_ready, sum(s.ready for s in states))
        done = all_ready(driver, 2)
        return done if done and all(s.generation == 2 for s in done) else None

    new = wait_for(replaced, what="both replicas replaced")
    assert fewest_ready >= 1, "surge replacement left no replica ready"
    assert not {s.pid for s in new} & set(old_pids)
    assert all(s.restarts == 0 for s in new)
    assert {s.port for s in new}.isdisjoint({s.port for s in old}), "surge uses new ports"
    wait_for(lambda: processes.gone(*old_pids), what="old replicas to exit")
    record = json.loads(
        (tmp_path / "state" / "replicas" / "acme-hello-1" / "replica.json").read_text()
    )
    assert record["spec_hash"] == spec_hash(hello(2, env={"GREETING": "v2"}))
    assert record["workload"]["env"] == {"GREETING": "v2"}


def test_fixed_port_is_replaced_in_place(
    make_driver: Callable[..., ProcessDriver], processes: Processes, host: str
) -> None:
    with socket.socket() as probe:
        probe.bind((host, 0))
        base = probe.getsockname()[1]
    driver = started(make_driver)
    driver.converge([hello(2, port=base, env={"V": "1"})])
    old = wait_for(lambda: all_ready(driver, 2), what="2 ready")
    assert [s.port for s in old] == [base, base + 1]
    old_pids = processes.note(old)

    driver.converge([hello(2, generation=2, port=base, env={"V": "2"})])

    def replaced() -> list[ReplicaState] | None:
        states = all_ready(driver, 2)
        return states if states and all(s.generation == 2 for s in states) else None

    new = processes.note(wait_for(replaced, what="in-place replacement"))
    assert [s.port for s in replicas(driver)] == [base, base + 1]
    assert not set(new) & set(old_pids)
    assert processes.gone(*old_pids)


def test_logs_show_requests_per_replica(
    make_driver: Callable[..., ProcessDriver], host: str, http: httpx.Client
) -> None:
    driver = started(make_driver)
    driver.converge([hello(2)])
    states = wait_for(lambda: all_ready(driver, 2), what="2 ready")
    for state in states:
        http.get(f"http://{host}:{state.port}/")
        http.get(f"http://{host}:{state.port}/missing")

    def both_logged() -> str | None:
        text = driver.logs("acme", "hello")
        return text if text.count("GET / 200") == 2 else None

    text = wait_for(both_logged, what="request lines in the logs")
    assert text.startswith("==> acme-hello-0 <==\n")
    assert "\n==> acme-hello-1 <==\n" in text
    assert text.count("GET /missing 404") == 2
    assert "/healthz" not in text, "successful health checks are not logged"

    one = driver.logs("acme", "hello", replica="acme-hello-1", tail=1)
    assert one == "==> acme-hello-1 <==\n" + one.splitlines()[1] + "\n"
    with pytest.raises(LookupError):
        driver.logs("acme", "hello", replica="acme-hello-9")
    with pytest.raises(LookupError):
        driver.logs("acme", "hello", replica="other-app-0")


def test_missing_command_backs_off_and_says_why(
    make_driver: Callable[..., ProcessDriver],
) -> None:
    driver = started(make_driver)
    broken = hello(1).model_copy(
        update={"workload": ProcessWorkload(command="no-such-edgefleet-command")}
    )
    driver.converge([broken])
    (state,) = replicas(driver)
    assert (state.state, state.ready, state.pid) == ("backoff", False, None)
    assert "'no-such-edgefleet-command' not found on PATH" in driver.logs("acme", "hello")


def test_stop_all_leaves_no_process(
    make_driver: Callable[..., ProcessDriver], processes: Processes, tmp_path: Path
) -> None:
    driver = started(make_driver)
    driver.converge([hello(2), hello(1).model_copy(update={"app": "other"})])
    pids = processes.note(wait_for(lambda: all_ready(driver, 2), what="2 ready"))
    pids += processes.note(wait_for(lambda: all_ready(driver, 1, key="acme/other"), what="other"))

    driver.stop_all()

    assert processes.gone(*pids)
    assert driver.observe() == {}
    assert not list((tmp_path / "state" / "replicas").glob("*/*.json"))
