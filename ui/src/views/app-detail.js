// One app (#/apps/<tenant>/<name>): replicas per site, demand and DNS answers per region,
// placement changes, the scaling form and deletion. Refreshed, coalesced, from the stream.

import { ApiError, detailText } from "../api.js";
import { h, preservingFocus, replaceChildren, s, showMessage, uniqueId } from "../dom.js";
import { formatPath, formatRate } from "../format.js";
import { demandByRegion, dnsAskSites, newestFirst } from "../fleet-model.js";
import { createWorldMap } from "../map.js";
import { createRefresher } from "../refresh.js";
import { eventList } from "./site-detail.js";

/** Samples of ready/desired replicas per app, kept while the page is open: key -> [sample]. */
const samples = new Map();
const MAX_SAMPLES = 600;

function recordSample(key, app) {
  const list = samples.get(key) || [];
  list.push({
    time: Date.now(),
    ready: app.status?.readyReplicas ?? 0,
    desired: app.status?.desiredReplicas ?? 0,
  });
  if (list.length > MAX_SAMPLES) list.splice(0, list.length - MAX_SAMPLES);
  samples.set(key, list);
  return list;
}

function errorText(error) {
  return detailText(error.detail) || error.message;
}

function section(id, title, ...children) {
  return h(
    "section",
    { class: "panel", "aria-labelledby": id },
    h("h3", { id, text: title }),
    ...children,
  );
}

