// Hash routes: #/fleet (the default), #/apps, #/apps/<tenant>/<name>, #/deploy. Pure parsing,
// so back and forward are just the browser's hashchange.

/** The route of a location hash: {view: "fleet"|"apps"|"app"|"deploy"|"missing", params}. */
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#/, "");
  if (raw === "" || raw === "/" || raw === "/fleet") return { view: "fleet", params: {} };
  if (!raw.startsWith("/")) return null;
  const parts = raw.slice(1).split("/").map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  if (parts[0] === "apps" && parts.length === 1) return { view: "apps", params: {} };
  if (parts[0] === "apps" && parts.length === 3 && parts[1] && parts[2]) {
    return { view: "app", params: { tenant: parts[1], name: parts[2] } };
  }
  if (parts[0] === "deploy" && parts.length === 1) return { view: "deploy", params: {} };
  return { view: "missing", params: { path: raw } };
}

/** Which nav link is current for a route: "#/fleet", "#/apps", "#/deploy" or null. */
export function navTarget(route) {
  if (!route) return null;
  if (route.view === "fleet") return "#/fleet";
  if (route.view === "apps" || route.view === "app") return "#/apps";
  if (route.view === "deploy") return "#/deploy";
  return null;
}

/** A stable key: the same key means the same view with the same parameters. */
export function routeKey(route) {
  return `${route.view}:${JSON.stringify(route.params)}`;
}
