// Tests of coalesced refetching (src/refresh.js) on a fake clock.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createRefresher } from "../src/refresh.js";

function fakeClock() {
  let now = 0;
  let timers = [];
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const timer = { at: now + ms, fn };
      timers.push(timer);
      return timer;
    },
    clearTimeout(timer) {
      timers = timers.filter((t) => t !== timer);
    },
    /** Move time on, running due timers in order. */
    advance(ms) {
      const end = now + ms;
      for (;;) {
        const due = timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
        if (!due) break;
        timers = timers.filter((t) => t !== due);
        now = due.at;
        due.fn();
      }
      now = end;
    },
  };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

function deferredFetcher() {
  const calls = [];
  return {
    calls,
    fetch: () =>
      new Promise((resolve) => {
        calls.push(resolve);
      }),
  };
}

test("many triggers while a fetch runs make one more fetch, not many", async () => {
  const clock = fakeClock();
  const fetcher = deferredFetcher();
  const refresher = createRefresher(fetcher.fetch, { minIntervalMs: 500, clock });
  refresher.trigger();
  await settle();
  assert.equal(fetcher.calls.length, 1);
  for (let i = 0; i < 10; i += 1) refresher.trigger();
  await settle();
  assert.equal(fetcher.calls.length, 1, "at most one fetch in flight");
  fetcher.calls[0]();
  await settle();
  assert.equal(fetcher.calls.length, 1, "the next waits for the interval");
  clock.advance(500);
  await settle();
  assert.equal(fetcher.calls.length, 2, "one fetch for the ten triggers");
  fetcher.calls[1]();
  await settle();
  clock.advance(5000);
  await settle();
  assert.equal(fetcher.calls.length, 2, "nothing more without a trigger");
});

test("fetches start at most every minIntervalMs", async () => {
  const clock = fakeClock();
  let count = 0;
  const refresher = createRefresher(async () => {
    count += 1;
  }, { minIntervalMs: 500, clock });
  // A trigger every 100 ms for 2 s: about 2 fetches a second, never more.
  for (let t = 0; t < 2000; t += 100) {
    refresher.trigger();
    await settle();
    clock.advance(100);
    await settle();
  }
  assert.ok(count >= 4 && count <= 5, `got ${count} fetches in 2 s`);
});

test("a failing fetch does not stop later ones; dispose cancels a due one", async () => {
  const clock = fakeClock();
  let count = 0;
  const refresher = createRefresher(async () => {
    count += 1;
    throw new Error("hub down");
  }, { minIntervalMs: 500, clock });
  refresher.trigger();
  await settle();
  refresher.trigger();
  await settle();
  clock.advance(500);
  await settle();
  assert.equal(count, 2);
  refresher.trigger();
  await settle();
  refresher.dispose();
  clock.advance(1000);
  await settle();
  assert.equal(count, 2);
});
