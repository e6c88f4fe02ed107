// Tests of the server-sent events parser (src/sse.js).
import assert from "node:assert/strict";
import { test } from "node:test";
import { SseParser } from "../src/sse.js";

test("events are dispatched on the blank line, comments ignored", () => {
  const parser = new SseParser();
  const events = parser.feed(": keep-alive\n\nevent: ready\ndata: {}\n\nevent: sites\ndata: {\"n\":1}\n\n");
  assert.deepEqual(events, [
    { event: "ready", data: "{}" },
    { event: "sites", data: '{"n":1}' },
  ]);
});

test("an event split across chunks, CRLF split between chunks", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.feed("event: ap"), []);
  assert.deepEqual(parser.feed("ps\r"), []);
  assert.deepEqual(parser.feed("\ndata: x\r\n"), []);
  assert.deepEqual(parser.feed("\r\n"), [{ event: "apps", data: "x" }]);
});

test("multi-line data is joined; an event name alone still dispatches", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.feed("data: a\ndata: b\n\nevent: demand\n\n"), [
    { event: "message", data: "a\nb" },
    { event: "demand", data: "" },
  ]);
});

test("a blank line with nothing pending dispatches nothing", () => {
  assert.deepEqual(new SseParser().feed("\n\n: c\n\n"), []);
});
