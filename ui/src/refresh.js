// Coalesced refetching: however many stream events arrive, one fetch of a kind of data is in
// flight at a time, and fetches start at most every `minIntervalMs` (2 per second by default).

/**
 * Wrap `fetchOnce` (async, no arguments). `trigger()` asks for a fresh result: it starts a
 * fetch now if allowed, else marks one as due and starts it when the running one ends or the
 * interval has passed. Several triggers meanwhile make one fetch. `dispose()` stops it.
 * `clock` ({now, setTimeout, clearTimeout}) is replaceable for tests.
 */
export function createRefresher(fetchOnce, { minIntervalMs = 500, clock = globalThis } = {}) {
  let inFlight = false;
  let due = false;
  let timer = null;
  let lastStart = -Infinity;
  let disposed = false;
  const now = () => (clock.performance ? clock.performance.now() : clock.now());

  function schedule() {
    if (disposed || inFlight || timer !== null || !due) return;
    const wait = lastStart + minIntervalMs - now();
    if (wait > 0) {
      timer = clock.setTimeout(() => {
        timer = null;
        schedule();
      }, wait);
      return;
    }
    due = false;
    inFlight = true;
    lastStart = now();
    Promise.resolve()
      .then(fetchOnce)
      .catch(() => {
        // fetchOnce reports its own errors; a failure must not stop later refreshes.
      })
      .finally(() => {
        inFlight = false;
        schedule();
      });
  }

  return {
    trigger() {
      due = true;
      schedule();
    },
    dispose() {
      disposed = true;
      if (timer !== null) clock.clearTimeout(timer);
      timer = null;
    },
    get busy() {
      return inFlight;
    },
  };
}
