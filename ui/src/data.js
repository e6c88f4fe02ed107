// The fleet-wide data every view shares (sites, apps, demand), fetched from the API once and
// again, coalesced, when the stream says that kind changed; and a small event bus for the
// stream's events, which views use to refresh their own data. Sites are read in pages.

import { sortSites } from "./fleet-model.js";
import { listAll } from "./paging.js";
import { createRefresher } from "./refresh.js";

const PATHS = { sites: "/api/v1/sites", apps: "/api/v1/apps", demand: "/api/v1/demand" };

/** Kinds of shared data, named as the stream's events. */
export const SHARED_KINDS = Object.keys(PATHS);

/** A minimal publish/subscribe bus: `on(name, fn)` returns the unsubscribe function. */
export function createBus() {
  const handlers = new Map();
  return {
    on(name, fn) {
      if (!handlers.has(name)) handlers.set(name, new Set());
      handlers.get(name).add(fn);
      return () => handlers.get(name).delete(fn);
    },
    emit(name, payload) {
      for (const fn of [...(handlers.get(name) || [])]) fn(payload);
    },
  };
}

function normalize(kind, data) {
  if (kind === "sites") return sortSites(uniqueByName(data || []));
  if (kind === "apps") return data?.items || [];
  return Array.isArray(data) ? data : [];
}

/** Sites by name, the last of a name kept (pages read while the fleet changes may overlap). */
function uniqueByName(sites) {
  const byName = new Map();
  for (const site of sites) byName.set(site.metadata.name, site);
  return byName.size === sites.length ? sites : [...byName.values()];
}

/**
 * Shared data over `api`. `use(kind, fn, {partial})` calls fn(value, error, {partial}) now if
 * loaded and on every change, loading it on first use; `changed(kind)` is the stream saying it
 * changed: refetch if anyone looks at it, else refetch on the next use. Errors other than 401
 * (handled by the API client) are passed to listeners; `onError(error)` also hears them.
 *
 * Sites come in pages (paging.js). Until the first list is complete, listeners that asked for
 * `partial` get the sites so far after each page (`{partial: true}`), so the map fills in as
 * they come; a later reload replaces the list only once its last page is in.
 */
export function createFleetData({ api, onError = () => {} }) {
  const values = new Map();
  const errors = new Map();
  const listeners = new Map(SHARED_KINDS.map((k) => [k, new Map()]));
  const stale = new Set(SHARED_KINDS);
  const stop = new AbortController();

  function tell(kind, value, error, partial) {
    for (const [fn, wantsPartial] of [...listeners.get(kind)]) {
      if (!partial || wantsPartial) fn(value, error, { partial });
    }
  }

  async function read(kind) {
    if (kind !== "sites") return api.get(PATHS[kind]);
    const first = !values.has(kind);
    const sofar = [];
    return listAll((url) => api.get(url, { signal: stop.signal }), PATHS.sites, {
      signal: stop.signal,
      onPage: (items, { last }) => {
        if (!first || last) return;
        for (const site of items) sofar.push(site);
        tell(kind, normalize(kind, sofar), null, true);
      },
    });
  }

  const refreshers = new Map(
    SHARED_KINDS.map((kind) => [
      kind,
      createRefresher(async () => {
        try {
          values.set(kind, normalize(kind, await read(kind)));
          errors.delete(kind);
        } catch (error) {
          if (error.status === 401 || error.name === "AbortError") return;
          errors.set(kind, error);
          onError(error);
        }
        tell(kind, values.get(kind) ?? null, errors.get(kind) ?? null, false);
      }),
    ]),
  );

  return {
    use(kind, fn, { partial = false } = {}) {
      listeners.get(kind).set(fn, partial);
      if (values.has(kind) || errors.has(kind)) {
        fn(values.get(kind) ?? null, errors.get(kind) ?? null, { partial: false });
      }
      if (stale.has(kind)) {
        stale.delete(kind);
        refreshers.get(kind).trigger();
      }
      return () => listeners.get(kind).delete(fn);
    },
    changed(kind) {
      if (!refreshers.has(kind)) return;
      if (listeners.get(kind).size > 0) refreshers.get(kind).trigger();
      else stale.add(kind);
    },
    /** The last complete value of a kind, or null before the first answer. */
    get(kind) {
      return values.get(kind) ?? null;
    },
    dispose() {
      stop.abort();
      for (const refresher of refreshers.values()) refresher.dispose();
    },
  };
}
