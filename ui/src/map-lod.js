// The map's level of detail and draw order: how big dots are for how crowded the map is,
// whether they get an outline, which dot goes above which, and whether a change redraws the
// whole canvas or only around what changed. Pure (node-tested).

import { MAX_RADIUS, MIN_LOADED_RADIUS, MIN_RADIUS, PHASES } from "./fleet-model.js";

/** The smallest idle dot: still a visible dot on any screen. */
export const MIN_IDLE_RADIUS = 1.5;
/** Map area (CSS px²) per site at which idle dots start to shrink below MIN_RADIUS. */
export const ROOMY_AREA = 420;
/** The map's height per unit of width, as map.js projects it (960 x 500). */
const ASPECT = 500 / 960;

/** The largest a loaded dot gets on a crowded map: its load still shows, its neighbours too. */
export const CROWDED_MAX_RADIUS = 6;
/** How much bigger the least loaded dot is than an idle one, at least. */
export const LOADED_MARGIN = 1;

/**
 * How sites are drawn on a map `width` CSS px wide showing `count` of them. While each site
 * has ROOMY_AREA px² of map or more, dots have their full sizes (fleet-model.js); below that
 * they shrink with the square root of the area per site, in quarter pixels: `idleRadius` from
 * MIN_RADIUS down to MIN_IDLE_RADIUS; a loaded dot's `minRadius` from MIN_LOADED_RADIUS down
 * to LOADED_MARGIN above the idle one, its `maxRadius` (the most load's) from MAX_RADIUS down
 * to CROWDED_MAX_RADIUS. So a loaded dot always stands out of the idle ones. `outline`: a
 * white ring around idle dots, while they are big enough to show it.
 */
export function detailLevel(count, width) {
  const area = width * width * ASPECT;
  const perSite = count > 0 ? area / count : Infinity;
  const room = Math.sqrt(Math.min(1, perSite / ROOMY_AREA));
  const quarter = (px) => Math.round(px * 4) / 4;
  const idleRadius = Math.max(MIN_IDLE_RADIUS, quarter(MIN_RADIUS * room));
  const minRadius = Math.max(idleRadius + LOADED_MARGIN, quarter(MIN_LOADED_RADIUS * room));
  const maxRadius = Math.max(CROWDED_MAX_RADIUS, minRadius, quarter(MAX_RADIUS * room));
  return { idleRadius, minRadius, maxRadius, outline: idleRadius >= 2.5 };
}

/** Draw groups, bottom to top: dimmed idle (per phase), dimmed loaded, idle (per phase), loaded, selected. */
const DIMMED_IDLE = 0;
const DIMMED_LOADED = PHASES.length;
const IDLE = DIMMED_LOADED + 1;
const LOADED = IDLE + PHASES.length;
const SELECTED = LOADED + 1;
const GROUPS = SELECTED + 1;

/** A phase's place in PHASES (the legend's order); a phase the page does not know is Pending's. */
export function phaseIndex(phase) {
  const index = PHASES.indexOf(phase);
  return index >= 0 ? index : PHASES.indexOf("Pending");
}

/**
 * A dot's draw group. Dimmed dots (outside a region filter) go under the others; among idle
 * dots Unreachable ones go above Pending above Ready, so trouble is not hidden under health;
 * loaded dots above idle ones; the selected site above everything.
 */
export function dotGroup({ phase, loaded, dimmed, selected }) {
  if (selected) return SELECTED;
  const p = phaseIndex(phase);
  if (dimmed) return loaded ? DIMMED_LOADED : DIMMED_IDLE + p;
  return loaded ? LOADED : IDLE + p;
}

/** Whether dots of this group are sorted by load (bigger first, so smaller ones stay visible). */
function byLoad(group) {
  return group === DIMMED_LOADED || group === LOADED;
}

/**
 * The order to draw `count` dots in: indexes by group (`groups[i]` from dotGroup), the loaded
 * groups by `loads[i]` descending, ties (and every other group) in index order. A bucket sort:
 * only the loaded dots are compared.
 */
export function drawOrder(groups, loads, count = groups.length) {
  const starts = new Int32Array(GROUPS + 1);
  for (let i = 0; i < count; i += 1) starts[groups[i] + 1] += 1;
  for (let g = 0; g < GROUPS; g += 1) starts[g + 1] += starts[g];
  const order = new Int32Array(count);
  const next = starts.slice(0, GROUPS);
  for (let i = 0; i < count; i += 1) {
    order[next[groups[i]]] = i;
    next[groups[i]] += 1;
  }
  for (let g = 0; g < GROUPS; g += 1) {
    if (!byLoad(g) || starts[g + 1] - starts[g] < 2) continue;
    const part = order.subarray(starts[g], starts[g + 1]);
    part.set(Array.from(part).sort((a, b) => loads[b] - loads[a] || a - b));
  }
  return order;
}

/** Dots changed beyond which the whole canvas is redrawn rather than the areas around each. */
export const DIRTY_LIMIT = 256;

/**
 * How to bring the canvas up to date when `changed` of `total` dots were added, removed,
 * moved, resized, restyled or reordered: "none", "dirty" (clear and redraw around each), or
 * "full" when they are many (more than DIRTY_LIMIT or a quarter of the map).
 */
export function redrawPlan(changed, total) {
  if (changed === 0) return "none";
  if (changed > DIRTY_LIMIT || changed * 4 > total) return "full";
  return "dirty";
}
