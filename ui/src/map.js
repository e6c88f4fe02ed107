// The world map: countries as SVG, projected once from world-atlas (bundled, never fetched);
// sites as dots on a canvas above them, so ten thousand sites cost one bitmap, not ten thousand
// elements. Each site's projected point is kept by name and recomputed only when it moves; a
// change redraws only around the dots it touched (map-lod.js decides); the pointer finds its
// dot through a grid (point-grid.js).

import { geoNaturalEarth1, geoPath } from "d3-geo";
import { feature } from "topojson-client";
import world from "world-atlas/countries-110m.json";
import { h, s, setAttr, setText } from "./dom.js";
import { PHASES, mapSummary, phaseOf, radiusFor } from "./fleet-model.js";
import { formatRate } from "./format.js";
import { detailLevel, dotGroup, drawOrder, phaseIndex, redrawPlan } from "./map-lod.js";
import { recordRender } from "./metrics.js";
import { createPointGrid, discsInRect, hitTest } from "./point-grid.js";

const WIDTH = 960;
const HEIGHT = 500;
const TAU = 2 * Math.PI;
/** CSS px beyond a dot's radius that its painting may reach: half a 3 px ring, anti-aliasing. */
const RING = 3;
/** How far (CSS px) outside a dot the pointer still hits it. */
const SLOP = { mouse: 3, pen: 3, touch: 10 };

// A dot's style, one small number: its phase (PHASES index), and flags.
const DIMMED = 4;
const OUTLINED = 8;
const SELECTED = 16;

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

/** The dot's tooltip: "NAME (region/zone): phase, R rps, K replicas". */
export function siteTitle(site, rps) {
  const replicas = site.status?.replicas ?? 0;
  const where = `${site.spec.region}/${site.spec.zone}`;
  return `${site.metadata.name} (${where}): ${phaseOf(site)}, ${formatRate(rps)} rps, ${replicas} replicas`;
}

