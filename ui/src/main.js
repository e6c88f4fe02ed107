// The web UI's entry point: the page shell (header, views nav, main), sign-in and sign-out,
// the hash router, the change stream and the shared data the views read.

import "./app.css";
import { ApiError, createApi, detailText } from "./api.js";
import { SHARED_KINDS, createBus, createFleetData } from "./data.js";
import { h, replaceChildren, showMessage } from "./dom.js";
import { initMetrics } from "./metrics.js";
import { navTarget, parseRoute, routeKey } from "./router.js";
import { clearToken, loadToken, saveToken } from "./session.js";
import { startStream } from "./stream.js";
import { startRelativeClock } from "./time.js";
import { mountAppDetail } from "./views/app-detail.js";
import { mountApps } from "./views/apps.js";
import { mountDeploy } from "./views/deploy.js";
import { mountFleet } from "./views/fleet.js";
import { mountSignIn } from "./views/signin.js";

initMetrics();

const els = {
  live: document.getElementById("live"),
  account: document.getElementById("account"),
  nav: document.getElementById("views-nav"),
  netError: document.getElementById("net-error"),
  main: document.getElementById("content"),
  flash: document.getElementById("flash"),
  view: document.getElementById("view"),
};

const TITLES = { fleet: "Fleet", apps: "Apps", app: "App", deploy: "Deploy", missing: "Not found" };
const LIVE_TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };

let token = loadToken();
let session = null;
let current = { key: null, unmount: null };
let flashKeep = 0;

/** Show a network problem (once: the same words again are not announced again). */
function showNetError(message) {
  const text = `${message}. The page reconnects when the hub is back.`;
  if (els.netError.textContent !== text) showMessage(els.netError, "alert", text);
}

const api = createApi({
  getToken: () => token,
  onUnauthorized: (error) => signOut(`The hub refused the token: ${detailText(error.detail)}`),
  onNetworkError: (error) => showNetError(error.message),
});

function setLive(state) {
  els.live.textContent = state ? LIVE_TEXT[state] : "";
  els.live.dataset.state = state || "";
}

/** Show `message` in the page's status line; it stays through the next navigation. */
function flash(message) {
  showMessage(els.flash, "status", message);
  flashKeep = 1;
}

/** Whether the next route change was asked for from within the page (a link, an action). */
let focusNextView = false;

function navigate(hash) {
  if (location.hash === hash) route({ focus: true });
  else {
    focusNextView = true;
    location.hash = hash;
  }
}

function unmountView() {
  if (current.unmount) current.unmount();
  current = { key: null, unmount: null };
}

function startSession(newToken, whoami) {
  token = newToken;
  saveToken(newToken);
  const bus = createBus();
  const data = createFleetData({ api });
  session = { whoami, bus, data, stream: null };
  const signOutButton = h("button", { type: "button", class: "secondary", text: "Sign out" });
  signOutButton.addEventListener("click", () => signOut(null));
  replaceChildren(
    els.account,
    h(
      "span",
      { class: "who" },
      "Signed in as ",
      h("strong", { id: "subject", text: whoami.subject }),
      ", role ",
      h("strong", { id: "role", text: whoami.role }),
    ),
    signOutButton,
  );
  els.nav.hidden = false;
  setLive("connecting");
  session.stream = startStream({
    getToken: () => token,
    onState: setLive,
    onError: (error) => {
      const why = error instanceof TypeError ? `The hub did not answer: ${error.message}` : error.message;
      showNetError(why);
    },
    onUnauthorized: (error) => signOut(`The hub refused the token: ${detailText(error.detail)}`),
    onEvent: (name) => {
      if (name === "ready") {
        // Connected again: whatever changed meanwhile is fetched anew, and old errors go.
        showMessage(els.netError, "alert");
        SHARED_KINDS.forEach((kind) => data.changed(kind));
      } else data.changed(name);
      bus.emit(name);
    },
  });
  route({ focus: false, force: true });
}