/** Mount app `tenant/name` into `container`; returns the function that unmounts it. */
export function mountAppDetail(container, ctx, { tenant, name }) {
  const key = `${tenant}/${name}`;
  const base = `/api/v1/tenants/${encodeURIComponent(tenant)}/apps/${encodeURIComponent(name)}`;
  const dnsName = `${name}.${tenant}.edge.internal`;
  let app = null;
  let sites = [];
  let demand = { rows: null, error: null };
  let dns = { answers: null };
  let events = { list: null, error: null };
  let disposed = false;

  const alert = h("div", { class: "message-slot" });
  const replicasBody = h("div");
  const smallMap = createWorldMap({ className: "world-map small" });
  const demandBody = h("div");
  const dnsBody = h("div");
  const chartBody = h("div");
  const eventsBody = h("div");
  const scaling = scalingForm();
  const deletion = deleteDialog();

  replaceChildren(
    container,
    h(
      "div",
      { class: "view-title" },
      h("h2", { id: "view-heading", tabindex: "-1", text: `App ${key}` }),
      deletion.opener,
    ),
    h("p", {}, h("a", { href: "#/apps", text: "Back to the app list" })),
    alert,
    h(
      "div",
      { class: "app-grid" },
      section(
        "replicas-heading",
        "Replicas per site",
        replicasBody,
        h(
          "figure",
          { class: "small-map" },
          smallMap.element,
          h("figcaption", { class: "muted", text: "Sites of the app highlighted" }),
        ),
      ),
      section("demand-heading", "Demand per region", demandBody),
      section(
        "dns-heading",
        "DNS answers per region",
        h("p", {
          class: "muted",
          text: `Answers for ${dnsName}, asked at one Ready site of each region.`,
        }),
        dnsBody,
      ),
      section("placement-heading", "Placement changes", chartBody, eventsBody),
      section("scaling-heading", "Scaling", scaling.form),
    ),
    deletion.dialog,
  );

  // -- data -----------------------------------------------------------------------------------

  const appRefresher = createRefresher(async () => {
    try {
      app = (await ctx.api.get(base)) || null;
      recordSample(key, app);
      showMessage(alert, "alert");
      scaling.prefill(app);
    } catch (error) {
      if (error.status === 401 || !(error instanceof ApiError)) return;
      if (error.status !== 0) showMessage(alert, "alert", `App ${key}: ${errorText(error)}`);
      if (error.status === 404) app = null;
    }
    if (!disposed) renderAll();
  });
  const demandRefresher = createRefresher(async () => {
    try {
      demand = { rows: await ctx.api.get(`${base}/demand`), error: null };
    } catch (error) {
      if (error.status === 401 || !(error instanceof ApiError)) return;
      demand = { rows: null, error };
    }
    if (!disposed) renderDemand();
  });
  const dnsRefresher = createRefresher(async () => {
    const asks = dnsAskSites(sites);
    const answers = await Promise.all(
      asks.map(async ({ region, site }) => {
        if (site === null) return { region, site, note: "no Ready site to ask" };
        const query = `name=${encodeURIComponent(dnsName)}&site=${encodeURIComponent(site)}`;
        try {
          return { region, site, result: await ctx.api.get(`/api/v1/dns/explain?${query}`) };
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          return { region, site, note: errorText(error) };
        }
      }),
    );
    dns = { answers };
    if (!disposed) renderDns();
  });
  const eventsRefresher = createRefresher(async () => {
    const query = `kind=App&tenant=${encodeURIComponent(tenant)}&name=${encodeURIComponent(name)}&limit=100`;
    try {
      events = { list: await ctx.api.get(`/api/v1/events?${query}`), error: null };
    } catch (error) {
      if (error.status === 401 || !(error instanceof ApiError)) return;
      events = { list: null, error };
    }
    if (!disposed) renderEvents();
  });
  const refreshers = [appRefresher, demandRefresher, dnsRefresher, eventsRefresher];
  const unsubscribe = [
    ctx.bus.on("ready", () => refreshers.forEach((r) => r.trigger())),
    ctx.bus.on("apps", () => {
      appRefresher.trigger();
      dnsRefresher.trigger();
    }),
    ctx.bus.on("sites", () => dnsRefresher.trigger()),
    ctx.bus.on("demand", () => demandRefresher.trigger()),
    ctx.bus.on("events", () => eventsRefresher.trigger()),
    ctx.data.use("sites", (value) => {
      const first = sites.length === 0;
      sites = value || [];
      if (first && sites.length > 0) dnsRefresher.trigger();
      renderReplicas();
      renderDemand();
    }),
  ];
  appRefresher.trigger();
  demandRefresher.trigger();
  eventsRefresher.trigger();

  // -- rendering ------------------------------------------------------------------------------

  function renderAll() {
    renderReplicas();
    renderChart();
  }

  function renderReplicas() {
    if (!app) return;
    const regionOf = new Map(sites.map((site) => [site.metadata.name, site.spec.region]));
    const shares = [...(app.status?.sites || [])].sort((a, b) => (a.site < b.site ? -1 : 1));
    const appSites = new Set(shares.map((share) => share.site));
    smallMap.update(sites, { highlight: (site) => appSites.has(site.metadata.name) });
    const status = app.status || {};
    preservingFocus(replicasBody, () =>
      replaceChildren(
        replicasBody,
        h("p", {
          text:
            `${status.readyReplicas ?? 0} ready of ${status.desiredReplicas ?? 0} desired, ` +
            `${app.spec?.workload?.type ?? "?"} workload.`,
        }),
        status.message ? h("p", { class: "warning-text", text: status.message }) : null,
        shares.length === 0
          ? h("p", { class: "muted", text: "Not placed at any site." })
          : h(
              "div",
              { class: "table-scroll" },
              h(
                "table",
                { "aria-label": "Replicas per site" },
                h(
                  "thead",
                  {},
                  h(
                    "tr",
                    {},
                    ["Site", "Region", "Desired", "Ready", "Running", "Wakeable"].map((text) =>
                      h("th", { scope: "col", text }),
                    ),
                  ),
                ),
                h(
                  "tbody",
                  {},
                  shares.map((share) =>
                    h(
                      "tr",
                      { "data-site": share.site },
                      h("th", { scope: "row", text: share.site }),
                      h("td", { text: regionOf.get(share.site) ?? "unknown" }),
                      h("td", { class: "num", text: share.desired ?? 0 }),
                      h("td", { class: "num", text: share.ready ?? 0 }),
                      h("td", { class: "num", text: share.running ?? 0 }),
                      h("td", { text: share.wakeable ? "yes" : "no" }),
                    ),
                  ),
                ),
              ),
            ),
      ),
    );
  }

  function renderDemand() {
    if (demand.error) {
      const text = `Demand unavailable: ${errorText(demand.error)}`;
      replaceChildren(demandBody, h("p", { class: "error-note", text }));
      return;
    }
    if (demand.rows === null) {
      replaceChildren(demandBody, h("p", { class: "muted", text: "Loading…" }));
      return;
    }
    const regionOf = new Map(sites.map((site) => [site.metadata.name, site.spec.region]));
    const regions = demandByRegion(demand.rows, regionOf);
    if (regions.length === 0) {
      replaceChildren(demandBody, h("p", { class: "muted", text: "No demand recorded." }));
      return;
    }
    const metrics = [
      ["rps", "Requests per second"],
      ["inFlight", "Requests in flight"],
      ["dns", "DNS queries per second"],
    ];
    const max = Object.fromEntries(metrics.map(([m]) => [m, Math.max(...regions.map((r) => r[m]))]));
    replaceChildren(
      demandBody,
      h(
        "table",
        { "aria-label": "Demand per region", class: "bars" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col", text: "Region" }),
            metrics.map(([, label]) => h("th", { scope: "col", text: label })),
          ),
        ),
        h(
          "tbody",
          {},
          regions.map((r) =>
            h(
              "tr",
              { "data-region": r.region },
              h("th", { scope: "row", text: r.region }),
              metrics.map(([m]) => {
                const bar = h("span", { class: `bar bar-${m}`, "aria-hidden": "true" });
                const percent = max[m] > 0 ? Math.max(1, Math.round((100 * r[m]) / max[m])) : 0;
                bar.style.width = `${percent}%`;
                return h(
                  "td",
                  {},
                  h("span", { class: "bar-track" }, bar),
                  h("span", { class: "bar-value", text: formatRate(r[m]) }),
                );
              }),
            ),
          ),
        ),
      ),
    );
  }

  function renderDns() {
    if (dns.answers === null) {
      replaceChildren(dnsBody, h("p", { class: "muted", text: "Loading…" }));
      return;
    }
    if (dns.answers.length === 0) {
      replaceChildren(dnsBody, h("p", { class: "muted", text: "No site in the fleet." }));
      return;
    }
    preservingFocus(dnsBody, () =>
      replaceChildren(
        dnsBody,
        h(
          "ul",
          { class: "dns-answers", "aria-label": "DNS answers per region" },
          dns.answers.map((a) => {
            if (!a.result) {
              const where = a.site ? `${a.region} (asked at ${a.site})` : a.region;
              const note = h("span", { class: "muted", text: a.note });
              return h("li", { "data-region": a.region }, `${where}: `, note);
            }
            const answered = a.result.answer.map((x) => x.site).join(", ") || "no answer";
            return h(
              "li",
              { "data-region": a.region },
              h("span", { text: `${a.region} (asked at ${a.site}) -> ${answered}` }),
              considered(a),
            );
          }),
        ),
      ),
    );
  }

  function considered(answer) {
    const rows = answer.result.considered || [];
    if (rows.length === 0) return null;
    return h(
      "details",
      {},
      h("summary", { "data-focus-key": `dns:${answer.region}`, text: "Sites considered" }),
      h(
        "table",
        { "aria-label": `Sites considered for ${answer.region}` },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Site", "RTT", "Ready", "Headroom", "Wakeable", "Chosen", "Why not"].map((text) =>
              h("th", { scope: "col", text }),
            ),
          ),
        ),
        h(
          "tbody",
          {},
          rows.map((c) =>
            h(
              "tr",
              {},
              h("th", { scope: "row", text: c.site }),
              h("td", { class: "num", text: c.rttMs == null ? "?" : `${formatRate(c.rttMs)} ms` }),
              h("td", { class: "num", text: c.ready }),
              h("td", { class: "num", text: formatRate(c.headroom) }),
              h("td", { text: c.wakeable ? "yes" : "no" }),
              h("td", { text: c.chosen ? "yes" : "no" }),
              h("td", { text: c.reason || "" }),
            ),
          ),
        ),
      ),
    );
  }

  function renderChart() {
    replaceChildren(chartBody, replicaChart(samples.get(key) || []));
  }

  function renderEvents() {
    if (events.error) {
      const text = `Events unavailable: ${errorText(events.error)}`;
      replaceChildren(eventsBody, h("p", { class: "error-note", text }));
    } else if (events.list === null) {
      replaceChildren(eventsBody, h("p", { class: "muted", text: "Loading…" }));
    } else if (events.list.length === 0) {
      replaceChildren(eventsBody, h("p", { class: "muted", text: "No placement change recorded." }));
    } else {
      replaceChildren(eventsBody, eventList(newestFirst(events.list), `Events of app ${key}`));
    }
  }

  // -- scaling --------------------------------------------------------------------------------

  function scalingForm() {
    const fields = {
      minReplicas: numberField("scaling-min", "Minimum replicas"),
      maxReplicas: numberField("scaling-max", "Maximum replicas"),
    };
    const submit = h("button", { type: "submit", text: "Save scaling" });
    const formAlert = h("div", { class: "message-slot" });
    const formStatus = h("div", { class: "message-slot" });
    const form = h(
      "form",
      { class: "scaling-form", novalidate: true, "aria-labelledby": "scaling-heading" },
      fields.minReplicas.wrapper,
      fields.maxReplicas.wrapper,
      h("div", { class: "actions" }, submit),
      formAlert,
      formStatus,
    );
    /** The resourceVersion the shown values came from: a save on top of a newer app is a 409. */
    let version = null;
    let dirty = false;
    // Nothing to edit until the app's current bounds are in the fields.
    for (const control of [fields.minReplicas.input, fields.maxReplicas.input, submit]) control.disabled = true;
    form.addEventListener("input", () => {
      dirty = true;
    });

    function clearErrors() {
      for (const field of Object.values(fields)) field.setError(null);
      showMessage(formAlert, "alert");
      showMessage(formStatus, "status");
    }

    function prefill(current, { force = false } = {}) {
      if (dirty && !force) return;
      const scalingSpec = current.spec?.scaling || {};
      fields.minReplicas.input.value = String(scalingSpec.minReplicas ?? 0);
      fields.maxReplicas.input.value = String(scalingSpec.maxReplicas ?? 1000);
      version = current.metadata?.resourceVersion ?? null;
      dirty = false;
      for (const control of [fields.minReplicas.input, fields.maxReplicas.input, submit]) control.disabled = false;
    }

    async function reload() {
      clearErrors();
      try {
        const current = await ctx.api.get(base);
        prefill(current, { force: true });
        showMessage(formStatus, "status", "Reloaded the app's current scaling.");
        fields.minReplicas.input.focus();
      } catch (error) {
        if (error.status !== 401) showMessage(formAlert, "alert", `Could not reload: ${errorText(error)}`);
      }
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors();
      submit.disabled = true;
      try {
        const current = await ctx.api.get(base);
        const manifest = structuredClone(current);
        delete manifest.status;
        manifest.metadata.resourceVersion = version ?? current.metadata.resourceVersion;
        manifest.spec.scaling = {
          ...(manifest.spec.scaling || {}),
          minReplicas: fields.minReplicas.value(),
          maxReplicas: fields.maxReplicas.value(),
        };
        const { data } = await ctx.api.request("PUT", base, { body: manifest });
        prefill(data, { force: true });
        const sc = data.spec.scaling;
        showMessage(formStatus, "status", `Scaling saved: ${sc.minReplicas} to ${sc.maxReplicas} replicas.`);
        appRefresher.trigger();
      } catch (error) {
        if (!(error instanceof ApiError) || error.status === 401) return;
        showError(error);
      } finally {
        submit.disabled = false;
      }
    });

    function showError(error) {
      if (error.status === 422 && Array.isArray(error.detail)) {
        const general = [];
        let focused = false;
        for (const item of error.detail) {
          const loc = (item.loc || []).filter((x, i) => !(i === 0 && x === "body"));
          const last = loc[loc.length - 1];
          const field = loc.length === 3 && loc[0] === "spec" && loc[1] === "scaling" ? fields[last] : undefined;
          if (field) {
            field.setError(item.msg);
            if (!focused) field.input.focus();
            focused = true;
          } else general.push(`${formatPath(loc)}: ${item.msg}`);
        }
        if (general.length) showMessage(formAlert, "alert", general.join("; "));
        return;
      }
      if (error.status === 409) {
        showMessage(
          formAlert,
          "alert",
          h("p", { text: `Not saved: ${errorText(error)}` }),
          h("button", { type: "button", class: "secondary", onclick: reload, text: "Reload" }),
        );
        return;
      }
      showMessage(formAlert, "alert", `Not saved: ${errorText(error)}`);
    }

    return { form, prefill };
  }

  // -- deletion -------------------------------------------------------------------------------

  function deleteDialog() {
    const titleId = uniqueId("delete-title");
    const descId = uniqueId("delete-desc");
    const inputId = uniqueId("delete-confirm");
    const opener = h("button", { type: "button", class: "danger", text: "Delete app" });
    const input = h("input", { id: inputId, type: "text", autocomplete: "off", spellcheck: "false" });
    const confirm = h("button", { type: "button", class: "danger", disabled: true, text: "Delete" });
    const cancel = h("button", { type: "button", class: "secondary", text: "Cancel" });
    const dialogAlert = h("div", { class: "message-slot" });
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": titleId, "aria-describedby": descId },
      h("h3", { id: titleId, text: `Delete app ${key}?` }),
      h("p", {
        id: descId,
        text: `Every site running ${key} stops its replicas, and ${dnsName} stops answering. This cannot be undone.`,
      }),
      h("label", { for: inputId, text: "Type the app name to confirm" }),
      input,
      dialogAlert,
      h("div", { class: "actions" }, confirm, cancel),
    );
    let deleted = false;

    opener.addEventListener("click", () => {
      input.value = "";
      confirm.disabled = true;
      showMessage(dialogAlert, "alert");
      dialog.showModal();
      input.focus();
    });
    input.addEventListener("input", () => {
      confirm.disabled = input.value !== name;
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !confirm.disabled) confirm.click();
    });
    cancel.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      // Give focus back to the button that opened the dialog (unless the app is gone).
      if (!deleted && opener.isConnected) opener.focus();
    });
    confirm.addEventListener("click", async () => {
      if (input.value !== name) return;
      confirm.disabled = true;
      showMessage(dialogAlert, "alert");
      try {
        await ctx.api.request("DELETE", base);
        deleted = true;
        dialog.close();
        ctx.flash(`App ${key} deleted.`);
        ctx.navigate("#/apps");
      } catch (error) {
        if (error instanceof ApiError && error.status !== 401) {
          showMessage(dialogAlert, "alert", `Not deleted: ${errorText(error)}`);
        }
        confirm.disabled = input.value !== name;
      }
    });
    return { opener, dialog };
  }

  return () => {
    disposed = true;
    unsubscribe.forEach((off) => off());
    refreshers.forEach((r) => r.dispose());
    smallMap.dispose();
    if (deletion.dialog.open) deletion.dialog.close();
  };
}

