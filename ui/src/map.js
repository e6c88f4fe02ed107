// The world map: countries drawn once from world-atlas (bundled, never fetched), one circle per
// site updated in place by site name, so a fleet of thousands of sites redraws cheaply.

import { geoNaturalEarth1, geoPath } from "d3-geo";
import { feature } from "topojson-client";
import world from "world-atlas/countries-110m.json";
import { s, setAttr, setText } from "./dom.js";
import { formatRate, loadAttr } from "./format.js";
import { phaseOf, radiusFor } from "./fleet-model.js";
import { recordRender } from "./metrics.js";

const WIDTH = 960;
const HEIGHT = 500;

let geometry = null;

/** The projection and the path strings of the sphere and the countries, computed once. */
function worldGeometry() {
  if (geometry === null) {
    const sphere = { type: "Sphere" };
    const projection = geoNaturalEarth1().fitExtent(
      [
        [4, 4],
        [WIDTH - 4, HEIGHT - 4],
      ],
      sphere,
    );
    // Tenths of a pixel are finer than the screen shows, and make a path a third shorter.
    const path = geoPath(projection).digits(1);
    const countries = feature(world, world.objects.countries);
    geometry = {
      projection,
      sphere: path(sphere),
      countries: countries.features.map((f) => path(f) || "").join(""),
    };
  }
  return geometry;
}

/** The circle's tooltip: "NAME (region/zone): phase, R rps, K replicas". */
export function siteTitle(site, rps) {
  const replicas = site.status?.replicas ?? 0;
  const where = `${site.spec.region}/${site.spec.zone}`;
  return `${site.metadata.name} (${where}): ${phaseOf(site)}, ${formatRate(rps)} rps, ${replicas} replicas`;
}

/**
 * A map element. `onSelect(name)` is called when a site's circle is clicked (one listener on
 * the circles' group). `metricsView` names the view in window.edgefleetMetrics (none: not
 * recorded); `radiusScale` enlarges circles on a map drawn small. Call `update(...)` with the
 * data; only changed attributes are written.
 */
export function createWorldMap({
  onSelect = () => {},
  metricsView = null,
  className = "world-map",
  radiusScale = 1,
} = {}) {
  const group = s("g", { class: "sites" });
  const spherePath = s("path", { class: "sphere" });
  const countriesPath = s("path", { class: "countries" });
  const svg = s(
    "svg",
    {
      class: className,
      role: "img",
      "aria-label": "World map of 0 sites",
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      preserveAspectRatio: "xMidYMid meet",
    },
    spherePath,
    countriesPath,
    group,
  );
  group.addEventListener("click", (event) => {
    const circle = event.target.closest?.("circle.site");
    if (circle) onSelect(circle.getAttribute("data-site"));
  });

  const circles = new Map();
  let rendered = false;
  // Work the countries out while the page waits for the hub's data, not when it has come.
  if (geometry === null) {
    const idle = globalThis.requestIdleCallback || ((fn) => setTimeout(fn, 1));
    idle(() => worldGeometry());
  }

  /**
   * Draw `sites` (objects from the API). `loads`: Map name -> {rps}; `selected`: a site name
   * or null; `highlight(site)`: false dims the circle (a region filter, an app's sites).
   */
  function update(sites, { loads = new Map(), selected = null, highlight = null } = {}) {
    const start = performance.now();
    // The countries are drawn by the first update, so its timing includes them.
    const world = worldGeometry();
    const { projection } = world;
    if (!rendered) {
      spherePath.setAttribute("d", world.sphere);
      countriesPath.setAttribute("d", world.countries);
    }
    let maxLoad = 0;
    for (const load of loads.values()) maxLoad = Math.max(maxLoad, load.rps || 0);
    const seen = new Set();
    const added = document.createDocumentFragment();
    let selectedEl = null;
    for (const site of sites) {
      const name = site.metadata.name;
      seen.add(name);
      let entry = circles.get(name);
      if (!entry) {
        const title = s("title");
        const el = s("circle", { class: "site", "data-site": name }, title);
        added.append(el);
        entry = { el, title, lat: null, lon: null };
        circles.set(name, entry);
      }
      const { lat, lon } = site.spec.location;
      if (entry.lat !== lat || entry.lon !== lon) {
        const [x, y] = projection([lon, lat]) || [-100, -100];
        setAttr(entry.el, "cx", x.toFixed(1));
        setAttr(entry.el, "cy", y.toFixed(1));
        entry.lat = lat;
        entry.lon = lon;
      }
      const rps = loads.get(name)?.rps || 0;
      setAttr(entry.el, "r", radiusFor(rps, maxLoad) * radiusScale);
      setAttr(entry.el, "data-phase", phaseOf(site));
      setAttr(entry.el, "data-load", loadAttr(rps));
      const dimmed = highlight !== null && !highlight(site);
      const cls = `site${name === selected ? " is-selected" : ""}${dimmed ? " is-dimmed" : ""}`;
      setAttr(entry.el, "class", cls);
      setText(entry.title, siteTitle(site, rps));
      if (name === selected) selectedEl = entry.el;
    }
    group.append(added);
    for (const [name, entry] of circles) {
      if (!seen.has(name)) {
        entry.el.remove();
        circles.delete(name);
      }
    }
    // The selected site is drawn last, above its neighbours.
    if (selectedEl && group.lastChild !== selectedEl) group.append(selectedEl);
    setAttr(svg, "aria-label", `World map of ${sites.length} sites`);
    if (metricsView) {
      const kind = rendered ? "update" : "first";
      recordRender({ view: metricsView, sites: sites.length, start, kind });
    }
    rendered = true;
  }

  return { element: svg, update };
}
