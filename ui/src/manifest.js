// Manifests in the deploy editor: YAML syntax problems with their positions, which API call
// applies each document, and where in the YAML text a field path from a 422 answer points.
// Pure (no DOM, no fetch): node tests run it.

import { isMap, isScalar, isSeq, parseAllDocuments } from "yaml";

export const KINDS = ["App", "Site", "Tenant"];

/** Every document of a YAML text, with the yaml library's ranges kept. */
export function parseDocuments(text) {
  return parseAllDocuments(text, { prettyErrors: false });
}

/** A range of at least one character where the text allows, so the editor can underline it. */
function span(text, from, to) {
  const end = Math.min(Math.max(to, from + 1), text.length);
  const start = Math.max(0, Math.min(from, end - 1));
  return { from: start, to: Math.max(start, end) };
}

/**
 * Like `span`, but never only blank: a problem at the end of the text or of a line (an unclosed
 * bracket) is moved to the word before it, which the editor can underline.
 */
function visibleSpan(text, from, to) {
  const range = span(text, from, to);
  if (text.slice(range.from, range.to).trim() !== "") return range;
  let end = range.from;
  while (end > 0 && /\s/.test(text[end - 1])) end -= 1;
  if (end === 0) return range;
  let start = end - 1;
  while (start > 0 && !/\s/.test(text[start - 1])) start -= 1;
  return { from: start, to: end };
}

/** First line of a node: where a whole mapping or sequence is marked. */
function firstLine(text, from) {
  const newline = text.indexOf("\n", from);
  return span(text, from, newline === -1 ? text.length : newline);
}

/**
 * YAML syntax problems of `text`: [{from, to, severity: "error"|"warning", message}], with
 * positions as offsets into the text (what CodeMirror diagnostics take).
 */
export function syntaxProblems(text, docs = parseDocuments(text)) {
  const problems = [];
  for (const doc of docs) {
    for (const [severity, list] of [
      ["error", doc.errors],
      ["warning", doc.warnings],
    ]) {
      for (const problem of list) {
        const [from, to] = problem.pos;
        problems.push({ ...visibleSpan(text, from, to), severity, message: problem.message });
      }
    }
  }
  return problems;
}

function keyName(key) {
  return isScalar(key) ? String(key.value) : String(key);
}

function findPair(map, item) {
  return map.items.find((pair) => keyName(pair.key) === String(item));
}

/**
 * Where `path` (an API error's loc without "body": keys and sequence indexes) is in `doc`.
 * Returns {from, to, exact, path}: the node's range when it exists (a scalar's value, or the
 * key of a mapping or sequence); else the key of the nearest ancestor that exists
 * (`exact` false: a required field not written). Items the manifest cannot hold, such as the
 * workload type pydantic adds to a tagged union's path ("process" in
 * spec.workload.process.command), are skipped; `path` is what is left, for people to read.
 */
export function locatePath(doc, path, text) {
  let node = doc.contents;
  let keyNode = null;
  const shown = [];
  let i = 0;
  while (i < path.length) {
    const item = path[i];
    if (isMap(node)) {
      const pair = findPair(node, item);
      if (pair) {
        shown.push(item);
        keyNode = pair.key;
        node = pair.value;
        i += 1;
        continue;
      }
      const isTag = node.items.some(
        (p) => isScalar(p.value) && typeof item === "string" && p.value.value === item,
      );
      const nextExists = i + 1 < path.length && findPair(node, path[i + 1]) !== undefined;
      if (isTag || nextExists) {
        i += 1;
        continue;
      }
    } else if (isSeq(node) && typeof item === "number" && item < node.items.length) {
      shown.push(item);
      keyNode = null;
      node = node.items[item];
      i += 1;
      continue;
    }
    const range = ancestorRange(doc, node, keyNode, text);
    return { ...range, exact: false, path: [...shown, ...path.slice(i)] };
  }
  return { ...nodeRange(doc, node, keyNode, text), exact: true, path: shown };
}

function nodeRange(doc, node, keyNode, text) {
  if (isScalar(node) && node.range) return span(text, node.range[0], node.range[1]);
  return ancestorRange(doc, node, keyNode, text);
}

function ancestorRange(doc, node, keyNode, text) {
  if (keyNode && keyNode.range) return span(text, keyNode.range[0], keyNode.range[1]);
  if (node && node.range) return firstLine(text, node.range[0]);
  const start = doc.contents?.range ? doc.contents.range[0] : doc.range[0];
  return firstLine(text, start);
}

/** 1-based line number of an offset. */
export function lineOf(text, offset) {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i += 1) if (text.charCodeAt(i) === 10) line += 1;
  return line;
}

/**
 * Which API call applies a parsed manifest object. Returns {kind, name, tenant, url, label,
 * link} or {error: {path, message}} naming the field that is wrong.
 */
export function applyTarget(object) {
  if (object === null || typeof object !== "object" || Array.isArray(object)) {
    return { error: { path: [], message: "a manifest is a mapping with kind, metadata and spec" } };
  }
  const kind = object.kind;
  if (!KINDS.includes(kind)) {
    const got = kind === undefined ? "kind is missing" : `kind is ${JSON.stringify(kind)}`;
    return { error: { path: ["kind"], message: `${got}: write kind: App, Site or Tenant` } };
  }
  const metadata = object.metadata;
  const name = metadata && typeof metadata === "object" ? metadata.name : undefined;
  if (typeof name !== "string" || name === "") {
    return { error: { path: ["metadata", "name"], message: `a ${kind} needs metadata.name` } };
  }
  const e = encodeURIComponent;
  if (kind === "App") {
    const tenant = metadata.tenant;
    if (typeof tenant !== "string" || tenant === "") {
      return {
        error: { path: ["metadata", "tenant"], message: "an App needs metadata.tenant" },
      };
    }
    return {
      kind,
      name,
      tenant,
      url: `/api/v1/tenants/${e(tenant)}/apps/${e(name)}`,
      label: `App ${tenant}/${name}`,
      link: `#/apps/${e(tenant)}/${e(name)}`,
    };
  }
  if (kind === "Site") {
    const url = `/api/v1/sites/${e(name)}`;
    return { kind, name, tenant: null, url, label: `Site ${name}`, link: "#/fleet" };
  }
  const url = `/api/v1/tenants/${e(name)}`;
  return { kind, name, tenant: null, url, label: `Tenant ${name}`, link: null };
}

/** The path of a validation error's loc without its leading "body". */
export function bodyPath(loc) {
  const path = Array.isArray(loc) ? [...loc] : [];
  if (path[0] === "body") path.shift();
  return path;
}
