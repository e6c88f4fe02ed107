// Tests of the map's hit-testing grid (src/point-grid.js), against looking at every disc.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createPointGrid, discsInRect, hitTest } from "../src/point-grid.js";

/** The answer hitTest must give, found by looking at every disc. */
function bruteHit(xs, ys, rs, x, y, slop) {
  let inside = -1;
  let near = -1;
  let nearGap = Infinity;
  for (let i = 0; i < xs.length; i += 1) {
    if (!Number.isFinite(xs[i]) || !Number.isFinite(ys[i])) continue;
    const gap = Math.hypot(x - xs[i], y - ys[i]) - rs[i];
    if (gap <= 0) inside = i;
    else if (gap <= slop && (gap < nearGap || (gap === nearGap && i > near))) {
      near = i;
      nearGap = gap;
    }
  }
  return inside >= 0 ? inside : near;
}

function bruteRect(xs, ys, rs, left, top, right, bottom) {
  const found = [];
  for (let i = 0; i < xs.length; i += 1) {
    const dx = Math.max(left - xs[i], 0, xs[i] - right);
    const dy = Math.max(top - ys[i], 0, ys[i] - bottom);
    if (dx * dx + dy * dy <= rs[i] * rs[i]) found.push(i);
  }
  return found;
}

/** A small deterministic generator (tests must not differ from run to run). */
function random(seed) {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function scatter(n, seed) {
  const next = random(seed);
  const xs = new Float32Array(n);
  const ys = new Float32Array(n);
  const rs = new Float32Array(n);
  for (let i = 0; i < n; i += 1) {
    // Clustered, as sites are: most in a few boxes, some anywhere.
    const box = i % 4 === 0 ? null : [(i % 3) * 300, (i % 5) * 90];
    xs[i] = box ? box[0] + next() * 60 : next() * 960;
    ys[i] = box ? box[1] + next() * 40 : next() * 500;
    rs[i] = next() < 0.1 ? 4 + next() * 10 : 1.5;
  }
  return { xs, ys, rs };
}

test("the disc under a point is the one drawn last of those containing it", () => {
  const xs = [100, 104, 300];
  const ys = [100, 100, 300];
  const rs = [10, 10, 5];
  const grid = createPointGrid(xs, ys, rs);
  assert.equal(hitTest(grid, 102, 100), 1, "both contain it: the later one is on top");
  assert.equal(hitTest(grid, 92, 100), 0, "only the first contains it");
  assert.equal(hitTest(grid, 300, 304), 2);
  assert.equal(hitTest(grid, 200, 200), -1, "nothing there");
  assert.equal(hitTest(grid, 300, 308), -1, "3 px off the edge, no slop");
  assert.equal(hitTest(grid, 300, 308, 3), 2, "3 px off the edge, with 3 px of slop");
});

test("outside every disc, the nearest edge within the slop wins", () => {
  const grid = createPointGrid([0, 20], [0, 0], [2, 2]);
  assert.equal(hitTest(grid, 5, 0, 4), 0);
  assert.equal(hitTest(grid, 15, 0, 4), 1);
  assert.equal(hitTest(grid, 10, 0, 4), -1, "8 px from both edges");
});

test("hit-testing agrees with looking at every disc, on 5,000 clustered discs", () => {
  const { xs, ys, rs } = scatter(5000, 3);
  const grid = createPointGrid(xs, ys, rs);
  const next = random(9);
  for (let k = 0; k < 2000; k += 1) {
    const x = next() * 980 - 10;
    const y = next() * 520 - 10;
    assert.equal(hitTest(grid, x, y, 3), bruteHit(xs, ys, rs, x, y, 3), `at ${x}, ${y}`);
  }
});

test("the discs meeting a rectangle, in draw order, agree with looking at every disc", () => {
  const { xs, ys, rs } = scatter(3000, 5);
  const grid = createPointGrid(xs, ys, rs);
  const next = random(11);
  for (let k = 0; k < 300; k += 1) {
    const left = next() * 960;
    const top = next() * 500;
    const right = left + next() * 40;
    const bottom = top + next() * 40;
    assert.deepEqual(
      Array.from(discsInRect(grid, left, top, right, bottom)),
      bruteRect(xs, ys, rs, left, top, right, bottom),
    );
  }
});

test("points that are not numbers are left out; an empty grid finds nothing", () => {
  const grid = createPointGrid([Number.NaN, 50], [10, 50], [5, 5]);
  assert.equal(hitTest(grid, 50, 50), 1);
  assert.equal(hitTest(grid, 0, 10, 20), -1);
  const empty = createPointGrid([], [], []);
  assert.equal(hitTest(empty, 0, 0, 10), -1);
  assert.deepEqual(Array.from(discsInRect(empty, 0, 0, 100, 100)), []);
});

test("points spread far apart do not make a huge grid", () => {
  const grid = createPointGrid([0, 1e7], [0, 1e7], [1, 1]);
  assert.ok(grid.cols * grid.rows <= 1 << 16, `${grid.cols} x ${grid.rows} cells`);
  assert.equal(hitTest(grid, 1e7, 1e7), 1);
  assert.equal(hitTest(grid, 0.5, 0), 0);
});
