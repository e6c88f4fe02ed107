// Pure views of the fleet's data: load per site, region and zone summaries, the site list's
// filter, replicas and demand per region. Plain objects in, plain objects out (node-tested).

export const PHASES = ["Ready", "Pending", "Unreachable"];

/**
 * Load per origin site from demand rows ({origin, requestsPerSecond, concurrency,
 * dnsPerSecond}): Map site -> {rps, inFlight, dns}, summed over apps.
 */
export function loadBySite(demandRows) {
  const loads = new Map();
  for (const row of demandRows || []) {
    const load = loads.get(row.origin) || { rps: 0, inFlight: 0, dns: 0 };
    load.rps += Number(row.requestsPerSecond) || 0;
    load.inFlight += Number(row.concurrency) || 0;
    load.dns += Number(row.dnsPerSecond) || 0;
    loads.set(row.origin, load);
  }
  return loads;
}

export const MIN_RADIUS = 3;
export const MAX_RADIUS = 14;
/** The smallest dot of a site with any load: a busy site never looks like an idle one. */
export const MIN_LOADED_RADIUS = 4;

/**
 * Dot radius for a load: MIN_RADIUS px for none; else a sqrt scale of load/maxLoad from
 * `minRadius` to `maxRadius` px (the dot's area grows with the load). The map passes smaller
 * bounds when it is crowded (map-lod.js).
 */
export function radiusFor(load, maxLoad, { minRadius = MIN_LOADED_RADIUS, maxRadius = MAX_RADIUS } = {}) {
  if (!(maxLoad > 0) || !(load > 0)) return MIN_RADIUS;
  const share = Math.sqrt(Math.min(load, maxLoad) / maxLoad);
  return Math.round((minRadius + (maxRadius - minRadius) * share) * 100) / 100;
}

function emptyCounts() {
  return { Ready: 0, Pending: 0, Unreachable: 0 };
}

/** The phase of a site, "Pending" when the hub gave none. */
export function phaseOf(site) {
  return (site.status && site.status.phase) || "Pending";
}

/**
 * Regions with their zones: [{region, sites, counts, load, zones: [{zone, sites, counts,
 * load}]}], both sorted by name. `counts` is sites per phase, `load` summed rps.
 */
export function regionSummaries(sites, loads) {
  const regions = new Map();
  for (const site of sites) {
    const regionName = site.spec.region;
    const zoneName = site.spec.zone;
    let region = regions.get(regionName);
    if (!region) {
      region = { region: regionName, sites: 0, counts: emptyCounts(), load: 0, zones: new Map() };
      regions.set(regionName, region);
    }
    let zone = region.zones.get(zoneName);
    if (!zone) {
      zone = { zone: zoneName, sites: 0, counts: emptyCounts(), load: 0 };
      region.zones.set(zoneName, zone);
    }
    const phase = phaseOf(site);
    const rps = loads.get(site.metadata.name)?.rps || 0;
    for (const bucket of [region, zone]) {
      bucket.sites += 1;
      bucket.counts[phase] = (bucket.counts[phase] || 0) + 1;
      bucket.load += rps;
    }
  }
  const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  return [...regions.values()]
    .sort((a, b) => byName(a.region, b.region))
    .map((r) => ({ ...r, zones: [...r.zones.values()].sort((a, b) => byName(a.zone, b.zone)) }));
}

/**
 * Sites matching the list's filter: `text` (case-insensitive, in name, region, zone or phase)
 * and `region` (exact; null for all). Keeps the input order.
 */
export function filterSites(sites, text, region) {
  const needle = (text || "").trim().toLowerCase();
  return sites.filter((site) => {
    if (region && site.spec.region !== region) return false;
    if (!needle) return true;
    return (
      site.metadata.name.toLowerCase().includes(needle) ||
      site.spec.region.toLowerCase().includes(needle) ||
      site.spec.zone.toLowerCase().includes(needle) ||
      phaseOf(site).toLowerCase().includes(needle)
    );
  });
}

/**
 * The map's words for a screen reader: "Map of 10000 sites: 9800 ready, 150 pending, 50
 * unreachable", then "; 1200 highlighted" under a filter (`highlighted` not null) and
 * " (loading more)" while pages are still coming. `counts`: sites per phase.
 */
export function mapSummary(total, counts, highlighted = null, loading = false) {
  const known = new Set(PHASES);
  const phases = [...PHASES, ...Object.keys(counts).filter((p) => !known.has(p)).sort()];
  const parts = phases.filter((p) => counts[p] > 0).map((p) => `${counts[p]} ${p.toLowerCase()}`);
  let text = `Map of ${total} ${total === 1 ? "site" : "sites"}`;
  if (parts.length > 0) text += `: ${parts.join(", ")}`;
  if (highlighted !== null) text += `; ${highlighted} highlighted`;
  if (loading) text += " (loading more)";
  return text;
}

/** Sites sorted by name (the list's and the map's stable order). */
export function sortSites(sites) {
  return [...sites].sort((a, b) =>
    a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0,
  );
}

/**
 * The apps placed at one site, from the apps' status.sites: [{tenant, name, desired, ready,
 * running, wakeable}] sorted by tenant/name.
 */
export function appsAtSite(apps, siteName) {
  const rows = [];
  for (const app of apps || []) {
    for (const share of app.status?.sites || []) {
      if (share.site !== siteName) continue;
      rows.push({
        tenant: app.metadata.tenant,
        name: app.metadata.name,
        desired: share.desired || 0,
        ready: share.ready || 0,
        running: share.running || 0,
        wakeable: Boolean(share.wakeable),
      });
    }
  }
  return rows.sort((a, b) => {
    const ka = `${a.tenant}/${a.name}`;
    const kb = `${b.tenant}/${b.name}`;
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });
}

/**
 * An app's demand grouped by the region of each origin site: [{region, rps, inFlight, dns}]
 * sorted by region; origins the site list does not know go under "unknown".
 */
export function demandByRegion(demandRows, regionOfSite) {
  const regions = new Map();
  for (const row of demandRows || []) {
    const region = regionOfSite.get(row.origin) || "unknown";
    const sum = regions.get(region) || { region, rps: 0, inFlight: 0, dns: 0 };
    sum.rps += Number(row.requestsPerSecond) || 0;
    sum.inFlight += Number(row.concurrency) || 0;
    sum.dns += Number(row.dnsPerSecond) || 0;
    regions.set(region, sum);
  }
  return [...regions.values()].sort((a, b) => (a.region < b.region ? -1 : 1));
}

/**
 * Where to ask the DNS for each region: the first Ready site of the region by name, or
 * null when the region has none. [{region, site}] sorted by region.
 */
export function dnsAskSites(sites) {
  const chosen = new Map();
  for (const site of sortSites(sites)) {
    const region = site.spec.region;
    if (!chosen.has(region)) chosen.set(region, null);
    if (chosen.get(region) === null && phaseOf(site) === "Ready") {
      chosen.set(region, site.metadata.name);
    }
  }
  return [...chosen.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : 1))
    .map(([region, site]) => ({ region, site }));
}

/** Events newest first (the API lists them oldest first). */
export function newestFirst(events) {
  return [...(events || [])].reverse();
}
