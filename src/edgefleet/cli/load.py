"""``edgefleet load``: open-loop HTTP load on an app, from clients near one site.

The command looks the site up in the hub, picks a source address inside the site's client
networks (so that the fleet locates these clients at the site), runs ``edgefleet.loadgen`` and
shows a line per second and a summary. The engine knows nothing of the CLI; this module only
turns options into a ``LoadSpec`` and results into text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
from collections.abc import Mapping

from rich.table import Table

from edgefleet.cli.console import Stream, err, out
from edgefleet.cli.main import fail, hub_session
from edgefleet.client import HubError
from edgefleet.loadgen import (
    LAG_WARNING_MS,
    LoadError,
    LoadSpec,
    LoadSummary,
    Tick,
    choose_source,
    run_load,
)
from edgefleet.model import Site

FOREVER = "forever"
"""``--duration`` value for a run until Ctrl-C."""


def parse_duration(text: str) -> float | None:
    """``--duration``: seconds (> 0), or ``forever`` (None). ValueError with a hint otherwise."""
    if text.strip().lower() == FOREVER:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"--duration {text!r}: expected seconds, e.g. 30, or 'forever'") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"--duration {text!r}: must be more than 0 seconds, or 'forever'")
    return seconds


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items()))


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def tick_line(tick: Tick) -> str:
    """One second as one line of rich markup: rate, outcomes, latency, serving sites."""
    # The last record may cover part of a second: show where it ends.
    at = f"{tick.second:>4}s" if tick.span >= 1 else f"{tick.second - 1 + tick.span:>4.2f}s"
    parts = [at, f"sent {tick.sent:>5}", f"ok {tick.ok:>5}"]
    failed = tick.failed_total
    detail = f" ({_counts(tick.failed)})" if failed else ""
    parts.append(f"[red]failed {failed:>4}{detail}[/]" if failed else f"failed {failed:>4}")
    if tick.dropped:
        parts.append(f"[red]dropped {tick.dropped}[/]")
    parts.append(f"in flight {tick.in_flight:>4}")
    parts.append(f"p50 {_ms(tick.p50_ms):>6} ms  p99 {_ms(tick.p99_ms):>6} ms")
    parts.append(f"served by: {_counts(tick.served_by) or '-'}")
    if tick.lag_ms > LAG_WARNING_MS:
        parts.append(f"[yellow]generator {tick.lag_ms:.0f} ms behind[/]")
    return "  ".join(parts)


def summary_table(summary: LoadSummary, *, site: str) -> Table:
    """The end-of-run summary: what was sent, what came back, how fast, who served it."""
    table = Table(box=None, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    source = summary.source_address or "default source address"
    table.add_row("name", summary.name)
    table.add_row("from", f"site {site}, source {source}")
    answer = ", ".join(summary.last_answer) or "-"
    queries = _plural(summary.dns_queries, "query", "queries")
    table.add_row("DNS", f"{summary.dns_server}: {queries}, last answer {answer}")
    connections = _plural(summary.connections, "connection", "connections")
    table.add_row("HTTP", f"{connections} opened (kept alive)")
    window = f"{summary.window:.1f} s"
    table.add_row(
        "rate", f"{summary.rps:g}/s target, {summary.achieved_rps:.1f}/s sent over {window}"
    )
    table.add_row(
        "requests",
        f"{summary.sent} sent, {summary.ok} ok, {summary.failed_total} failed, "
        f"{summary.dropped} dropped by the generator, {summary.unfinished} unfinished",
    )
    if summary.failed:
        table.add_row("failed", f"[red]{_counts(summary.failed)}[/]")
    latency = summary.latency
    table.add_row(
        "latency ms",
        f"p50 {_ms(latency.p50_ms)}  p90 {_ms(latency.p90_ms)}  p99 {_ms(latency.p99_ms)}  "
        f"max {_ms(latency.max_ms)}  mean {_ms(latency.mean_ms)}  (of {latency.count} ok)",
    )
    table.add_row("served by", _counts(summary.served_by) or "-")
    table.add_row("generator", f"started requests at most {summary.max_lag_ms:.1f} ms late")
    for note in summary.notes:
        table.add_row("note", f"[yellow]{note}[/]")
    return table


async def _run(spec: LoadSpec, live: Stream) -> LoadSummary:
    """The run, stopped cleanly (with its summary) by Ctrl-C."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = False
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        handled = True
    try:
        return await run_load(spec, on_second=lambda t: live.print(tick_line(t)), stop=stop)
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)


