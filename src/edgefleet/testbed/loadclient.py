"""Steady load from one client region of the test bed, as the region's users send it.

Runs inside the region's namespace (``ip netns exec``): asks the anycast DNS address, which the
WAN delivers to the nearest working edge DNS, and sends HTTP to the answered sites through the
emulated network. Writes one JSON line per second (``{"tick": ...}`` with the wall-clock time)
and a last line with the summary (``{"summary": ...}``) to ``--out``; SIGTERM ends the run early
with a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgefleet.loadgen import LoadSpec, Tick, run_load
from edgefleet.testbed.topology import ANYCAST_DNS, DNS_PORT, INGRESS_PORT


def tick_json(tick: Tick, at: float) -> dict[str, Any]:
    """A tick as one JSON-ready line, stamped with the wall-clock time ``at``."""
    data = asdict(tick)
    data["failed"] = dict(tick.failed)
    data["served_by"] = dict(tick.served_by)
    data["at"] = at
    return {"tick": data}


async def _run(args: argparse.Namespace) -> None:
    spec = LoadSpec(
        app=args.app,
        tenant=args.tenant,
        rps=args.rps,
        duration=args.duration,
        dns_server=args.dns,
        dns_port=DNS_PORT,
        http_port=INGRESS_PORT,
        work_ms=args.work,
        timeout=args.timeout,
    )
    out = Path(args.out).open("a", encoding="utf-8")  # noqa: SIM115 - closed below
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def on_second(tick: Tick) -> None:
        out.write(json.dumps(tick_json(tick, time.time())) + "\n")
        out.flush()

    try:
        summary = await run_load(spec, on_second=on_second, stop=stop)
        out.write(json.dumps({"summary": summary.to_json(), "at": time.time()}) + "\n")
    finally:
        out.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m edgefleet.testbed.loadclient --app hello --rps 20 --out FILE``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", required=True)
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--rps", type=float, required=True)
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds; default: until SIGTERM"
    )
    parser.add_argument("--work", type=int, default=None, help="service time to ask, ms")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--dns", default=ANYCAST_DNS, help="DNS server to ask")
    parser.add_argument("--out", required=True, help="file the JSON lines are appended to")
    args = parser.parse_args(argv)
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
