// The live feed (docs/websocket.md): subscribe, apply snapshot and changes, reconnect with
// backoff and jitter, resubscribe with the last seen seq so the page catches up.

import { socketUrl } from "./api.js";

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const SILENCE_LIMIT_MS = 45000; // three server heartbeats (15 s each)

/** Compare two change seqs "<ms>-<n>" as pairs of integers. */
export function compareSeq(a, b) {
  const [am, an] = String(a).split("-").map(Number);
  const [bm, bn] = String(b).split("-").map(Number);
  return am !== bm ? am - bm : an - bn;
}

const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_FORBIDDEN = 4403;

/**
 * One WebSocket connection that stays up: `scopes` is a list of scope tokens or "*".
 * Handlers: onSnapshot(msg), onChange(msg), onPipeline(msg), onAlert(msg), onStatus(state),
 * onDenied(status) (the socket was closed for the token: 401, or 403), onError(text) (the server
 * did not accept a request), beforeReconnect() (async; a REST catch-up before
 * subscribing again). States: "connecting", "live", "reconnecting".
 *
 * After a reconnect it subscribes with `since` (and `since_i`): the server replays the changes
 * missed and says "resumed", or sends a new snapshot (`resync`) when it no longer has them.
 * Alert messages resume the same way with `alerts_since`.
 */
export class LiveFeed {
  constructor(path, scopes, handlers, { alerts = false } = {}) {
    this.path = path;
    this.scopes = scopes;
    this.handlers = handlers;
    this.alerts = alerts;
    this.socket = null;
    this.seq = null; // last change seq applied (or the snapshot's)
    this.index = null; // i of the last change applied within its seq; null after a snapshot
    this.alertSeq = null;
    this.delay = FIRST_DELAY_MS;
    this.timer = null;
    this.lastHeard = 0;
    this.watchdog = null;
  }

  start() {
    this.status("connecting");
    this.connect();
    this.watchdog = setInterval(() => this.checkSilence(), 5000);
  }

  status(state) {
    if (this.handlers.onStatus) this.handlers.onStatus(state);
  }

  subscribeRequest() {
    const request = { type: "subscribe", scopes: this.scopes };
    if (this.seq && this.seq !== "0-0") {
      request.since = this.seq;
      if (this.index !== null) request.since_i = this.index;
    }
    if (this.alerts) {
      request.alerts = true;
      if (this.alertSeq) request.alerts_since = this.alertSeq;
    }
    return request;
  }

  connect() {
    this.timer = null;
    let ws;
    try {
      ws = new WebSocket(socketUrl(this.path));
    } catch (e) {
      this.scheduleReconnect();
      return;
    }
    this.socket = ws;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      ws.send(JSON.stringify(this.subscribeRequest()));
    };
    ws.onmessage = (event) => this.receive(event);
    ws.onclose = (event) => {
      if (this.socket !== ws) return;
      this.socket = null;
      if (event.code === CLOSE_UNAUTHORIZED || event.code === CLOSE_FORBIDDEN) {
        this.delay = MAX_DELAY_MS; // a new token needs a reload; keep trying slowly meanwhile
        if (this.handlers.onDenied) this.handlers.onDenied(event.code === CLOSE_UNAUTHORIZED ? 401 : 403);
      }
      this.status("reconnecting");
      this.scheduleReconnect();
    };
    ws.onerror = () => ws.close();
  }

  live() {
    this.delay = FIRST_DELAY_MS;
    this.status("live");
  }

  receive(event) {
    this.lastHeard = Date.now();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    const handlers = this.handlers;
    switch (message.type) {
      case "snapshot":
        this.seq = message.seq;
        this.index = null;
        this.live();
        if (handlers.onSnapshot) handlers.onSnapshot(message);
        break;
      case "resumed":
        this.live();
        break;
      case "change":
      case "pipeline":
        // Values are absolute: an entry before what we hold adds nothing.
        if (message.seq && this.seq && compareSeq(message.seq, this.seq) < 0) return;
        if (message.seq) {
          this.seq = message.seq;
          this.index = Number.isInteger(message.i) ? message.i : null;
        }
        if (message.type === "change" && handlers.onChange) handlers.onChange(message);
        if (message.type === "pipeline" && handlers.onPipeline) handlers.onPipeline(message);
        break;
      case "alert":
        if (message.seq) this.alertSeq = message.seq;
        if (handlers.onAlert) handlers.onAlert(message);
        break;
      case "error":
        if (handlers.onError) handlers.onError(String(message.message || ""));
        break;
      case "ping":
        if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send('{"type":"pong"}');
        break;
      default:
        break;
    }
  }

  scheduleReconnect() {
    if (this.timer) return;
    const delay = this.delay * (0.75 + Math.random() * 0.5);
    this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    this.timer = setTimeout(async () => {
      if (this.handlers.beforeReconnect) {
        try {
          await this.handlers.beforeReconnect();
        } catch (e) {
          /* the socket attempt below reports the outage again */
        }
      }
      this.connect();
    }, delay);
  }

  checkSilence() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN && Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
      this.socket.close();
    }
  }
}
