// Tests of the map's level of detail and draw order (src/map-lod.js) and its summary for
// screen readers (src/fleet-model.js).
import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_RADIUS, MIN_LOADED_RADIUS, MIN_RADIUS, mapSummary, radiusFor } from "../src/fleet-model.js";
import {
  CROWDED_MAX_RADIUS,
  DIRTY_LIMIT,
  LOADED_MARGIN,
  MIN_IDLE_RADIUS,
  detailLevel,
  dotGroup,
  drawOrder,
  phaseIndex,
  redrawPlan,
} from "../src/map-lod.js";

test("idle dots keep their size on a roomy map and shrink, to a floor, on a crowded one", () => {
  const roomy = { idleRadius: MIN_RADIUS, minRadius: MIN_LOADED_RADIUS, maxRadius: MAX_RADIUS, outline: true };
  assert.deepEqual(detailLevel(6, 900), roomy);
  assert.deepEqual(detailLevel(0, 900), roomy);
  const sizes = [500, 1000, 2000, 5000, 10_000, 100_000].map((n) => detailLevel(n, 900).idleRadius);
  for (let k = 1; k < sizes.length; k += 1) assert.ok(sizes[k] <= sizes[k - 1], String(sizes));
  assert.ok(sizes[2] < MIN_RADIUS, "2,000 sites on a 900 px map are crowded");
  assert.equal(detailLevel(10_000, 900).idleRadius, MIN_IDLE_RADIUS);
  assert.equal(detailLevel(10_000, 900).outline, false, "no rings when dots are that small");
  // The same fleet on a small map is more crowded.
  assert.ok(detailLevel(1000, 400).idleRadius < detailLevel(1000, 1200).idleRadius);
  // In quarter pixels: a few more sites do not change every dot.
  for (const n of [700, 1500, 3000]) {
    const r = detailLevel(n, 900).idleRadius;
    assert.equal(r * 4, Math.round(r * 4));
  }
});

test("loaded dots shrink on a crowded map too, and stay bigger than idle ones", () => {
  const crowded = detailLevel(10_000, 900);
  assert.equal(crowded.maxRadius, CROWDED_MAX_RADIUS);
  assert.equal(crowded.minRadius, crowded.idleRadius + LOADED_MARGIN);
  assert.ok(detailLevel(2000, 900).maxRadius < MAX_RADIUS);
  for (const n of [1, 10, 100, 1000, 2000, 10_000, 1e6]) {
    for (const width of [300, 900, 2000]) {
      const level = detailLevel(n, width);
      assert.ok(level.idleRadius < radiusFor(1e-9, 1e6, level), `${n} sites, ${width} px`);
      assert.equal(radiusFor(5, 5, level), level.maxRadius);
      assert.ok(level.minRadius <= level.maxRadius);
    }
  }
});

test("draw groups: dimmed under the rest, trouble above health, loaded above idle, the selected on top", () => {
  const group = (attrs) => dotGroup({ phase: "Ready", loaded: false, dimmed: false, selected: false, ...attrs });
  const bottomToTop = [
    group({ dimmed: true }),
    group({ dimmed: true, phase: "Unreachable" }),
    group({ dimmed: true, loaded: true }),
    group({}),
    group({ phase: "Pending" }),
    group({ phase: "Unreachable" }),
    group({ loaded: true }),
    group({ selected: true, dimmed: true }),
  ];
  assert.deepEqual([...bottomToTop].sort((a, b) => a - b), bottomToTop);
  assert.equal(group({ loaded: true, phase: "Unreachable" }), group({ loaded: true }));
  assert.equal(phaseIndex("Draining"), phaseIndex("Pending"), "an unknown phase is drawn as Pending");
});

test("draw order: by group, loaded dots bigger first, ties in index order", () => {
  const idle = dotGroup({ phase: "Ready", loaded: false, dimmed: false, selected: false });
  const down = dotGroup({ phase: "Unreachable", loaded: false, dimmed: false, selected: false });
  const loaded = dotGroup({ phase: "Ready", loaded: true, dimmed: false, selected: false });
  const selected = dotGroup({ phase: "Ready", loaded: true, dimmed: false, selected: true });
  const groups = Uint8Array.from([loaded, idle, selected, down, loaded, idle, loaded]);
  const loads = Float64Array.from([5, 0, 9, 0, 50, 0, 5]);
  assert.deepEqual(Array.from(drawOrder(groups, loads)), [1, 5, 3, 4, 0, 6, 2]);
  assert.deepEqual(Array.from(drawOrder(new Uint8Array(0), new Float64Array(0))), []);
});

test("draw order of 10,000 dots is a permutation, and fast", () => {
  const n = 10_000;
  const groups = new Uint8Array(n);
  const loads = new Float64Array(n);
  for (let i = 0; i < n; i += 1) {
    const loadedSite = i % 10 === 0;
    loads[i] = loadedSite ? (i * 7919) % 1000 : 0;
    groups[i] = dotGroup({
      phase: ["Ready", "Pending", "Unreachable"][i % 3],
      loaded: loadedSite,
      dimmed: i % 9 === 0,
      selected: i === 4242,
    });
  }
  const started = performance.now();
  const order = drawOrder(groups, loads);
  const ms = performance.now() - started;
  assert.equal(new Set(order).size, n);
  assert.equal(order[n - 1], 4242, "the selected dot last");
  for (let k = 1; k < n; k += 1) assert.ok(groups[order[k - 1]] <= groups[order[k]]);
  assert.ok(ms < 200, `${ms} ms`);
});

test("a few changed dots redraw around them; many redraw everything", () => {
  assert.equal(redrawPlan(0, 10_000), "none");
  assert.equal(redrawPlan(3, 10_000), "dirty");
  assert.equal(redrawPlan(DIRTY_LIMIT, 10_000), "dirty");
  assert.equal(redrawPlan(DIRTY_LIMIT + 1, 10_000), "full");
  assert.equal(redrawPlan(3, 6), "full", "half of a small map");
  assert.equal(redrawPlan(1, 6), "dirty");
});

test("the map's summary for screen readers", () => {
  assert.equal(mapSummary(0, {}), "Map of 0 sites");
  assert.equal(mapSummary(1, { Ready: 1 }), "Map of 1 site: 1 ready");
  assert.equal(
    mapSummary(10_000, { Unreachable: 50, Ready: 9800, Pending: 150 }),
    "Map of 10000 sites: 9800 ready, 150 pending, 50 unreachable",
  );
  assert.equal(mapSummary(6, { Ready: 6 }, 2), "Map of 6 sites: 6 ready; 2 highlighted");
  assert.equal(mapSummary(1000, { Pending: 1000 }, null, true), "Map of 1000 sites: 1000 pending (loading more)");
  assert.equal(mapSummary(2, { Ready: 1, Draining: 1 }), "Map of 2 sites: 1 ready, 1 draining");
});