function numberField(id, label) {
  const errorId = `${id}-error`;
  const input = h("input", { id, name: id, type: "number", min: "0", step: "1", inputmode: "numeric" });
  const error = h("p", { id: errorId, class: "field-error" });
  const wrapper = h("div", { class: "field" }, h("label", { for: id, text: label }), input, error);
  return {
    input,
    wrapper,
    /** The typed value: a number, or the text as typed for the hub to refuse with a reason. */
    value() {
      const raw = input.value.trim();
      if (raw === "") return null;
      const number = Number(raw);
      return Number.isFinite(number) ? number : raw;
    },
    setError(message) {
      if (message) {
        error.textContent = message;
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", errorId);
      } else {
        error.textContent = "";
        input.removeAttribute("aria-invalid");
        input.removeAttribute("aria-describedby");
      }
    },
  };
}

/** An SVG line chart of ready and desired replicas over the samples taken on this page. */
function replicaChart(list) {
  const width = 480;
  const height = 140;
  const pad = { left: 34, right: 10, top: 10, bottom: 22 };
  const caption = h("figcaption", {
    class: "muted",
    text: "Ready and desired replicas, sampled each time the app refreshed while this page was open.",
  });
  if (list.length === 0) {
    return h("figure", { class: "chart" }, caption, h("p", { class: "muted", text: "No sample yet." }));
  }
  const last = list[list.length - 1];
  const t0 = list[0].time;
  const t1 = Math.max(last.time, t0 + 1000);
  const top = Math.max(1, ...list.map((x) => Math.max(x.ready, x.desired)));
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  // Step lines: a count holds until the next sample.
  const line = (field) => {
    let d = "";
    list.forEach((sample, i) => {
      const px = x(sample.time).toFixed(1);
      const py = y(sample[field]).toFixed(1);
      d += i === 0 ? `M${px},${py}` : `H${px}V${py}`;
    });
    return `${d}H${(width - pad.right).toFixed(1)}`;
  };
  const seconds = Math.round((t1 - t0) / 1000);
  const svg = s(
    "svg",
    {
      class: "replica-chart",
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label":
        `Replicas in ${list.length} samples over ${seconds} s: latest ${last.ready} ready of ` +
        `${last.desired} desired`,
    },
    s("line", { class: "axis", x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0) }),
    s("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left, y2: y(0) }),
    s("text", { class: "tick", x: pad.left - 6, y: y(top) + 4, "text-anchor": "end", text: top }),
    s("text", { class: "tick", x: pad.left - 6, y: y(0) + 4, "text-anchor": "end", text: 0 }),
    s("text", { class: "tick", x: pad.left, y: height - 6, text: "first sample" }),
    s("text", {
      class: "tick",
      x: width - pad.right,
      y: height - 6,
      "text-anchor": "end",
      text: `latest, ${seconds} s later`,
    }),
    s("path", { class: "series desired", d: line("desired") }),
    s("path", { class: "series ready", d: line("ready") }),
  );
  return h(
    "figure",
    { class: "chart" },
    svg,
    h(
      "ul",
      { class: "legend" },
      h("li", {}, h("span", { class: "swatch series-desired", "aria-hidden": "true" }), " desired"),
      h("li", {}, h("span", { class: "swatch series-ready", "aria-hidden": "true" }), " ready"),
    ),
    caption,
  );
}
