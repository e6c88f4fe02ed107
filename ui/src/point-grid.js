// A uniform grid over discs (the map's projected sites): which disc is under the pointer and
// which discs meet a rectangle, looking only at the cells nearby instead of at every site.
// Pure: numbers in, indexes out (node-tested).

/** The most cells a grid makes, whatever the spread of its points: memory stays bounded. */
const MAX_CELLS = 1 << 16;

/**
 * Index `count` discs: centres `xs[i]`, `ys[i]`, radii `rs[i]` (plain or typed arrays, any
 * unit). The index is the draw order: a disc of a higher index is drawn above a lower one.
 * Discs whose centre is not a finite number are left out. `cellSize` defaults to the largest
 * diameter, so a point is looked up in at most 3 x 3 cells.
 */
export function createPointGrid(xs, ys, rs, { count = xs.length, cellSize = null } = {}) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  let maxR = 0;
  for (let i = 0; i < count; i += 1) {
    const x = xs[i];
    const y = ys[i];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    if (x < minX) minX = x;
    if (x > maxX) maxX = x;
    if (y < minY) minY = y;
    if (y > maxY) maxY = y;
    if (rs[i] > maxR) maxR = rs[i];
  }
  if (minX > maxX) {
    const none = new Int32Array(0);
    return { xs, ys, rs, x0: 0, y0: 0, size: 1, cols: 0, rows: 0, start: none, items: none, maxR: 0 };
  }
  let size = cellSize ?? Math.max(2 * maxR, 1e-9);
  const spanX = maxX - minX;
  const spanY = maxY - minY;
  // Points spread far apart in cells that small would make a huge, mostly empty grid.
  while ((Math.floor(spanX / size) + 1) * (Math.floor(spanY / size) + 1) > MAX_CELLS) size *= 2;
  const cols = Math.floor(spanX / size) + 1;
  const rows = Math.floor(spanY / size) + 1;

  // Counting sort of the points by cell: `items[start[c] .. start[c + 1])` are cell c's.
  const cellOf = new Int32Array(count);
  const start = new Int32Array(cols * rows + 1);
  for (let i = 0; i < count; i += 1) {
    const x = xs[i];
    const y = ys[i];
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      cellOf[i] = -1;
      continue;
    }
    const cell = Math.floor((y - minY) / size) * cols + Math.floor((x - minX) / size);
    cellOf[i] = cell;
    start[cell + 1] += 1;
  }
  for (let c = 0; c < cols * rows; c += 1) start[c + 1] += start[c];
  const items = new Int32Array(start[cols * rows]);
  const fill = start.slice(0, cols * rows);
  for (let i = 0; i < count; i += 1) {
    const cell = cellOf[i];
    if (cell >= 0) {
      items[fill[cell]] = i;
      fill[cell] += 1;
    }
  }
  return { xs, ys, rs, x0: minX, y0: minY, size, cols, rows, start, items, maxR };
}

/** Call `visit(i)` for every disc in the cells that meet [left, right] x [top, bottom]. */
function eachNear(grid, left, top, right, bottom, visit) {
  if (grid.cols === 0) return;
  const c0 = Math.max(0, Math.floor((left - grid.x0) / grid.size));
  const c1 = Math.min(grid.cols - 1, Math.floor((right - grid.x0) / grid.size));
  const r0 = Math.max(0, Math.floor((top - grid.y0) / grid.size));
  const r1 = Math.min(grid.rows - 1, Math.floor((bottom - grid.y0) / grid.size));
  for (let row = r0; row <= r1; row += 1) {
    for (let col = c0; col <= c1; col += 1) {
      const cell = row * grid.cols + col;
      for (let k = grid.start[cell]; k < grid.start[cell + 1]; k += 1) visit(grid.items[k]);
    }
  }
}

/**
 * The disc under point (x, y): of the discs that contain it, the one drawn last (what the eye
 * sees there); else the nearest whose edge is within `slop` (a small dot is easier to hit);
 * else -1.
 */
export function hitTest(grid, x, y, slop = 0) {
  const reach = grid.maxR + slop;
  let inside = -1;
  let near = -1;
  let nearGap = Infinity;
  eachNear(grid, x - reach, y - reach, x + reach, y + reach, (i) => {
    const distance = Math.hypot(x - grid.xs[i], y - grid.ys[i]);
    const gap = distance - grid.rs[i];
    if (gap <= 0) {
      if (i > inside) inside = i;
    } else if (gap <= slop && (gap < nearGap || (gap === nearGap && i > near))) {
      near = i;
      nearGap = gap;
    }
  });
  return inside >= 0 ? inside : near;
}

/**
 * The discs that meet the rectangle [left, right] x [top, bottom], in draw order (ascending
 * indexes): what must be drawn again, in that order, when that rectangle is cleared.
 */
export function discsInRect(grid, left, top, right, bottom) {
  const found = [];
  const m = grid.maxR;
  eachNear(grid, left - m, top - m, right + m, bottom + m, (i) => {
    const x = grid.xs[i];
    const y = grid.ys[i];
    // The rectangle's point nearest the centre is within the radius.
    const dx = x < left ? left - x : x > right ? x - right : 0;
    const dy = y < top ? top - y : y > bottom ? y - bottom : 0;
    if (dx * dx + dy * dy <= grid.rs[i] * grid.rs[i]) found.push(i);
  });
  return Int32Array.from(found).sort();
}
