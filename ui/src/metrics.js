// Render timings for benchmarks: window.edgefleetMetrics gets one entry per map render,
// {view, sites, ms, kind}, measured up to after the next frame is painted. `sites`: dots drawn;
// `kind`: "first" (the map's first drawing), "page" (more sites of the first list, as its pages
// arrive) or "update" (data changed: the stream, a selection, a filter).

/** Make sure window.edgefleetMetrics exists (called once at start). */
export function initMetrics() {
  if (!Array.isArray(window.edgefleetMetrics)) window.edgefleetMetrics = [];
}

/**
 * Record a render that started at `start` (performance.now()). The time is taken in a task
 * queued from the next animation frame's callback, so style, layout and paint of that frame
 * are included, not only the script that changed the DOM.
 */
export function recordRender({ view, sites, start, kind }) {
  requestAnimationFrame(() => {
    setTimeout(() => {
      const ms = Math.round((performance.now() - start) * 100) / 100;
      initMetrics();
      window.edgefleetMetrics.push({ view, sites, ms, kind });
    }, 0);
  });
}
