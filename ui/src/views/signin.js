// Sign-in: an API token checked with GET /api/v1/whoami before the page keeps it.

import { ApiError, detailText } from "../api.js";
import { h, replaceChildren, showMessage } from "../dom.js";

/**
 * Mount the sign-in form. `onSignedIn(token, whoami)` is called once the hub accepted the
 * token; `reason` is shown first (why the last session ended).
 */
export function mountSignIn(container, { api, reason = null, onSignedIn }) {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const button = h("button", { type: "submit", text: "Sign in" });
  const error = h("div", { class: "message-slot", id: "signin-error" });
  const form = h(
    "form",
    { class: "signin", novalidate: true },
    h("div", { class: "field" }, h("label", { for: "token", text: "API token" }), input),
    h("p", {
      class: "muted",
      text: "An admin makes tokens with 'edgefleet token create'. The token is kept in this tab only.",
    }),
    h("div", { class: "actions" }, button),
    error,
  );
  replaceChildren(
    container,
    h(
      "section",
      { class: "panel signin-panel", "aria-labelledby": "view-heading" },
      h("h2", { id: "view-heading", tabindex: "-1", text: "Sign in" }),
      form,
    ),
  );
  if (reason) showMessage(error, "alert", reason);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      showMessage(error, "alert", "Enter an API token.");
      input.focus();
      return;
    }
    button.disabled = true;
    showMessage(error, "alert");
    try {
      const whoami = await api.get("/api/v1/whoami", { token, quiet: true });
      onSignedIn(token, whoami);
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      const why = detailText(exc.detail) || exc.message;
      showMessage(
        error,
        "alert",
        exc.status === 0 ? `${exc.message}` : `The hub refused the token: ${why}`,
      );
      input.select();
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  input.focus();
  return () => {};
}