function signOut(reason) {
  // Several calls may be refused at once: the first one signs out.
  if (!session && current.key === "signin" && token === null) return;
  if (session) {
    session.stream?.stop();
    session.data.dispose();
  }
  session = null;
  token = null;
  clearToken();
  unmountView();
  replaceChildren(els.account);
  showMessage(els.netError, "alert");
  showMessage(els.flash, "status");
  els.nav.hidden = true;
  setLive(null);
  document.title = "Sign in · edgefleet";
  current.key = "signin";
  current.unmount = mountSignIn(els.view, {
    api,
    reason,
    onSignedIn: (newToken, whoami) => {
      unmountView();
      startSession(newToken, whoami);
    },
  });
}

function route({ focus = true, force = false } = {}) {
  if (!session) return;
  let parsed = parseRoute(location.hash);
  if (parsed === null) {
    // Not a view's hash (an in-page anchor): stay where we are.
    if (current.key !== null) return;
    parsed = parseRoute("");
  }
  if (location.hash === "" || location.hash === "#" || location.hash === "#/") {
    history.replaceState(null, "", "#/fleet");
  }
  const key = routeKey(parsed);
  if (key === current.key && !force) return;
  unmountView();
  if (flashKeep > 0) flashKeep -= 1;
  else showMessage(els.flash, "status");
  const target = navTarget(parsed);
  for (const link of els.nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === target) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const ctx = { api, bus: session.bus, data: session.data, session: session.whoami, flash, navigate };
  const title =
    parsed.view === "app" ? `App ${parsed.params.tenant}/${parsed.params.name}` : TITLES[parsed.view];
  document.title = `${title} · edgefleet`;
  current.key = key;
  current.unmount = mount(parsed, ctx);
  if (focus) document.getElementById("view-heading")?.focus();
  else if (!document.activeElement || document.activeElement === document.body) restartTabOrder();
}

/**
 * Make the next Tab start from the top of the page (the skip link). Without this, after the
 * focused element went away with the old view, the browser would go on from where it was.
 */
function restartTabOrder() {
  const body = document.body;
  body.setAttribute("tabindex", "-1");
  body.focus({ preventScroll: true });
  body.removeAttribute("tabindex");
}

function mount(parsed, ctx) {
  switch (parsed.view) {
    case "fleet":
      return mountFleet(els.view, ctx);
    case "apps":
      return mountApps(els.view, ctx);
    case "app":
      return mountAppDetail(els.view, ctx, parsed.params);
    case "deploy":
      return mountDeploy(els.view, ctx);
    default:
      replaceChildren(
        els.view,
        h("h2", { id: "view-heading", tabindex: "-1", text: "Not found" }),
        h(
          "p",
          {},
          `Nothing at ${parsed.params.path}. Go to the `,
          h("a", { href: "#/fleet", text: "fleet" }),
          ".",
        ),
      );
      return null;
  }
}

function init() {
  // The skip link moves focus to the content without touching the hash (the router's).
  document.querySelector(".skip-link")?.addEventListener("click", (event) => {
    event.preventDefault();
    els.main.focus();
    els.main.scrollIntoView();
  });
  // Following a link in the page moves focus to the new view's heading, so keyboard and screen
  // reader users land on what they opened; back, forward and typed addresses leave focus alone.
  document.addEventListener(
    "click",
    (event) => {
      if (event.target.closest?.('a[href^="#/"]')) focusNextView = true;
    },
    true,
  );
  window.addEventListener("hashchange", () => {
    const focus = focusNextView;
    focusNextView = false;
    route({ focus });
  });
  startRelativeClock();
  boot();
}

async function boot() {
  if (!token) {
    signOut(null);
    return;
  }
  try {
    const whoami = await api.get("/api/v1/whoami", { quiet: true });
    startSession(token, whoami);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 0) {
      showUnreachable(error);
      return;
    }
    signOut(`The hub refused the token: ${detailText(error.detail) || error.message}`);
  }
}

function showUnreachable(error) {
  const retry = h("button", { type: "button", text: "Try again" });
  retry.addEventListener("click", () => boot());
  replaceChildren(
    els.view,
    h("h2", { id: "view-heading", tabindex: "-1", text: "The hub did not answer" }),
    h("div", { role: "alert", class: "message message-alert", text: error.message }),
    retry,
  );
}

init();
