// Relative times on the page ("12 s ago", the ISO time in the title), kept current by one timer.

import { h } from "./dom.js";
import { relativeTime } from "./format.js";

/** A <time> element showing `iso` relative to now, the exact time in its title. */
export function timeAgo(iso) {
  if (!iso) return h("span", { class: "muted", text: "never" });
  return h("time", { class: "rel", datetime: iso, title: iso, text: relativeTime(iso) });
}

let timer = null;

/** Refresh every relative time on the page every 5 s (one timer for the whole page). */
export function startRelativeClock() {
  if (timer !== null) return;
  timer = setInterval(() => {
    const now = Date.now();
    for (const el of document.querySelectorAll("time.rel")) {
      const text = relativeTime(el.getAttribute("datetime"), now);
      if (el.textContent !== text) el.textContent = text;
    }
  }, 5000);
}
