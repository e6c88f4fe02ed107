// The apps view (#/apps): every app the caller may see, with replicas and placement status.

import { detailText } from "../api.js";
import { h, preservingFocus, replaceChildren, showMessage } from "../dom.js";

/** The app's page: #/apps/<tenant>/<name>. */
export function appHref(tenant, name) {
  return `#/apps/${encodeURIComponent(tenant)}/${encodeURIComponent(name)}`;
}

/** Mount the apps list into `container`; returns the function that unmounts it. */
export function mountApps(container, ctx) {
  const alert = h("div", { class: "message-slot" });
  const body = h("div", { class: "apps-body" });
  replaceChildren(
    container,
    h("h2", { id: "view-heading", tabindex: "-1", text: "Apps" }),
    alert,
    h("section", { class: "panel" }, body),
  );

  const off = ctx.data.use("apps", (apps, error) => {
    const problem = error && error.status !== 0 ? `Could not read the apps: ${detailText(error.detail)}` : null;
    showMessage(alert, "alert", problem);
    if (!apps) return;
    preservingFocus(body, () => {
      if (apps.length === 0) {
        replaceChildren(
          body,
          h("p", {}, "No app yet. ", h("a", { href: "#/deploy", text: "Deploy one" }), "."),
        );
        return;
      }
      replaceChildren(
        body,
        h(
          "div",
          { class: "table-scroll" },
          h(
            "table",
            { "aria-label": "Apps" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Tenant", "Name", "Workload", "Replicas (ready/desired)", "Sites", "Message"].map((text) =>
                  h("th", { scope: "col", text }),
                ),
              ),
            ),
            h(
              "tbody",
              {},
              apps.map((app) => {
                const { tenant, name } = app.metadata;
                const status = app.status || {};
                return h(
                  "tr",
                  { "data-app": `${tenant}/${name}` },
                  h("td", { text: tenant }),
                  h(
                    "th",
                    { scope: "row" },
                    h("a", { href: appHref(tenant, name), "data-focus-key": `app:${tenant}/${name}`, text: name }),
                  ),
                  h("td", { text: app.spec?.workload?.type ?? "" }),
                  h("td", { class: "num", text: `${status.readyReplicas ?? 0}/${status.desiredReplicas ?? 0}` }),
                  h("td", { class: "num", text: (status.sites || []).length }),
                  h("td", { class: status.message ? "warning-text" : "muted", text: status.message || "" }),
                );
              }),
            ),
          ),
        ),
      );
    });
  });
  return off;
}
