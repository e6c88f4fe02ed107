// Lists read in pages, Kubernetes-style: `GET path?limit=N`, then again with
// `&continue=<token>` while the answer's `metadata.continue` has one. A hub that does not page
// answers everything at once without a token: that single answer is the whole list.

/** Items asked for per page. */
export const PAGE_SIZE = 1000;

/** The URL of one page: `path?limit=N[&continue=token]` (token URL-encoded). */
export function pageUrl(path, limit, token = null) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (token) query.set("continue", token);
  return `${path}${path.includes("?") ? "&" : "?"}${query}`;
}

/**
 * Read every page of the list at `path` with `get(url)` (resolves the parsed answer:
 * `{metadata: {continue}, items}`). `onPage(items, {page, last})` hears each page as it
 * arrives, once the next one is asked for (the page is drawn while the hub reads the next);
 * resolves every item in order. Stops with an AbortError when `signal` aborts, and with an
 * error when the hub gives the same continue token twice (it would never end).
 */
export async function listAll(get, path, { limit = PAGE_SIZE, onPage = () => {}, signal = null } = {}) {
  const all = [];
  const tokens = new Set();
  let pending = get(pageUrl(path, limit));
  for (let page = 0; ; page += 1) {
    const answer = await pending;
    if (signal?.aborted) throw new DOMException("The list's reading was stopped", "AbortError");
    const items = Array.isArray(answer?.items) ? answer.items : [];
    for (const item of items) all.push(item);
    const next = answer?.metadata?.continue || null;
    if (next !== null) {
      if (tokens.has(next)) throw new Error(`The hub's list at ${path} gave continue token ${next} twice`);
      tokens.add(next);
      pending = get(pageUrl(path, limit, next));
      // Awaited on the next turn; until then a failure must not count as unhandled.
      pending.catch(() => {});
    }
    onPage(items, { page, last: next === null });
    if (next === null) return all;
  }
}
