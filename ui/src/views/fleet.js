// The fleet view (#/fleet): the world map of sites, regions and zones, the site list and the
// selected site's details. Shared data updates the map and the list in place.

import { detailText } from "../api.js";
import { h, preservingFocus, replaceChildren, setAttr, setText, showMessage } from "../dom.js";
import { formatRate } from "../format.js";
import { PHASES, filterSites, loadBySite, phaseOf, regionSummaries } from "../fleet-model.js";
import { createWorldMap } from "../map.js";
import { createSiteDetail } from "./site-detail.js";

/** Most rows the site list draws at once: thousands of rows would stall the page. */
export const MAX_ROWS = 200;

function plural(count, word) {
  return `${count} ${count === 1 ? word : `${word}s`}`;
}

function countsText(counts) {
  const parts = PHASES.filter((p) => counts[p] > 0).map((p) => `${counts[p]} ${p}`);
  return parts.join(", ") || "no site";
}

/** Mount the fleet view into `container`; returns the function that unmounts it. */
export function mountFleet(container, ctx) {
  let sites = null;
  /** More pages of the first site list are still coming. */
  let loadingMore = false;
  let sitesError = null;
  let loads = new Map();
  let demandError = null;
  let apps = [];
  let selected = null;
  let region = null;
  let filterText = "";
  let detail = null;

  const map = createWorldMap({ onSelect: select, metricsView: "fleet" });
  const mapNote = h("p", { class: "muted map-note" });
  const sitesAlert = h("div", { class: "message-slot" });
  const regionsBody = h("div", { class: "regions-body" });
  const filterInput = h("input", {
    id: "site-filter",
    type: "search",
    autocomplete: "off",
    spellcheck: "false",
  });
  const countText = h("p", { id: "site-count", class: "muted" });
  const tbody = h("tbody");
  const detailSlot = h("div", { class: "detail-slot" });
  const rows = new Map();

  replaceChildren(
    container,
    h("h2", { id: "view-heading", tabindex: "-1", text: "Fleet" }),
    sitesAlert,
    h(
      "div",
      { class: "fleet-grid" },
      h(
        "section",
        { class: "panel map-panel", "aria-labelledby": "map-heading" },
        h("h3", { id: "map-heading", text: "Map" }),
        h("div", { class: "map-frame" }, map.element),
        legend(),
        mapNote,
      ),
      h(
        "section",
        { class: "panel regions-panel", "aria-labelledby": "regions-heading" },
        h("h3", { id: "regions-heading", text: "Regions and zones" }),
        regionsBody,
      ),
      h(
        "section",
        { class: "panel list-panel", "aria-labelledby": "sites-heading" },
        h("h3", { id: "sites-heading", text: "Sites" }),
        h(
          "div",
          { class: "filter" },
          h("label", { for: "site-filter", text: "Filter sites" }),
          filterInput,
        ),
        countText,
        h(
          "div",
          { class: "table-scroll" },
          h(
            "table",
            { "aria-label": "Sites", class: "sites-table" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Name", "Region", "Zone", "Phase", "Replicas (ready/total)", "Load"].map((text) =>
                  h("th", { scope: "col", text }),
                ),
              ),
            ),
            tbody,
          ),
        ),
      ),
      detailSlot,
    ),
  );
  renderDetailPlaceholder();

  filterInput.addEventListener("input", () => {
    filterText = filterInput.value;
    renderList();
  });
  tbody.addEventListener("click", (event) => {
    const button = event.target.closest?.("button[data-site]");
    if (button) select(button.getAttribute("data-site"));
  });
  regionsBody.addEventListener("click", (event) => {
    const button = event.target.closest?.("button[data-region]");
    if (!button) return;
    const value = button.getAttribute("data-region");
    region = value === "" ? null : value;
    renderAll();
  });

  /** Select a site: ring it on the map, mark it in the list, show its details at once. */
  function select(name, { focusDetail = false } = {}) {
    if (selected === name) return;
    selected = name;
    detail?.dispose();
    detail = createSiteDetail(detailSlot, ctx, name, {
      // A neighbour chosen in the details replaces them: keep the keyboard in the new ones.
      onSelect: (next) => select(next, { focusDetail: true }),
    });
    renderMap();
    renderList();
    renderDetail();
    if (focusDetail) detail.focus();
  }

  function renderDetailPlaceholder() {
    replaceChildren(
      detailSlot,
      h(
        "section",
        { class: "panel site-detail", "aria-labelledby": "site-detail-empty" },
        h("h3", { id: "site-detail-empty", text: "Site details" }),
        h("p", { class: "muted", text: "Select a site on the map or in the list." }),
      ),
    );
  }

  function renderMap() {
    if (!sites) return;
    map.update(sites, {
      loads,
      selected,
      highlight: region === null ? null : (site) => site.spec.region === region,
      loading: loadingMore,
    });
    setText(mapNote, demandError ? `Load unknown: ${detailText(demandError.detail) || demandError.message}` : "");
  }

  function renderRegions() {
    if (!sites) return;
    const summaries = regionSummaries(sites, loads);
    preservingFocus(regionsBody, () => {
      replaceChildren(
        regionsBody,
        h("button", {
          type: "button",
          class: "region-all",
          "data-region": "",
          "data-focus-key": "region:",
          "aria-pressed": String(region === null),
          text: "All regions",
        }),
        h(
          "ul",
          { class: "regions" },
          summaries.map((r) =>
            h(
              "li",
              { class: r.region === region ? "is-active" : null },
              h(
                "div",
                { class: "region-line" },
                h("button", {
                  type: "button",
                  "data-region": r.region,
                  "data-focus-key": `region:${r.region}`,
                  "aria-pressed": String(r.region === region),
                  text: r.region,
                }),
                h("span", {
                  class: "muted",
                  text: ` ${plural(r.sites, "site")}: ${countsText(r.counts)}; ${formatRate(r.load)} rps`,
                }),
              ),
              h(
                "ul",
                { class: "zones" },
                r.zones.map((z) =>
                  h("li", {
                    text: `${z.zone}: ${plural(z.sites, "site")} (${countsText(z.counts)}), ${formatRate(z.load)} rps`,
                  }),
                ),
              ),
            ),
          ),
        ),
      );
    });
  }

  function row(name) {
    let entry = rows.get(name);
    if (!entry) {
      const button = h("button", { type: "button", class: "link", "data-site": name, text: name });
      const cells = [h("td"), h("td"), h("td"), h("td", { class: "num" }), h("td", { class: "num" })];
      const phase = h("span", { class: "phase" });
      cells[2].append(phase);
      const tr = h("tr", { "data-site": name }, h("th", { scope: "row" }, button), cells);
      entry = { tr, button, cells, phase };
      rows.set(name, entry);
    }
    return entry;
  }

  function renderList() {
    if (!sites) return;
    const matching = filterSites(sites, filterText, region);
    const shown = matching.slice(0, MAX_ROWS);
    const keep = new Set();
    let previous = null;
    for (const site of shown) {
      const name = site.metadata.name;
      keep.add(name);
      const entry = row(name);
      const status = site.status || {};
      const phase = phaseOf(site);
      setText(entry.cells[0], site.spec.region);
      setText(entry.cells[1], site.spec.zone);
      setText(entry.phase, phase);
      setAttr(entry.phase, "data-phase", phase);
      setText(entry.cells[3], `${status.readyReplicas ?? 0}/${status.replicas ?? 0}`);
      setText(entry.cells[4], `${formatRate(loads.get(name)?.rps || 0)} rps`);
      setAttr(entry.button, "aria-pressed", String(name === selected));
      setAttr(entry.tr, "class", name === selected ? "is-selected" : "");
      const expected = previous ? previous.nextSibling : tbody.firstChild;
      if (expected !== entry.tr) tbody.insertBefore(entry.tr, expected);
      previous = entry.tr;
    }
    for (const [name, entry] of rows) {
      if (!keep.has(name)) {
        entry.tr.remove();
        rows.delete(name);
      }
    }
    const filtered = matching.length !== sites.length;
    setText(
      countText,
      `showing ${shown.length} of ${matching.length}` +
        (filtered ? ` (of ${sites.length} sites in all)` : "") +
        (loadingMore ? ", more loading" : ""),
    );
  }

  function renderDetail() {
    if (!detail || !sites) return;
    const site = sites.find((s) => s.metadata.name === selected) || null;
    detail.update({ site, apps, load: loads.get(selected) || null });
  }

  let panelsDue = false;
  let unmounted = false;

  /**
   * Redraw the map now and the panels (regions, list, details) just after the map is painted:
   * the map shows a frame sooner, and several changes in one frame redraw the panels once.
   */
  function renderAll() {
    renderMap();
    if (panelsDue) return;
    panelsDue = true;
    requestAnimationFrame(() =>
      setTimeout(() => {
        panelsDue = false;
        if (unmounted) return;
        renderRegions();
        renderList();
        renderDetail();
      }, 0),
    );
  }

  const unsubscribe = [
    ctx.data.use(
      "sites",
      (value, error, { partial }) => {
        sitesError = error;
        if (value) sites = value;
        loadingMore = partial;
        showMessage(
          sitesAlert,
          "alert",
          sitesError && sitesError.status !== 0
            ? `Could not read the sites: ${detailText(sitesError.detail) || sitesError.message}`
            : null,
        );
        renderAll();
      },
      { partial: true },
    ),
    ctx.data.use("demand", (value, error) => {
      demandError = error;
      loads = loadBySite(value || []);
      renderAll();
    }),
    ctx.data.use("apps", (value) => {
      apps = value || [];
      renderDetail();
    }),
  ];

  return () => {
    unmounted = true;
    unsubscribe.forEach((off) => off());
    detail?.dispose();
    map.dispose();
  };
}

function legend() {
  return h(
    "ul",
    { class: "legend", "aria-label": "Map legend" },
    PHASES.map((phase) =>
      h(
        "li",
        {},
        h("span", { class: "swatch", "data-phase": phase, "aria-hidden": "true" }),
        ` ${phase}`,
      ),
    ),
    h("li", { class: "muted", text: "Dot size: requests per second from clients near the site" }),
  );
}