/** "#1f8a4c" and an opacity as "rgba(31, 138, 76, 0.85)"; other colours as given. */
function withAlpha(color, alpha) {
  const hex = /^#([0-9a-f]{6})$/i.exec(color.trim());
  if (!hex) return color;
  const n = Number.parseInt(hex[1], 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/** Fill and stroke of every style number, from the page's phase colours (app.css). */
function paletteOf(element) {
  const css = getComputedStyle(element);
  const base = PHASES.map((phase) => css.getPropertyValue(`--${phase.toLowerCase()}`) || "#7a818c");
  const palette = [];
  for (let style = 0; style < 32; style += 1) {
    const color = base[style & 3] || base[1];
    const dimmed = style & DIMMED;
    const selected = style & SELECTED;
    palette.push({
      fill: withAlpha(color, selected ? 1 : dimmed ? 0.15 : 0.85),
      stroke: selected ? "#111" : dimmed ? "rgba(255, 255, 255, 0.2)" : "#fff",
      lineWidth: selected ? 3 : 1,
      ringed: Boolean(selected || style & OUTLINED),
    });
  }
  return palette;
}

/**
 * A map element. `onSelect(name)` is called when a site's dot is clicked (none: dots are not
 * clickable). `metricsView` names the view in window.edgefleetMetrics (none: not recorded).
 * Call `update(...)` with the data; `dispose()` when the map leaves the page.
 *
 * For tests and benchmarks the canvas carries `data-drawn` (dots drawn) and `mapModel`:
 * `site(name)` and `sites()` give {name, x, y, r, phase, load, dimmed, selected} in CSS px
 * from the canvas's top left corner, `at(x, y)` the name of the site a click there opens,
 * `lastPaint` how the last change was drawn ("full", "dirty": around what changed, "none").
 */
export function createWorldMap({ onSelect = null, metricsView = null, className = "world-map" } = {}) {
  const spherePath = s("path", { class: "sphere" });
  const countriesPath = s("path", { class: "countries" });
  const svg = s(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "xMidYMid meet", "aria-hidden": "true" },
    spherePath,
    countriesPath,
  );
  const canvas = h("canvas", { class: "sites", role: "img", "aria-label": mapSummary(0, {}) });
  const tooltip = h("div", { class: "map-tooltip", role: "tooltip", hidden: true });
  const element = h("div", { class: className }, svg, canvas, tooltip);
  const context = canvas.getContext("2d", { alpha: true });
  /** Where an area is redrawn before it is copied onto the canvas (paintAreas). */
  const scratch = document.createElement("canvas");
  const scratchContext = scratch.getContext("2d");

  /** Projected points by site name, in map units (WIDTH x HEIGHT): {lat, lon, x, y}. */
  const projected = new Map();
  let countriesDrawn = false;
  let rendered = false;
  let palette = null;
  let input = null;
  /** What the canvas shows: dots in draw order, in CSS px. */
  let frame = null;
  /** How the last render brought the canvas up to date: "full", "dirty" or "none". */
  let lastPaint = "none";

  // Work the countries out while the page waits for the hub's data, not when it has come.
  if (geometry === null) {
    const idle = globalThis.requestIdleCallback || ((fn) => setTimeout(fn, 1));
    idle(() => worldGeometry());
  }

  /** The canvas's size now: CSS px, device pixel ratio, and where the map sits in it. */
  function measure() {
    const box = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const k = Math.min(box.width / WIDTH, box.height / HEIGHT);
    return {
      width: box.width,
      height: box.height,
      dpr,
      k,
      ox: (box.width - WIDTH * k) / 2,
      oy: (box.height - HEIGHT * k) / 2,
    };
  }

  /** The dots of `sites` for a canvas of `size`, in draw order. */
  function layout(sites, { loads, selected, highlight }, size) {
    const { projection } = worldGeometry();
    const n = sites.length;
    const { idleRadius, outline, ...loadedRadii } = detailLevel(n, size.width);
    let maxLoad = 0;
    for (const load of loads.values()) maxLoad = Math.max(maxLoad, load.rps || 0);
    const groups = new Uint8Array(n);
    const loadOf = new Float64Array(n);
    const styleOf = new Uint8Array(n);
    const counts = {};
    let highlighted = highlight === null ? null : 0;
    for (let i = 0; i < n; i += 1) {
      const site = sites[i];
      const name = site.metadata.name;
      const phase = phaseOf(site);
      counts[phase] = (counts[phase] || 0) + 1;
      const rps = loads.get(name)?.rps || 0;
      const lit = highlight === null || highlight(site);
      if (highlight !== null && lit) highlighted += 1;
      const isSelected = name === selected;
      const dimmed = !lit && !isSelected;
      loadOf[i] = rps;
      groups[i] = dotGroup({ phase, loaded: rps > 0, dimmed, selected: isSelected });
      styleOf[i] =
        phaseIndex(phase) |
        (dimmed ? DIMMED : 0) |
        (rps > 0 || outline ? OUTLINED : 0) |
        (isSelected ? SELECTED : 0);
    }
    const order = drawOrder(groups, loadOf, n);
    const dots = {
      count: 0,
      names: [],
      sites: [],
      xs: new Float32Array(n),
      ys: new Float32Array(n),
      rs: new Float32Array(n),
      styles: new Uint8Array(n),
      groups: new Uint8Array(n),
      loads: new Float64Array(n),
      byName: new Map(),
      size,
      counts,
      highlighted,
      grid: null,
    };
    for (const i of order) {
      const site = sites[i];
      const name = site.metadata.name;
      const { lat, lon } = site.spec.location || {};
      let point = projected.get(name);
      if (!point || point.lat !== lat || point.lon !== lon) {
        const xy = Number.isFinite(lat) && Number.isFinite(lon) ? projection([lon, lat]) : null;
        point = { lat, lon, x: xy ? xy[0] : Number.NaN, y: xy ? xy[1] : Number.NaN };
        projected.set(name, point);
      }
      if (!Number.isFinite(point.x) || !Number.isFinite(point.y)) continue;
      const j = dots.count;
      dots.count += 1;
      const rps = loadOf[i];
      dots.names.push(name);
      dots.sites.push(site);
      dots.xs[j] = size.ox + point.x * size.k;
      dots.ys[j] = size.oy + point.y * size.k;
      dots.rs[j] = rps > 0 ? radiusFor(rps, maxLoad, loadedRadii) : idleRadius;
      dots.styles[j] = styleOf[i];
      dots.groups[j] = groups[i];
      dots.loads[j] = rps;
      dots.byName.set(name, j);
    }
    // Forget the points of sites that went away.
    if (projected.size > n) {
      const present = new Set(sites.map((site) => site.metadata.name));
      for (const name of projected.keys()) if (!present.has(name)) projected.delete(name);
    }
    dots.grid = createPointGrid(dots.xs, dots.ys, dots.rs, { count: dots.count });
    return dots;
  }

  /**
   * Draw the dots `list[0 .. length)` of `dots` (indexes in draw order) on `ctx`, one path
   * each: in Chromium that is faster than one path of thousands of circles, and a dot comes out
   * the same pixels whatever else is drawn with it, which redrawing an area relies on.
   */
  function paint(ctx, dots, list, length) {
    const { xs, ys, rs, styles } = dots;
    let style = -1;
    let look = null;
    for (let j = 0; j < length; j += 1) {
      const i = list[j];
      if (styles[i] !== style) {
        style = styles[i];
        look = palette[style];
        ctx.fillStyle = look.fill;
        ctx.strokeStyle = look.stroke;
        ctx.lineWidth = look.lineWidth;
      }
      ctx.beginPath();
      ctx.arc(xs[i], ys[i], rs[i], 0, TAU);
      ctx.fill();
      if (look.ringed) ctx.stroke();
    }
  }

  function paintAll(dots) {
    const { width, height, dpr } = dots.size;
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (width > 0 && height > 0) paint(context, dots, identity(dots.count), dots.count);
  }

  /**
   * The dots that differ between two frames (added, removed, moved, resized, restyled or
   * reordered): how many, and the areas (CSS px, [left, top, right, bottom]) they covered
   * before and cover now.
   */
  function changes(before, after) {
    const areas = [];
    let changed = 0;
    const around = (dots, j) => {
      const r = dots.rs[j] + RING;
      areas.push([dots.xs[j] - r, dots.ys[j] - r, dots.xs[j] + r, dots.ys[j] + r]);
    };
    for (let j = 0; j < after.count; j += 1) {
      const was = before.byName.get(after.names[j]);
      if (was === undefined) {
        changed += 1;
        around(after, j);
        continue;
      }
      const same =
        before.xs[was] === after.xs[j] &&
        before.ys[was] === after.ys[j] &&
        before.rs[was] === after.rs[j] &&
        before.styles[was] === after.styles[j] &&
        before.groups[was] === after.groups[j] &&
        // Loaded dots are ordered by load: a new load may put one above another.
        (after.loads[j] === 0 || before.loads[was] === after.loads[j]);
      if (!same) {
        changed += 1;
        around(before, was);
        around(after, j);
      }
    }
    for (let j = 0; j < before.count; j += 1) {
      if (!after.byName.has(before.names[j])) {
        changed += 1;
        around(before, j);
      }
    }
    return { changed, areas };
  }

  /**
   * Redraw each area (widened to whole device pixels): the dots that reach into it are drawn
   * on a scratch canvas a few pixels larger than the area, and the area's pixels copied from
   * it. Not clipped in place: a circle cut by a clip gets other anti-aliasing along the cut
   * than when drawn whole, and the copy must be pixel for pixel what a full redraw draws.
   */
  function paintAreas(dots, areas) {
    const { dpr } = dots.size;
    // Room on the scratch canvas for the whole of every dot that reaches into the area: a
    // circle cut by the canvas's edge is anti-aliased otherwise, rows away from the cut.
    const margin = Math.ceil((2 * dots.grid.maxR + 2 * RING) * dpr);
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.imageSmoothingEnabled = false;
    for (const [left, top, right, bottom] of areas) {
      const x0 = Math.max(0, Math.floor(left * dpr));
      const y0 = Math.max(0, Math.floor(top * dpr));
      const x1 = Math.min(canvas.width, Math.ceil(right * dpr));
      const y1 = Math.min(canvas.height, Math.ceil(bottom * dpr));
      if (x1 <= x0 || y1 <= y0) continue;
      const width = x1 - x0 + 2 * margin;
      const height = y1 - y0 + 2 * margin;
      if (scratch.width < width) scratch.width = width;
      if (scratch.height < height) scratch.height = height;
      scratchContext.setTransform(1, 0, 0, 1, 0, 0);
      scratchContext.clearRect(0, 0, width, height);
      // Whole device pixels apart from the canvas's own transform: the same anti-aliasing.
      scratchContext.setTransform(dpr, 0, 0, dpr, margin - x0, margin - y0);
      const list = discsInRect(dots.grid, x0 / dpr - RING, y0 / dpr - RING, x1 / dpr + RING, y1 / dpr + RING);
      paint(scratchContext, dots, list, list.length);
      context.clearRect(x0, y0, x1 - x0, y1 - y0);
      context.drawImage(scratch, margin, margin, x1 - x0, y1 - y0, x0, y0, x1 - x0, y1 - y0);
    }
  }

  /** Bring the canvas to `input`'s data; returns the number of dots drawn. */
  function render() {
    const size = measure();
    const pixels = [Math.round(size.width * size.dpr), Math.round(size.height * size.dpr)];
    const resized = canvas.width !== pixels[0] || canvas.height !== pixels[1];
    if (resized) [canvas.width, canvas.height] = pixels;
    if (palette === null) palette = paletteOf(element);
    const dots = layout(input.sites, input, size);
    const before = frame;
    frame = dots;
    if (resized || before === null || before.size.dpr !== size.dpr || before.size.k !== size.k) {
      lastPaint = "full";
    } else {
      const { changed, areas } = changes(before, dots);
      lastPaint = redrawPlan(changed, dots.count);
      if (lastPaint === "dirty") paintAreas(dots, areas);
    }
    if (lastPaint === "full") paintAll(dots);
    setAttr(canvas, "data-drawn", dots.count);
    const summary = mapSummary(input.sites.length, dots.counts, dots.highlighted, input.loading);
    setAttr(canvas, "aria-label", summary);
    return dots.count;
  }

  /**
   * Draw `sites` (objects from the API). `loads`: Map name -> {rps}; `selected`: a site name
   * or null; `highlight(site)`: false dims the dot (a region filter, an app's sites);
   * `loading`: more pages of sites are coming (the render is timed as a "page").
   */
  function update(sites, { loads = new Map(), selected = null, highlight = null, loading = false } = {}) {
    const start = performance.now();
    // The countries are drawn by the first update, so its timing includes them.
    if (!countriesDrawn) {
      const geo = worldGeometry();
      spherePath.setAttribute("d", geo.sphere);
      countriesPath.setAttribute("d", geo.countries);
      countriesDrawn = true;
    }
    input = { sites, loads, selected, highlight, loading };
    const drawn = render();
    if (hovered !== null) showTooltip(hovered);
    if (metricsView) {
      const kind = !rendered ? "first" : loading ? "page" : "update";
      recordRender({ view: metricsView, sites: drawn, start, kind });
    }
    rendered = true;
  }

  // -- the pointer ------------------------------------------------------------------------

  /** The pointer's last place on the canvas (CSS px) while over it, else null. */
  let hovered = null;
  let hoverFrame = 0;

  function siteAt(x, y, pointerType = "mouse") {
    if (frame === null) return -1;
    return hitTest(frame.grid, x, y, SLOP[pointerType] ?? SLOP.mouse);
  }

  function showTooltip(place) {
    const j = siteAt(place.x, place.y, place.type);
    canvas.classList.toggle("is-pointing", j >= 0 && onSelect !== null);
    if (j < 0) {
      tooltip.hidden = true;
      return;
    }
    setText(tooltip, siteTitle(frame.sites[j], frame.loads[j]));
    // Beside the dot, on the side with room.
    const left = frame.xs[j] > frame.size.width * 0.65;
    tooltip.classList.toggle("is-left", left);
    tooltip.style.left = `${frame.xs[j] + (left ? -1 : 1) * (frame.rs[j] + 6)}px`;
    tooltip.style.top = `${frame.ys[j]}px`;
    tooltip.hidden = false;
  }

  canvas.addEventListener("pointermove", (event) => {
    hovered = { x: event.offsetX, y: event.offsetY, type: event.pointerType };
    if (hoverFrame === 0) {
      hoverFrame = requestAnimationFrame(() => {
        hoverFrame = 0;
        if (hovered !== null) showTooltip(hovered);
      });
    }
  });
  canvas.addEventListener("pointerleave", () => {
    hovered = null;
    tooltip.hidden = true;
    canvas.classList.remove("is-pointing");
  });
  // A click's coordinates are whole pixels, its pointerdown's are not; with dots a pixel or
  // two apart, the click opens the dot under the pointer where it went down.
  let pressed = null;
  canvas.addEventListener("pointerdown", (event) => {
    pressed = { x: event.offsetX, y: event.offsetY, type: event.pointerType };
  });
  canvas.addEventListener("click", (event) => {
    const near =
      pressed !== null && Math.abs(pressed.x - event.offsetX) <= 1 && Math.abs(pressed.y - event.offsetY) <= 1;
    const place = near ? pressed : { x: event.offsetX, y: event.offsetY, type: event.pointerType };
    pressed = null;
    const j = siteAt(place.x, place.y, place.type);
    if (j >= 0 && onSelect !== null) onSelect(frame.names[j]);
  });

  // -- size and pixel ratio ----------------------------------------------------------------

  let lastDpr = window.devicePixelRatio || 1;
  const resized = new ResizeObserver(() => {
    if (input === null || frame === null) return;
    const size = measure();
    if (size.width !== frame.size.width || size.height !== frame.size.height) render();
  });
  resized.observe(canvas);
  // Zooming or moving the window to another screen changes the pixel ratio, maybe not the size.
  let ratioQuery = null;
  function watchRatio() {
    ratioQuery?.removeEventListener("change", onRatio);
    ratioQuery = matchMedia(`(resolution: ${lastDpr}dppx)`);
    ratioQuery.addEventListener("change", onRatio);
  }
  function onRatio() {
    lastDpr = window.devicePixelRatio || 1;
    watchRatio();
    if (input !== null) render();
  }
  watchRatio();

  function describe(j) {
    return {
      name: frame.names[j],
      x: frame.xs[j],
      y: frame.ys[j],
      r: frame.rs[j],
      phase: phaseOf(frame.sites[j]),
      load: frame.loads[j],
      dimmed: Boolean(frame.styles[j] & DIMMED),
      selected: Boolean(frame.styles[j] & SELECTED),
    };
  }
  canvas.mapModel = {
    site(name) {
      const j = frame?.byName.get(name);
      return j === undefined ? null : describe(j);
    },
    sites() {
      return frame === null ? [] : frame.names.map((_, j) => describe(j));
    },
    at(x, y) {
      const j = siteAt(x, y);
      return j < 0 ? null : frame.names[j];
    },
    get lastPaint() {
      return lastPaint;
    },
  };

  return {
    element,
    update,
    dispose() {
      resized.disconnect();
      ratioQuery?.removeEventListener("change", onRatio);
      if (hoverFrame !== 0) cancelAnimationFrame(hoverFrame);
    },
  };
}

const identities = new Map();

/** 0, 1, ..., n - 1 (kept: a full redraw of the same number of dots reuses it). */
function identity(n) {
  let list = identities.get(n);
  if (!list) {
    identities.clear();
    list = new Int32Array(n);
    for (let i = 0; i < n; i += 1) list[i] = i;
    identities.set(n, list);
  }
  return list;
}
