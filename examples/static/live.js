// A WebSocket that reconnects with exponential backoff and reports its state.

const RETRY_MIN = 500; // milliseconds
const RETRY_MAX = 10000;
// Close codes after which retrying cannot help: the server refused what this page sent.
const FINAL = new Set([1003, 1007, 1008, 1009]);

/** The ws:// or wss:// URL of a path on this server. */
export function socketURL(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/**
 * Connects to `url`, passes every JSON message to `onMessage` and reconnects when the connection
 * drops. `onState(state, detail)` hears "connecting", "open", "retrying" (detail: the delay in
 * milliseconds), "closed" when the server refused the connection for good (detail: its reason)
 * and "idle" after close().
 */
export class LiveSocket {
  constructor(url, { onMessage, onState = () => {} }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.connect();
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.onState("connecting");
    const ws = (this.ws = new WebSocket(this.url));
    ws.onopen = () => {
      this.attempt = 0;
      this.onState("open");
    };
    ws.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (this.stopped || ws !== this.ws) return;
      if (FINAL.has(event.code)) {
        this.stopped = true;
        this.onState("closed", event.reason || `closed with code ${event.code}`);
        return;
      }
      // Jitter keeps a restarted server from being hit by every page at the same moment.
      const delay = Math.min(RETRY_MAX, RETRY_MIN * 2 ** this.attempt++) * (0.5 + Math.random() / 2);
      this.onState("retrying", delay);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  /** Sends a text message; false when not connected. */
  send(text) {
    if (!this.open) return false;
    this.ws.send(text);
    return true;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ws.close(1000);
    this.onState("idle");
  }
}

const LABELS = {
  idle: () => "not connected",
  connecting: () => "connecting…",
  open: () => "connected",
  retrying: (delay) => `reconnecting in ${Math.ceil(delay / 1000)} s`,
  closed: (reason) => reason,
};

/** Shows a LiveSocket state in a badge (styled by its data-state). */
export function showState(badge, state, detail) {
  badge.dataset.state = state;
  badge.textContent = LABELS[state](detail);
}