def _lookup(from_site: str, tenant: str, app: str) -> Site:
    """The site, after checking that it and the app exist (a missing one is a clear error)."""
    with hub_session() as client:
        try:
            site = client.get_site(from_site)
        except HubError as exc:
            if exc.status == 404:
                fail(f"{exc.message}: `edgefleet get sites` lists the sites")
            raise
        try:
            client.get_app(tenant, app)
        except HubError as exc:
            if exc.status == 404:
                fail(f"{exc.message}: `edgefleet get apps` lists the apps and their tenants")
            raise
    return site


def spec_for_site(
    site: Site,
    *,
    app: str,
    rps: float,
    tenant: str = "demo",
    duration: float | None = 10.0,
    path: str = "/",
    work_ms: int | None = None,
    concurrency_limit: int = 1000,
    timeout: float = 10.0,
) -> LoadSpec:
    """Load as clients near ``site`` send it: they ask its edge DNS, and send from the first
    address of its client networks this machine can bind (else the default source)."""
    addresses = site.spec.addresses
    return LoadSpec(
        app=app,
        tenant=tenant,
        rps=rps,
        duration=duration,
        path=path,
        work_ms=work_ms,
        concurrency_limit=concurrency_limit,
        timeout=timeout,
        dns_server=addresses.ip,
        dns_port=addresses.dns_port,
        http_port=addresses.ingress_port,
        source_address=choose_source(site.spec.networks),
    )


def load_command(
    *,
    from_site: str,
    app: str,
    tenant: str = "demo",
    rps: float,
    duration: str = "10",
    path: str = "/",
    work: int | None = None,
    concurrency_limit: int = 1000,
    as_json: bool = False,
) -> None:
    """The body of ``edgefleet load``: look up the site and app, run, print.

    Live lines go to stdout, or to stderr with ``--json`` (stdout then holds only the summary
    as JSON). Exits 1 with a message when the site or the app is unknown or the site's edge
    DNS cannot be used; a run whose requests fail still exits 0 (the failures are the result).
    """
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        fail(str(exc))
    site = _lookup(from_site, tenant, app)
    try:
        spec = spec_for_site(
            site,
            app=app,
            tenant=tenant,
            rps=rps,
            duration=seconds,
            path=path,
            work_ms=work,
            concurrency_limit=concurrency_limit,
        )
    except ValueError as exc:
        fail(str(exc))
    if spec.source_address is None:
        networks = ", ".join(site.spec.networks) or "none"
        err.print(
            f"[yellow]warning:[/] no address in site {from_site}'s client networks ({networks}) "
            "can be bound on this machine: sending from the default source address, so the "
            f"fleet will not see these clients as being at {from_site}"
        )
    live = err if as_json else out
    how_long = "until Ctrl-C" if seconds is None else f"for {seconds:g} s"
    live.print(
        f"sending {rps:g} requests/s to {spec.name} {how_long} as clients of site {from_site} "
        f"(source {spec.source_address or 'default'}, DNS {spec.dns_server}:{spec.dns_port})"
    )
    try:
        summary = asyncio.run(_run(spec, live))
    except LoadError as exc:
        fail(str(exc))
    if as_json:
        out.print(json.dumps({"site": from_site, **summary.to_json()}, indent=2), markup=False)
    else:
        out.print(summary_table(summary, site=from_site))
