// Tests of the fleet's pure views (src/fleet-model.js), formatting (src/format.js), routes
// (src/router.js) and the stream's backoff (src/stream.js).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  MAX_RADIUS,
  MIN_LOADED_RADIUS,
  MIN_RADIUS,
  appsAtSite,
  demandByRegion,
  dnsAskSites,
  filterSites,
  loadBySite,
  radiusFor,
  regionSummaries,
} from "../src/fleet-model.js";
import { formatPath, loadAttr, relativeTime } from "../src/format.js";
import { navTarget, parseRoute } from "../src/router.js";
import { backoffDelay } from "../src/stream.js";

function site(name, region, zone, phase) {
  return { metadata: { name }, spec: { region, zone, location: { lat: 0, lon: 0 } }, status: { phase } };
}

const SITES = [
  site("paris", "eu-west", "eu-west-fr", "Ready"),
  site("london", "eu-west", "eu-west-uk", "Unreachable"),
  site("boston", "us-east", "us-east-ma", "Pending"),
  site("albany", "us-east", "us-east-ny", "Ready"),
];

test("load per site sums every app's demand from that origin", () => {
  const loads = loadBySite([
    { origin: "paris", requestsPerSecond: 2, concurrency: 1, dnsPerSecond: 0.5 },
    { origin: "paris", requestsPerSecond: 3, concurrency: 0.5, dnsPerSecond: 0 },
    { origin: "boston", requestsPerSecond: 1, concurrency: 0, dnsPerSecond: 1 },
  ]);
  assert.deepEqual(loads.get("paris"), { rps: 5, inFlight: 1.5, dns: 0.5 });
  assert.equal(loads.get("london"), undefined);
});

test("radius: idle sites smallest, loaded ones on a sqrt scale above them", () => {
  assert.equal(radiusFor(0, 100), MIN_RADIUS);
  assert.equal(radiusFor(5, 0), MIN_RADIUS);
  assert.equal(radiusFor(100, 100), MAX_RADIUS);
  assert.equal(radiusFor(25, 100), MIN_LOADED_RADIUS + (MAX_RADIUS - MIN_LOADED_RADIUS) * 0.5);
  assert.ok(radiusFor(1e-9, 10_000) > MIN_RADIUS, "the least load is still drawn larger than none");
});

test("regions with zones, counts per phase and load", () => {
  const summaries = regionSummaries(SITES, loadBySite([{ origin: "paris", requestsPerSecond: 4 }]));
  assert.deepEqual(summaries.map((r) => r.region), ["eu-west", "us-east"]);
  const eu = summaries[0];
  assert.equal(eu.sites, 2);
  assert.deepEqual(eu.counts, { Ready: 1, Pending: 0, Unreachable: 1 });
  assert.equal(eu.load, 4);
  assert.deepEqual(eu.zones.map((z) => [z.zone, z.sites, z.load]), [
    ["eu-west-fr", 1, 4],
    ["eu-west-uk", 1, 0],
  ]);
});

test("the site filter matches name, region, zone or phase, within a region", () => {
  const names = (list) => list.map((s) => s.metadata.name);
  assert.deepEqual(names(filterSites(SITES, "", null)), ["paris", "london", "boston", "albany"]);
  assert.deepEqual(names(filterSites(SITES, "LON", null)), ["london"]);
  assert.deepEqual(names(filterSites(SITES, "ny", null)), ["albany"]);
  assert.deepEqual(names(filterSites(SITES, "ready", null)), ["paris", "albany"]);
  assert.deepEqual(names(filterSites(SITES, "", "us-east")), ["boston", "albany"]);
  assert.deepEqual(names(filterSites(SITES, "paris", "us-east")), []);
});

test("DNS is asked at the first Ready site of each region by name", () => {
  assert.deepEqual(dnsAskSites(SITES), [
    { region: "eu-west", site: "paris" },
    { region: "us-east", site: "albany" },
  ]);
  assert.deepEqual(dnsAskSites([site("b", "x", "x1", "Pending")]), [{ region: "x", site: null }]);
});

test("apps at a site and demand per region", () => {
  const apps = [
    { metadata: { tenant: "t", name: "b" }, status: { sites: [{ site: "paris", desired: 2, ready: 1, running: 2 }] } },
    { metadata: { tenant: "t", name: "a" }, status: { sites: [{ site: "paris", desired: 1, ready: 1, running: 1, wakeable: true }, { site: "boston", desired: 1 }] } },
  ];
  assert.deepEqual(appsAtSite(apps, "paris").map((r) => [r.name, r.desired, r.wakeable]), [
    ["a", 1, true],
    ["b", 2, false],
  ]);
  const regionOf = new Map(SITES.map((s) => [s.metadata.name, s.spec.region]));
  const byRegion = demandByRegion(
    [
      { origin: "paris", requestsPerSecond: 1, concurrency: 1, dnsPerSecond: 1 },
      { origin: "london", requestsPerSecond: 2, concurrency: 0, dnsPerSecond: 0 },
      { origin: "gone", requestsPerSecond: 5, concurrency: 0, dnsPerSecond: 0 },
    ],
    regionOf,
  );
  assert.deepEqual(byRegion.map((r) => [r.region, r.rps]), [
    ["eu-west", 3],
    ["unknown", 5],
  ]);
});

test("formatting", () => {
  const now = Date.parse("2026-01-01T00:10:00Z");
  assert.equal(relativeTime("2026-01-01T00:09:48Z", now), "12 s ago");
  assert.equal(relativeTime("2026-01-01T00:07:00Z", now), "3 min ago");
  assert.equal(relativeTime("2026-01-01T00:10:02Z", now), "0 s ago");
  assert.equal(relativeTime(null, now), "never");
  assert.equal(loadAttr(1.23456), "1.235");
  assert.equal(loadAttr(0), "0");
  assert.notEqual(loadAttr(0.0004), "0");
  assert.equal(formatPath(["spec", "placement", "selector", "regions", 0]), "spec.placement.selector.regions[0]");
});

test("routes", () => {
  assert.deepEqual(parseRoute(""), { view: "fleet", params: {} });
  assert.deepEqual(parseRoute("#/fleet"), { view: "fleet", params: {} });
  assert.deepEqual(parseRoute("#/apps"), { view: "apps", params: {} });
  assert.deepEqual(parseRoute("#/apps/demo/hello"), { view: "app", params: { tenant: "demo", name: "hello" } });
  assert.deepEqual(parseRoute("#/deploy"), { view: "deploy", params: {} });
  assert.equal(parseRoute("#/nope").view, "missing");
  assert.equal(parseRoute("#content"), null);
  assert.equal(navTarget(parseRoute("#/apps/demo/hello")), "#/apps");
});

test("stream backoff: 1 s doubling to 15 s", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 9].map(backoffDelay), [1000, 2000, 4000, 8000, 15000, 15000, 15000]);
});
