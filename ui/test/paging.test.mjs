// Tests of reading lists in pages (src/paging.js) and of the shared data's site pages
// (src/data.js), against a fake hub that is just a function.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createFleetData } from "../src/data.js";
import { PAGE_SIZE, listAll, pageUrl } from "../src/paging.js";

function site(name) {
  return { metadata: { name }, spec: { region: "r", zone: "z", location: { lat: 0, lon: 0 } } };
}

function names(n, from = 0) {
  return Array.from({ length: n }, (_, i) => `s${String(from + i).padStart(5, "0")}`);
}

/**
 * A hub that pages its site list as the paging branch will: `limit` items per answer, the last
 * name as the continue token. `paged: false` is today's hub, which ignores `limit`.
 */
function fakeHub(all, { paged = true } = {}) {
  const asked = [];
  async function get(url) {
    asked.push(url);
    const query = new URL(url, "http://hub").searchParams;
    if (!paged) return { apiVersion: "edgefleet.io/v1alpha1", kind: "SiteList", items: all.map(site) };
    const limit = Number(query.get("limit"));
    const after = query.get("continue");
    const from = after === null ? 0 : all.indexOf(after) + 1;
    const items = all.slice(from, from + limit).map(site);
    const more = from + limit < all.length;
    return {
      apiVersion: "edgefleet.io/v1alpha1",
      kind: "SiteList",
      metadata: more ? { continue: items.at(-1).metadata.name } : {},
      items,
    };
  }
  return { get, asked };
}

test("page URLs: a limit, then the continue token, encoded", () => {
  assert.equal(pageUrl("/api/v1/sites", 1000), "/api/v1/sites?limit=1000");
  assert.equal(pageUrl("/api/v1/sites", 1000, "a b&c"), "/api/v1/sites?limit=1000&continue=a+b%26c");
  assert.equal(pageUrl("/x?y=1", 5), "/x?y=1&limit=5");
  assert.equal(PAGE_SIZE, 1000);
});

test("every page is read in order, each heard as it comes", async () => {
  const hub = fakeHub(names(2500));
  const heard = [];
  const items = await listAll(hub.get, "/api/v1/sites", {
    onPage: (page, { page: n, last }) => heard.push([n, page.length, last]),
  });
  assert.deepEqual(heard, [
    [0, 1000, false],
    [1, 1000, false],
    [2, 500, true],
  ]);
  assert.deepEqual(
    items.map((s) => s.metadata.name),
    names(2500),
  );
  assert.deepEqual(hub.asked, [
    "/api/v1/sites?limit=1000",
    "/api/v1/sites?limit=1000&continue=s00999",
    "/api/v1/sites?limit=1000&continue=s01999",
  ]);
});

test("the next page is asked for before the current one is handed over", async () => {
  const hub = fakeHub(names(2500));
  const askedWhenHeard = [];
  await listAll(hub.get, "/api/v1/sites", { onPage: () => askedWhenHeard.push(hub.asked.length) });
  assert.deepEqual(askedWhenHeard, [2, 3, 3]);
});

test("a hub that ignores the limit answers once, and that is the whole list", async () => {
  const hub = fakeHub(names(2500), { paged: false });
  const heard = [];
  const items = await listAll(hub.get, "/api/v1/sites", { onPage: (_, info) => heard.push(info) });
  assert.equal(items.length, 2500);
  assert.deepEqual(heard, [{ page: 0, last: true }]);
  assert.equal(hub.asked.length, 1);
});

test("an empty list, and a continue token given twice, end", async () => {
  assert.deepEqual(await listAll(fakeHub([]).get, "/api/v1/sites"), []);
  const loop = async () => ({ metadata: { continue: "same" }, items: [site("a")] });
  await assert.rejects(listAll(loop, "/api/v1/sites"), /continue token same twice/);
});

test("a failing page fails the list; an aborted read stops", async () => {
  const hub = fakeHub(names(3000));
  let calls = 0;
  const failing = async (url) => {
    calls += 1;
    if (calls === 2) throw new Error("hub down");
    return hub.get(url);
  };
  await assert.rejects(listAll(failing, "/api/v1/sites"), /hub down/);
  const stop = new AbortController();
  const stopping = async (url) => {
    const answer = await hub.get(url);
    stop.abort();
    return answer;
  };
  await assert.rejects(listAll(stopping, "/api/v1/sites", { signal: stop.signal }), { name: "AbortError" });
});

/** Wait until `check()` holds, 2 s at most (refetches are at least 0.5 s apart). */
async function until(check) {
  const deadline = Date.now() + 2000;
  while (!check() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(check());
}

test("the first site list is shown page by page; a reload replaces it once complete", async () => {
  let all = names(2500);
  const hub = fakeHub(all);
  const data = createFleetData({ api: { get: (url) => hub.get(url) } });
  const partialSeen = [];
  const wholeSeen = [];
  data.use(
    "sites",
    (value, error, { partial }) => partialSeen.push([value?.length ?? null, partial]),
    { partial: true },
  );
  data.use("sites", (value, error, { partial }) => wholeSeen.push([value?.length ?? null, partial]));
  await until(() => wholeSeen.length === 1);
  assert.deepEqual(partialSeen, [
    [1000, true],
    [2000, true],
    [2500, false],
  ]);
  assert.deepEqual(wholeSeen, [[2500, false]], "a listener without `partial` hears whole lists only");

  // The stream says sites changed: the new list arrives in pages but is shown only whole.
  all = names(2600, 10);
  const reloaded = fakeHub(all);
  hub.get = reloaded.get;
  data.changed("sites");
  await until(() => wholeSeen.length === 2);
  assert.deepEqual(partialSeen.slice(3), [[2600, false]]);
  assert.equal(data.get("sites").length, 2600);
  assert.equal(data.get("sites")[0].metadata.name, "s00010");
  data.dispose();
});

test("sites are kept sorted by name and once each, whatever the pages hold", async () => {
  const pages = [
    { metadata: { continue: "x" }, items: [site("c"), site("a")] },
    { items: [site("b"), site("a")] },
  ];
  let k = 0;
  const data = createFleetData({ api: { get: async () => pages[k++] } });
  let seen = null;
  data.use("sites", (value) => {
    seen = value;
  });
  await until(() => seen !== null);
  assert.deepEqual(
    seen.map((s) => s.metadata.name),
    ["a", "b", "c"],
  );
  data.dispose();
});
