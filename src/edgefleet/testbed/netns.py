"""Linux network namespaces: make, remove, run in, open sockets in.

Everything goes through ``ip`` (iproute2), as an operator would do it by hand, except
``socket_in``, which opens a socket inside a namespace from this process: a short-lived thread
enters the namespace with setns(2) (per thread for network namespaces), creates the socket and
ends; the socket stays in that namespace for its whole life. Tests use it to ask a site's DNS
as a client of that region would, without a process per question.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

NETNS_DIR = Path("/run/netns")
"""Where ``ip netns`` keeps the namespaces it names."""
NETNS_ETC = Path("/etc/netns")
"""Per-namespace files that ``ip netns exec`` mounts over /etc (resolv.conf, hosts)."""
CLONE_NEWNET = 0x40000000
"""setns(2) flag of a network namespace."""


class NetnsError(RuntimeError):
    """A namespace operation failed; the message has the command and what it printed."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; NetnsError with its output when it fails and ``check``."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can (root, iproute2, TUN)."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed: apt-get install iproute2"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing: the kernel has no TUN support here"
    probe = f"efprobe{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except NetnsError as exc:
        return f"cannot make a network namespace: {exc}"
    ip("netns", "del", probe, check=False)
    return None


def exists(name: str) -> bool:
    """True if the named namespace exists."""
    return (NETNS_DIR / name).exists()


def add(name: str) -> None:
    """Make the namespace (nothing if it exists) with its loopback up."""
    if not exists(name):
        ip("netns", "add", name)
    ip("-n", name, "link", "set", "lo", "up")


def delete(name: str) -> None:
    """Kill what runs in the namespace and remove it (nothing if it does not exist)."""
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    if not exists(name):
        return
    kill_all(name, signal.SIGKILL)
    ip("netns", "del", name, check=False)


def set_resolver(name: str, nameserver: str) -> None:
    """Programs run with ``ip netns exec`` in the namespace resolve names at ``nameserver``."""
    folder = NETNS_ETC / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:2\n")


def pids(name: str) -> list[int]:
    """Processes running in the namespace."""
    if not exists(name):
        return []
    done = ip("netns", "pids", name, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def kill_all(name: str, sig: signal.Signals = signal.SIGKILL, *, timeout: float = 5.0) -> int:
    """Send ``sig`` to every process in the namespace; with SIGKILL, wait until all are gone.

    Returns how many processes were signalled.
    """
    found = pids(name)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    if sig == signal.SIGKILL:
        deadline = time.monotonic() + timeout
        while pids(name) and time.monotonic() < deadline:
            time.sleep(0.02)
    return len(found)


def exec_args(name: str, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` inside the namespace."""
    return ["ip", "netns", "exec", name, *argv]


def add_address(name: str, device: str, cidr: str) -> None:
    """Add an address to a device in the namespace (nothing if it is there)."""
    done = ip("-n", name, "addr", "add", cidr, "dev", device, check=False)
    if done.returncode != 0 and "File exists" not in done.stderr:
        raise NetnsError(f"ip -n {name} addr add {cidr} dev {device}: {done.stderr.strip()}")


def veth(name: str, *, local: str, local_cidr: str, peer: str, peer_cidr: str) -> None:
    """A veth pair from this namespace (``local``) into namespace ``name`` (``peer``).

    Remade if it exists; both ends up, with the given addresses. Only the connected route of
    the pair's small prefix is added on either side.
    """
    ip("link", "del", local, check=False)
    ip("link", "add", local, "type", "veth", "peer", "name", peer)
    ip("link", "set", peer, "netns", name)
    ip("addr", "add", local_cidr, "dev", local)
    ip("link", "set", local, "up")
    ip("-n", name, "addr", "add", peer_cidr, "dev", peer)
    ip("-n", name, "link", "set", peer, "up")


def remove_link(device: str) -> None:
    """Remove a device of this namespace (nothing if it does not exist)."""
    ip("link", "del", device, check=False)


_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(
    name: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
) -> socket.socket:
    """A new socket that lives in the namespace ``name`` (see the module's docstring)."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_make() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
                made.append(socket.socket(family, kind))
            finally:
                os.close(fd)
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=enter_and_make, name=f"netns-{name}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]
