// The hub's change stream (/api/v1/stream): read with fetch() so the token travels in the
// Authorization header (EventSource cannot send it, and a token must never be put in a URL),
// reconnected with backoff (1 s doubling to 15 s) whenever it ends or fails.

import { ApiError } from "./api.js";
import { SseParser } from "./sse.js";

export const STREAM_PATH = "/api/v1/stream";
export const FIRST_DELAY_MS = 1000;
export const MAX_DELAY_MS = 15000;

/** The wait before reconnect attempt n (0-based): 1 s, 2 s, 4 s, 8 s, then 15 s. */
export function backoffDelay(attempt) {
  return Math.min(FIRST_DELAY_MS * 2 ** attempt, MAX_DELAY_MS);
}

function parseDetail(data) {
  try {
    return JSON.parse(data).detail ?? null;
  } catch {
    return null;
  }
}

/**
 * Open the stream and keep it open until `stop()`. `onEvent(name, data)` gets every event
 * ("ready", "sites", "apps", "events", "demand"); `onState("live" | "reconnecting")` the
 * connection's state; `onError(error)` why a connection failed (the hub did not answer or
 * refused the stream); `onUnauthorized(error)` a 401 or a `refused` event (the token was revoked
 * or expired: the stream stops).
 */
export function startStream({ getToken, onEvent, onState, onError = () => {}, onUnauthorized }) {
  let stopped = false;
  let controller = null;
  let attempt = 0;
  let wake = null;

  function sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async function readOnce() {
    controller = new AbortController();
    const response = await fetch(STREAM_PATH, {
      headers: { Authorization: `Bearer ${getToken()}`, Accept: "text/event-stream" },
      signal: controller.signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) {
      let detail = "the hub refused the token";
      try {
        detail = (await response.json()).detail ?? detail;
      } catch {
        // keep the generic words
      }
      stopped = true;
      onUnauthorized(new ApiError(401, detail, `401: ${detail}`));
      return;
    }
    if (!response.ok || !response.body) {
      throw new Error(`The hub's change stream answered ${response.status} ${response.statusText}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    for (;;) {
      const { value, done } = await reader.read();
      if (done || stopped) return;
      for (const event of parser.feed(value)) {
        if (event.event === "refused") {
          // The token was revoked or expired while the stream was open.
          stopped = true;
          const detail = parseDetail(event.data) ?? "the hub refused the token";
          onUnauthorized(new ApiError(401, detail, `401: ${detail}`));
          return;
        }
        if (event.event === "ready") {
          attempt = 0;
          onState("live");
        }
        onEvent(event.event, event.data);
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await readOnce();
      } catch (error) {
        // A failure is reported; a failure or an end both reconnect after a backoff.
        if (!stopped && error?.name !== "AbortError") onError(error);
      }
      if (stopped) return;
      onState("reconnecting");
      await sleep(backoffDelay(attempt));
      attempt += 1;
    }
  })();

  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
      if (wake) wake();
    },
  };
}
