"""What fleet policies cost: the access decision, the edge DNS with access rules, quota capping.

In-process, no sockets; each figure is printed next to the same measurement without policy.

- ``allows``: one access decision (a rule with a network and a region), per call;
- edge DNS: ``Responder.handle`` over an ``EdgeZone`` of ``--apps`` apps, every answer cached,
  asked by ``--clients`` client addresses in turn, with no rules, with region rules (answers do
  not depend on the client: the UDP loop's flat table still answers repeats) and with network
  rules (answers depend on the address: cached per client key, no flat table);
- ``cap_to_quotas``: ``--apps`` apps of 10 tenants with quotas, each at ``--sites`` sites.

    .venv/bin/python bench/policy_overhead.py [--apps 1000] [--sites 20] [--clients 256]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from ipaddress import ip_network

import dns.message
import dns.rdatatype

from edgefleet.agent.edge import EdgeZone
from edgefleet.dns import Responder
from edgefleet.model import AppRoutes, RouteAccess, RouteEndpoint, RouteSite, RoutingTable
from edgefleet.placement import AppKey, SiteName
from edgefleet.placement.quota import Placed, Quota, QuotaApp, cap_to_quotas
from edgefleet.routing import AccessRule, AppAccess, allows
from edgefleet.routing.convert import route_table


def per_call(work: Callable[[], object], *, seconds: float = 1.0) -> float:
    """Microseconds per call of ``work``, over about ``seconds``."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            work()
        calls += 100
    return elapsed / calls * 1e6


def table(apps: int, sites: int, access: list[RouteAccess]) -> RoutingTable:
    return RoutingTable(
        version=f"v-{len(access)}-{bool(access and access[0].networks)}",
        sites=[
            RouteSite(
                name=f"s{i}",
                region="eu-west" if i % 2 else "us-east",
                zone="z",
                lat=40.0 + i % 10,
                lon=-5.0 + i % 20,
                ip=f"10.{i // 250}.{i % 250}.1",
            )
            for i in range(sites)
        ],
        apps=[
            AppRoutes(
                tenant=f"t{i % 10}",
                app=f"app{i}",
                endpoints=[RouteEndpoint(site=f"s{(i + k) % sites}", ready=1) for k in range(3)],
                access=access,
            )
            for i in range(apps)
        ],
    )


def edge_dns(apps: int, sites: int, clients: int, access: list[RouteAccess]) -> tuple[float, bool]:
    """(µs per cached answer through ``handle``, whether the UDP flat table serves repeats)."""
    zone = EdgeZone("s1", address="10.0.1.1")
    zone.update(hub_table=route_table(table(apps, sites, access)))
    responder = Responder(zone)
    queries = [
        dns.message.make_query(f"app{i}.t{i % 10}.edge.internal.", dns.rdatatype.A).to_wire()
        for i in range(apps)
    ]
    sources = [f"10.200.{i // 250}.{i % 250 + 1}" for i in range(clients)]
    for query in queries:  # warm: every answer cached, for every client key
        for source in sources:
            responder.handle(query, source, tcp=False)
    position = 0

    def ask() -> None:
        nonlocal position
        position += 1
        responder.handle(queries[position % apps], sources[position % clients], tcp=False)

    return per_call(ask), responder.udp_fast_answers() is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--clients", type=int, default=256)
    args = parser.parse_args()

    rule = AppAccess(
        app="shop.acme",
        rules=(
            AccessRule(
                who="tenant acme",
                networks=(ip_network("10.200.0.0/16"),),
                regions=frozenset({"eu-west"}),
            ),
        ),
    )
    print("access decision (allows), µs per call")
    print(f"  no rules            {per_call(lambda: allows(None, '10.200.1.7', 'us-east')):8.2f}")
    print(f"  let in by network   {per_call(lambda: allows(rule, '10.200.1.7', 'us-east')):8.2f}")
    print(f"  refused             {per_call(lambda: allows(rule, '192.0.2.7', 'us-east')):8.2f}")

    print(f"edge DNS, {args.apps} apps, {args.clients} clients: µs per cached answer (handle)")
    for label, access in (
        ("no rules", []),
        ("region rules", [RouteAccess(who="tenant t", regions=["us-east"])]),
        ("network rules", [RouteAccess(who="tenant t", networks=["10.200.0.0/17"])]),
    ):
        cost, flat = edge_dns(args.apps, args.sites, args.clients, access)
        print(f"  {label:18s}  {cost:8.2f}   UDP flat table: {'yes' if flat else 'no'}")

    quota_apps = [
        QuotaApp(key=AppKey(f"t{i % 10}/app{i}"), tenant=f"t{i % 10}", cpu=0.25, memory=2**26)
        for i in range(args.apps)
    ]
    placed = {
        app.key: {SiteName(f"s{(i + k) % args.sites}"): Placed(2, 4) for k in range(args.sites)}
        for i, app in enumerate(quota_apps)
    }
    total = args.apps * args.sites * 4 // 10
    for label, quotas in (
        ("no quotas", {}),
        ("within quotas", {f"t{i}": Quota(replicas=total) for i in range(10)}),
        ("cut to half", {f"t{i}": Quota(replicas=total // 2) for i in range(10)}),
    ):
        started = time.perf_counter()
        result = cap_to_quotas(quota_apps, placed, quotas)
        elapsed = (time.perf_counter() - started) * 1000
        print(
            f"cap_to_quotas, {args.apps} apps x {args.sites} sites, {label:13s}: "
            f"{elapsed:7.1f} ms ({len(result.messages)} apps cut)"
        )


if __name__ == "__main__":
    main()
