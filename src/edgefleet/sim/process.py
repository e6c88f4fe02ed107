"""A simulated fleet in a process of its own, driven through its control API.

What the bench, the tests and the demo start when they want thousands of sites beside a hub:
``edgefleet sim`` as an operator runs it (its own process, so its CPU and file descriptors are
not the caller's), and the calls of its control API (``edgefleet.sim.control``) as methods.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgefleet.agent.drivers.process import free_port


@dataclass
class SimProcess:
    """One ``edgefleet sim`` process (see the module)."""

    process: subprocess.Popen[bytes]
    control: str
    """Base URL of its control API (loopback)."""
    sites: int
    log: Path
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @classmethod
    def start(
        cls,
        *,
        hub: str,
        token: str,
        sites: int,
        log: Path,
        prefix: str = "sim-",
        seed: int = 7,
        ready_delay: float = 0.5,
        start_over: float | None = None,
        extra: list[str] | None = None,
    ) -> SimProcess:
        """Start ``sites`` simulated sites against ``hub``: the process creates them with
        ``token`` (an admin's or operator's), makes their join tokens and joins them."""
        port = free_port()
        env = dict(os.environ, EDGEFLEET_HUB=hub, EDGEFLEET_TOKEN=token)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgefleet",
                    "sim",
                    "--sites",
                    str(sites),
                    "--prefix",
                    prefix,
                    "--seed",
                    str(seed),
                    "--ready-delay",
                    str(ready_delay),
                    "--start-over",
                    str(max(2.0, sites / 1000) if start_over is None else start_over),
                    "--control",
                    f"127.0.0.1:{port}",
                    *(extra or []),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        return cls(process=process, control=f"http://127.0.0.1:{port}", sites=sites, log=log)

    def _failed(self) -> RuntimeError:
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return RuntimeError(f"the simulator exited with {self.process.returncode}:\n{tail}")

    def up(self) -> bool:
        """Whether the control API answers (an error if the process ended)."""
        if self.process.poll() is not None:
            raise self._failed()
        try:
            return self._http.get(f"{self.control}/stats", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_joined(self, timeout: float) -> dict[str, Any]:
        """Wait until every running site holds its credential; the stats then."""
        deadline = time.monotonic() + timeout
        while True:
            if self.up():
                stats = self.stats()
                if stats["joined"] >= stats["running"] == self.sites:
                    return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulated sites did not join in {timeout}s ({self.log})")
            time.sleep(0.5)

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: sites, joined, replicas, ready, memory, routing updates taken."""
        reply = self._http.get(f"{self.control}/stats")
        reply.raise_for_status()
        stats: dict[str, Any] = reply.json()
        return stats

    def names(self) -> list[str]:
        reply = self._http.get(f"{self.control}/sites")
        reply.raise_for_status()
        names: list[str] = reply.json()
        return names

    def kill(self, sites: list[str]) -> list[str]:
        """Stop these sites now (their agents go silent)."""
        reply = self._http.post(f"{self.control}/kill", json={"sites": sites})
        reply.raise_for_status()
        killed: list[str] = reply.json()["killed"]
        return killed

    def revive(self, sites: list[str]) -> list[str]:
        reply = self._http.post(f"{self.control}/revive", json={"sites": sites})
        reply.raise_for_status()
        revived: list[str] = reply.json()["revived"]
        return revived

    def fail(self, app: str, sites: list[str], failing: bool = True) -> list[str]:
        """Make ``app``'s (``tenant/app``) replicas fail at ``sites`` (or recover)."""
        reply = self._http.post(
            f"{self.control}/fail", json={"app": app, "sites": sites, "failing": failing}
        )
        reply.raise_for_status()
        named: list[str] = reply.json()["sites"]
        return named

    def stop(self) -> None:
        """Interrupt the process (its sites stop) and wait for it."""
        self._http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
