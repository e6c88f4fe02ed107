// The fleet-wide data every view shares (sites, apps, demand), fetched from the API once and
// again, coalesced, when the stream says that kind changed; and a small event bus for the
// stream's events, which views use to refresh their own data.

import { sortSites } from "./fleet-model.js";
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
  if (kind === "sites") return sortSites(data?.items || []);
  if (kind === "apps") return data?.items || [];
  return Array.isArray(data) ? data : [];
}

/**
 * Shared data over `api`. `use(kind, fn)` calls fn(value, error) now if loaded and on every
 * change, loading it on first use; `changed(kind)` is the stream saying it changed: refetch
 * if anyone looks at it, else refetch on the next use. Errors other than 401 (handled by the
 * API client) are passed to listeners; `onError(error)` also hears them.
 */
export function createFleetData({ api, onError = () => {} }) {
  const values = new Map();
  const errors = new Map();
  const listeners = new Map(SHARED_KINDS.map((k) => [k, new Set()]));
  const stale = new Set(SHARED_KINDS);
  const refreshers = new Map(
    SHARED_KINDS.map((kind) => [
      kind,
      createRefresher(async () => {
        try {
          values.set(kind, normalize(kind, await api.get(PATHS[kind])));
          errors.delete(kind);
        } catch (error) {
          if (error.status === 401) return;
          errors.set(kind, error);
          onError(error);
        }
        for (const fn of [...listeners.get(kind)]) fn(values.get(kind) ?? null, errors.get(kind) ?? null);
      }),
    ]),
  );

  return {
    use(kind, fn) {
      listeners.get(kind).add(fn);
      if (values.has(kind) || errors.has(kind)) fn(values.get(kind) ?? null, errors.get(kind) ?? null);
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
    /** The last value of a kind, or null before the first answer. */
    get(kind) {
      return values.get(kind) ?? null;
    },
    dispose() {
      for (const refresher of refreshers.values()) refresher.dispose();
    },
  };
}
