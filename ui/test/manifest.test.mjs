// Tests of manifest handling (src/manifest.js): syntax problems, API targets, and where a
// 422's field path points in the YAML text.
import assert from "node:assert/strict";
import { test } from "node:test";
import { applyTarget, bodyPath, lineOf, locatePath, parseDocuments, syntaxProblems } from "../src/manifest.js";

const APP = `apiVersion: edgefleet.io/v1alpha1
kind: App
metadata:
  name: web
  tenant: demo
spec:
  workload:
    type: process
  scaling:
    minReplicas: -1
    maxReplicas: 3
  placement:
    selector:
      regions: [BAD, eu-west]
`;

function place(text, loc) {
  const [doc] = parseDocuments(text);
  const found = locatePath(doc, bodyPath(loc), text);
  return { ...found, text: text.slice(found.from, found.to), line: lineOf(text, found.from) };
}

test("a scalar field is marked at its value", () => {
  const found = place(APP, ["body", "spec", "scaling", "minReplicas"]);
  assert.equal(found.exact, true);
  assert.equal(found.text, "-1");
  assert.equal(found.line, 10);
  assert.deepEqual(found.path, ["spec", "scaling", "minReplicas"]);
});

test("a sequence index points at the item", () => {
  const found = place(APP, ["body", "spec", "placement", "selector", "regions", 0]);
  assert.equal(found.text, "BAD");
  assert.equal(found.line, 14);
});

test("a missing field marks its nearest existing ancestor's key; the union tag is skipped", () => {
  const found = place(APP, ["body", "spec", "workload", "process", "command"]);
  assert.equal(found.exact, false);
  assert.equal(found.text, "workload");
  assert.equal(found.line, 7);
  assert.deepEqual(found.path, ["spec", "workload", "command"]);
});

test("a mapping is marked at its key; a missing top-level field at the document's start", () => {
  assert.equal(place(APP, ["body", "spec", "scaling"]).text, "scaling");
  const found = place("kind: App\nmetadata: {name: a, tenant: b}\n", ["body", "spec"]);
  assert.equal(found.exact, false);
  assert.equal(found.line, 1);
  assert.deepEqual(found.path, ["spec"]);
});

test("ranges are offsets into the whole text, in later documents too", () => {
  const text = `kind: Tenant\nmetadata: {name: a}\n---\n${APP}`;
  const docs = parseDocuments(text);
  const found = locatePath(docs[1], ["spec", "scaling", "maxReplicas"], text);
  assert.equal(text.slice(found.from, found.to), "3");
  assert.equal(lineOf(text, found.from), 14);
});

test("syntax problems carry positions", () => {
  const text = "kind: App\nmetadata:\n  name: [a\n";
  const problems = syntaxProblems(text);
  assert.ok(problems.length > 0);
  for (const p of problems) {
    assert.equal(p.severity, "error");
    assert.ok(p.from >= 0 && p.from < p.to && p.to <= text.length);
  }
  assert.deepEqual(syntaxProblems(APP), []);
});

test("a problem at the end of the text is moved onto the text before it", () => {
  const text = "kind: App\nmetadata: {name: [unclosed\n";
  const problems = syntaxProblems(text);
  assert.ok(problems.length > 0);
  for (const p of problems) assert.equal(text.slice(p.from, p.to), "[unclosed");
});

test("apply targets per kind", () => {
  assert.deepEqual(
    applyTarget({ kind: "App", metadata: { name: "hello", tenant: "demo" } }),
    { kind: "App", name: "hello", tenant: "demo", url: "/api/v1/tenants/demo/apps/hello", label: "App demo/hello", link: "#/apps/demo/hello" },
  );
  assert.equal(applyTarget({ kind: "Site", metadata: { name: "paris" } }).url, "/api/v1/sites/paris");
  assert.equal(applyTarget({ kind: "Tenant", metadata: { name: "acme" } }).url, "/api/v1/tenants/acme");
});

test("wrong kinds and missing names name the field", () => {
  assert.deepEqual(applyTarget({ kind: "Pod", metadata: { name: "x" } }).error.path, ["kind"]);
  assert.deepEqual(applyTarget({ metadata: { name: "x" } }).error.path, ["kind"]);
  assert.deepEqual(applyTarget({ kind: "Site", metadata: {} }).error.path, ["metadata", "name"]);
  assert.deepEqual(applyTarget({ kind: "App", metadata: { name: "x" } }).error.path, ["metadata", "tenant"]);
  assert.deepEqual(applyTarget(["a"]).error.path, []);
});
