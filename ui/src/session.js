// The signed-in token, kept in sessionStorage only: it dies with the tab, is never written to
// localStorage, a cookie or a URL.

const KEY = "edgefleet.token";

/** The token of this tab's session, or null. */
export function loadToken() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

/** Keep `token` for this tab. */
export function saveToken(token) {
  sessionStorage.setItem(KEY, token);
}

/** Forget the token. */
export function clearToken() {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // storage unavailable: nothing was kept
  }
}
