// The hub's public HTTP API (/api/v1), as any client uses it: a bearer token on every call,
// JSON in and out, and errors turned into ApiError with the hub's `detail`.

import { formatPath } from "./format.js";

/** A call the hub refused (status >= 400) or that got no answer (status 0). */
export class ApiError extends Error {
  constructor(status, detail, message) {
    super(message);
    this.name = "ApiError";
    /** HTTP status; 0 when the hub did not answer. */
    this.status = status;
    /** The hub's `detail`: a string, or a list of {type, loc, msg} for body validation. */
    this.detail = detail;
  }
}

/** The hub's `detail` as one line of text. */
export function detailText(detail) {
  if (Array.isArray(detail)) {
    return detail
      .map((item) => {
        const loc = Array.isArray(item.loc) ? item.loc.filter((x, i) => i > 0 || x !== "body") : [];
        return loc.length ? `${formatPath(loc)}: ${item.msg}` : String(item.msg);
      })
      .join("; ");
  }
  if (detail === null || detail === undefined) return "";
  return typeof detail === "string" ? detail : JSON.stringify(detail);
}

/**
 * A client for the hub's API. `getToken()` gives the bearer token; `onUnauthorized(error)`
 * is told of every 401 (the token was refused or expired: the page goes back to sign-in);
 * `onNetworkError(error)` of every call the hub did not answer.
 */
export function createApi({ getToken, onUnauthorized = () => {}, onNetworkError = () => {} }) {
  /**
   * One call. Resolves {status, data, headers} for 2xx (data: parsed JSON or null); throws
   * ApiError otherwise. `token` overrides getToken() (sign-in checks a token before keeping it);
   * `quiet` keeps the call's 401 and network errors from the handlers (the caller shows them).
   */
  async function request(method, path, { body, token, signal, quiet = false } = {}) {
    const headers = { Accept: "application/json" };
    const bearer = token ?? getToken();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        credentials: "omit",
        cache: "no-store",
      });
    } catch (exc) {
      if (exc && exc.name === "AbortError") throw exc;
      const why = `The hub did not answer (${method} ${path}): ${exc.message || exc}`;
      const error = new ApiError(0, null, why);
      if (!quiet) onNetworkError(error);
      throw error;
    }
    const text = await response.text().catch(() => "");
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    if (response.ok) return { status: response.status, data, headers: response.headers };
    const detail =
      data && typeof data === "object" && "detail" in data ? data.detail : data || response.statusText;
    const head = `${response.status} ${response.statusText || ""}`.trim();
    const error = new ApiError(response.status, detail, detail ? `${head}: ${detailText(detail)}` : head);
    if (response.status === 401 && !quiet) onUnauthorized(error);
    throw error;
  }

  return {
    request,
    /** GET a path; resolves the parsed JSON. */
    async get(path, options) {
      return (await request("GET", path, options)).data;
    },
  };
}
