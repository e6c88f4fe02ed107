// The selected site's details in the fleet view: facts from the site list, replicas from the
// apps' status (and the agent's report, for admins and operators), neighbours and events.

import { ApiError, detailText } from "../api.js";
import { h, preservingFocus, replaceChildren } from "../dom.js";
import { formatBytes, formatCpu, formatLocation, formatRate } from "../format.js";
import { appsAtSite, newestFirst, phaseOf } from "../fleet-model.js";
import { createRefresher } from "../refresh.js";
import { timeAgo } from "../time.js";
import { appHref } from "./apps.js";

const DETAIL_ROLES = new Set(["admin", "operator"]);

function remote() {
  return { loaded: false, value: null, error: null };
}

function table(label, headers, rows) {
  return h(
    "table",
    { "aria-label": label },
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col", text })))),
    h("tbody", {}, rows),
  );
}

function note(text) {
  return h("p", { class: "muted", text });
}

function errorNote(what, error) {
  return h("p", { class: "error-note", text: `${what}: ${detailText(error.detail) || error.message}` });
}

/**
 * Details of site `name` rendered into `container`. `update({site, apps, load})` redraws with
 * new shared data; neighbours, events and replica detail are fetched here and refreshed
 * (coalesced) on the stream's events. `onSelect(name)` selects a neighbour.
 */
