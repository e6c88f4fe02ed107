// DOM helpers: build elements from data without innerHTML, so text from the hub is never
// parsed as markup, and keep keyboard focus across re-renders.

/**
 * Create an element. `attrs` keys: `class`, `text`, `on<Event>` (a listener), `dataset`, any
 * attribute (false/null/undefined leave it out, true sets it empty). Children may be nodes,
 * strings, numbers, arrays of those, or null (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Like `h`, for SVG elements. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
}

/** Append children (nodes, strings, numbers, nested arrays; null skipped). */
export function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace every child of `el` with `children`. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Set a text node's content only when it changed (cheap repeated updates). */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** Set an attribute only when it changed. */
export function setAttr(el, name, value) {
  const text = String(value);
  if (el.getAttribute(name) !== text) el.setAttribute(name, text);
}

let uniqueCounter = 0;

/** A page-unique id with a readable prefix, for aria-labelledby and aria-describedby. */
export function uniqueId(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

/**
 * Run `render` (which rebuilds children of `container`) and give focus back to the element
 * that had it, found again by its `data-focus-key`: a live update must not throw a keyboard
 * user back to the top of the page.
 */
export function preservingFocus(container, render) {
  const active = document.activeElement;
  const key =
    active && container.contains(active) ? active.getAttribute("data-focus-key") : null;
  render();
  if (key !== null && !container.contains(active)) {
    const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

/**
 * Show a message in `slot`, inside an element of `role` ("alert" or "status"), or clear the
 * slot when there is nothing to show. The live element exists only while it holds a message,
 * so a page never carries empty alerts. A new status element is put in place empty and filled
 * a moment later: screen readers read out changes to a polite live region they already know,
 * not one that arrives full (an alert is read out when it appears).
 */
export function showMessage(slot, role, ...content) {
  const items = content.flat().filter((c) => c !== null && c !== undefined && c !== false && c !== "");
  if (items.length === 0) {
    slot.replaceChildren();
    return null;
  }
  let region = slot.firstElementChild;
  if (!region || region.getAttribute("role") !== role) {
    region = h("div", { role, class: `message message-${role}` });
    slot.replaceChildren(region);
    if (role === "status") {
      region.pendingContent = items;
      setTimeout(() => {
        if (region.pendingContent) replaceChildren(region, ...region.pendingContent);
        region.pendingContent = null;
      }, 50);
      return region;
    }
  }
  if (region.pendingContent) region.pendingContent = items;
  else replaceChildren(region, ...items);
  return region;
}
