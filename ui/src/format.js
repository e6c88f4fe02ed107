// Pure formatting of numbers, quantities and times for display. No DOM, so node tests run it.

/** "12 s ago", "3 min ago", "5 h ago", "2 d ago" from an ISO time; "never" for none. */
export function relativeTime(iso, nowMs = Date.now()) {
  if (!iso) return "never";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return String(iso);
  // Clocks of the hub and the browser differ a little: a time just ahead is "0 s ago".
  const seconds = Math.max(0, Math.round((nowMs - then) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

/** A rate or count with as many decimals as make sense for its size. */
export function formatRate(value) {
  const x = Number(value) || 0;
  if (x === 0) return "0";
  if (Math.abs(x) < 0.1) return x.toFixed(2);
  if (Math.abs(x) < 10) return x.toFixed(1);
  return String(Math.round(x));
}

/**
 * A load for the `data-load` attribute: requests per second to 4 significant digits, so that
 * no load above zero reads as "0".
 */
export function loadAttr(value) {
  const x = Number(value) || 0;
  return x === 0 ? "0" : String(Number(x.toPrecision(4)));
}

/** Bytes as a Kubernetes-style quantity: 512Mi, 16Gi. */
export function formatBytes(bytes) {
  const units = ["", "Ki", "Mi", "Gi", "Ti"];
  let x = Number(bytes) || 0;
  let unit = 0;
  while (x >= 1024 && unit < units.length - 1) {
    x /= 1024;
    unit += 1;
  }
  const shown = Number.isInteger(x) ? String(x) : x.toFixed(1);
  return `${shown}${units[unit]}`;
}

/** CPU cores: "4 cores", "0.5 cores", "250m". */
export function formatCpu(cores) {
  const x = Number(cores) || 0;
  if (x > 0 && x < 1) return `${Math.round(x * 1000)}m`;
  return `${Number.isInteger(x) ? x : x.toFixed(1)} cores`;
}

/** Degrees with 2 decimals and a hemisphere letter: "48.86° N, 2.35° E". */
export function formatLocation(location) {
  if (!location) return "unknown";
  const lat = Number(location.lat);
  const lon = Number(location.lon);
  const ns = lat >= 0 ? "N" : "S";
  const ew = lon >= 0 ? "E" : "W";
  return `${Math.abs(lat).toFixed(2)}° ${ns}, ${Math.abs(lon).toFixed(2)}° ${ew}`;
}

/**
 * A field path for people, from an API error's `loc` (after "body"): keys joined by dots,
 * sequence indexes in brackets: spec.placement.selector.regions[0].
 */
export function formatPath(path) {
  let out = "";
  for (const item of path) {
    if (typeof item === "number") out += `[${item}]`;
    else out += out ? `.${item}` : String(item);
  }
  return out || "(document)";
}