export function createSiteDetail(container, ctx, name, { onSelect }) {
  const enc = encodeURIComponent(name);
  const neighbours = remote();
  const events = remote();
  const replicas = remote();
  let shared = { site: null, apps: [], load: null };
  let disposed = false;
  const headingId = `site-detail-heading`;

  function loader(target, path, { skip403 = false } = {}) {
    return createRefresher(async () => {
      try {
        target.value = await ctx.api.get(path);
        target.error = null;
      } catch (error) {
        if (error.status === 401 || !(error instanceof ApiError)) return;
        target.error = skip403 && error.status === 403 ? null : error;
        if (skip403 && error.status === 403) target.value = null;
      }
      target.loaded = true;
      if (!disposed) render();
    });
  }

  const refreshers = {
    neighbours: loader(neighbours, `/api/v1/sites/${enc}/neighbours`),
    events: loader(events, `/api/v1/events?kind=Site&name=${enc}&limit=50`),
    replicas: DETAIL_ROLES.has(ctx.session.role)
      ? loader(replicas, `/api/v1/sites/${enc}/replicas`, { skip403: true })
      : null,
  };
  const all = () => Object.values(refreshers).forEach((r) => r && r.trigger());
  const unsubscribe = [
    ctx.bus.on("ready", all),
    ctx.bus.on("sites", () => {
      refreshers.neighbours.trigger();
      refreshers.replicas?.trigger();
    }),
    ctx.bus.on("apps", () => refreshers.replicas?.trigger()),
    ctx.bus.on("events", () => refreshers.events.trigger()),
  ];
  all();

  function facts(site, load) {
    const status = site.status || {};
    const capacity = site.spec.capacity || {};
    const phase = phaseOf(site);
    const rows = [
      ["Region", site.spec.region],
      ["Zone", site.spec.zone],
      ["Coordinates", formatLocation(site.spec.location)],
      [
        "Phase",
        [
          h("span", { class: "phase", "data-phase": phase, text: phase }),
          status.message ? ` — ${status.message}` : null,
        ],
      ],
      ["Last heartbeat", timeAgo(status.lastHeartbeat)],
      [
        "Capacity",
        `${formatCpu(capacity.cpu)}, ${formatBytes(capacity.memory)} memory, ` +
          `at most ${capacity.maxReplicas ?? "?"} replicas`,
      ],
      ["Load", `${formatRate(load?.rps || 0)} rps, ${formatRate(load?.inFlight || 0)} in flight`],
      ["Driver", site.spec.driver || "process"],
    ];
    return h(
      "dl",
      { class: "facts" },
      rows.map(([term, value]) => [h("dt", { text: term }), h("dd", {}, value)]),
    );
  }

  function replicasPart(site) {
    const rows = appsAtSite(shared.apps, name);
    const status = site.status || {};
    const parts = [
      h("h4", { text: "Replicas" }),
      h("p", {
        text: `${status.readyReplicas ?? 0} ready of ${status.replicas ?? 0} running, all apps.`,
      }),
    ];
    if (rows.length === 0) parts.push(note("No app is placed here."));
    else {
      parts.push(
        table(
          `Apps at ${name}`,
          ["App", "Desired", "Ready", "Running", "Wakes on demand"],
          rows.map((r) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, h("a", { href: appHref(r.tenant, r.name), text: `${r.tenant}/${r.name}` })),
              h("td", { class: "num", text: r.desired }),
              h("td", { class: "num", text: r.ready }),
              h("td", { class: "num", text: r.running }),
              h("td", { text: r.wakeable ? "yes" : "no" }),
            ),
          ),
        ),
      );
    }
    if (refreshers.replicas && replicas.error) parts.push(errorNote("Replica detail unavailable", replicas.error));
    else if (refreshers.replicas && replicas.loaded && replicas.value) {
      const detail = Object.entries(replicas.value).flatMap(([key, list]) =>
        list.map((r) =>
          h(
            "tr",
            {},
            h("td", { text: key }),
            h("th", { scope: "row", text: r.id }),
            h("td", { text: r.state }),
            h("td", { text: r.ready ? "yes" : "no" }),
            h("td", { class: "num", text: r.restarts ?? 0 }),
            h("td", {}, timeAgo(r.startedAt)),
          ),
        ),
      );
      if (detail.length > 0) {
        parts.push(
          table(`Replicas reported by ${name}`, ["App", "Replica", "State", "Ready", "Restarts", "Started"], detail),
        );
      } else parts.push(note("The agent reports no replica."));
    }
    return parts;
  }

  function neighboursPart() {
    const parts = [h("h4", { text: "Neighbours" })];
    if (neighbours.error) parts.push(errorNote("Neighbours unavailable", neighbours.error));
    else if (!neighbours.loaded) parts.push(note("Loading…"));
    else {
      const list = neighbours.value?.neighbours || [];
      if (list.length === 0) parts.push(note("No neighbour."));
      else
        parts.push(
          table(
            `Neighbours of ${name}`,
            ["Site", "Distance", "Estimated RTT", "Phase", "Probe"],
            list.map((n) =>
              h(
                "tr",
                { "data-site": n.site },
                h(
                  "th",
                  { scope: "row" },
                  h("button", {
                    type: "button",
                    class: "link",
                    "data-focus-key": `neighbour:${n.site}`,
                    "data-select-site": n.site,
                    text: n.site,
                  }),
                ),
                h("td", { class: "num", text: `${Math.round(n.distanceKm)} km` }),
                h("td", { class: "num", text: `${formatRate(n.estimatedRttMs)} ms` }),
                h("td", {}, h("span", { class: "phase", "data-phase": n.phase, text: n.phase })),
                h("td", {
                  class: `probe probe-${n.probe ?? "unknown"}`,
                  text: n.probe === "up" ? "up" : n.probe === "down" ? "down" : "not probed",
                }),
              ),
            ),
          ),
        );
    }
    return parts;
  }

  function eventsPart() {
    const parts = [h("h4", { text: "Events" })];
    if (events.error) parts.push(errorNote("Events unavailable", events.error));
    else if (!events.loaded) parts.push(note("Loading…"));
    else if ((events.value || []).length === 0) parts.push(note("No event."));
    else parts.push(eventList(newestFirst(events.value), `Events of site ${name}`));
    return parts;
  }

  function render() {
    const site = shared.site;
    preservingFocus(container, () => {
      if (!site) {
        replaceChildren(
          container,
          h(
            "section",
            { class: "panel site-detail", "aria-labelledby": headingId },
            h("h3", { id: headingId, text: `Site ${name}` }),
            h("div", {
              role: "alert",
              class: "message message-alert",
              text: `Site ${name} is not in the fleet any more.`,
            }),
          ),
        );
        return;
      }
      replaceChildren(
        container,
        h(
          "section",
          { class: "panel site-detail", "aria-labelledby": headingId },
          h("h3", { id: headingId, tabindex: "-1", text: `Site ${name}` }),
          facts(site, shared.load),
          replicasPart(site),
          neighboursPart(),
          eventsPart(),
        ),
      );
    });
  }

  const onClick = (event) => {
    const button = event.target.closest?.("[data-select-site]");
    if (button && container.contains(button)) onSelect(button.getAttribute("data-select-site"));
  };
  container.addEventListener("click", onClick);

  return {
    name,
    update(next) {
      shared = next;
      render();
    },
    /** Move keyboard focus to the details' heading. */
    focus() {
      container.querySelector(`#${headingId}`)?.focus();
    },
    dispose() {
      disposed = true;
      container.removeEventListener("click", onClick);
      unsubscribe.forEach((off) => off());
      Object.values(refreshers).forEach((r) => r && r.dispose());
    },
  };
}

/** Events as a list, newest first as given: time, reason, message; warnings marked. */
export function eventList(events, label) {
  return h(
    "ol",
    { class: "events", "aria-label": label },
    events.map((e) =>
      h(
        "li",
        { class: e.type === "Warning" ? "event warning" : "event" },
        timeAgo(e.time),
        " ",
        h("strong", { class: "reason", text: e.reason }),
        e.type === "Warning" ? h("span", { class: "badge", text: "Warning" }) : null,
        " ",
        h("span", { class: "message", text: e.message }),
      ),
    ),
  );
}
