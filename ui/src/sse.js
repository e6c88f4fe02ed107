// A server-sent events parser (the text/event-stream format) fed with decoded text chunks.
// Pure: the stream module reads the hub's /api/v1/stream through fetch() and feeds it here.

/**
 * Incremental parser. `feed(text)` returns the events completed by that chunk, each
 * {event, data}; comment lines (": keep-alive") only count as activity.
 */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.eventType = "";
    this.data = [];
  }

  feed(text) {
    this.buffer += text;
    const events = [];
    for (;;) {
      const match = /\r\n|\n|\r/.exec(this.buffer);
      if (!match) break;
      // A lone "\r" at the very end may be the first half of "\r\n": wait for more text.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  line(line) {
    if (line === "") {
      // Dispatch on the blank line; an event name alone (no data) still counts.
      if (!this.eventType && this.data.length === 0) return null;
      const event = { event: this.eventType || "message", data: this.data.join("\n") };
      this.eventType = "";
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventType = value;
    else if (field === "data") this.data.push(value);
    // "id" and "retry" are not used: the client reconnects with its own backoff and refetches.
    return null;
  }
}
