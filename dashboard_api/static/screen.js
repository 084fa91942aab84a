// What every display page shows the same way: the clock, the live status, full-screen messages.

import { authMessage } from "./api.js";

const STATUS_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  unauthorized: "no access",
  error: "not live",
};

/** Tick the header clock every second. */
export function startClock() {
  const tick = () => {
    const now = new Date();
    document.getElementById("clock-time").textContent = now.toLocaleTimeString("en-GB");
    document.getElementById("clock-date").textContent = now.toLocaleDateString("en-GB", {
      weekday: "long",
      day: "numeric",
      month: "long",
      year: "numeric",
    });
  };
  tick();
  setInterval(tick, 1000);
}

let feedState = "connecting";
let unauthorized = false;
let failed = false; // an error message is over the page: the figures behind it are not live

function renderStatus() {
  const state = unauthorized ? "unauthorized" : failed ? "error" : feedState;
  const status = document.getElementById("live-status");
  status.dataset.state = state;
  document.getElementById("live-status-text").textContent = STATUS_TEXT[state] || state;
}

/** Show the connection state of the live feed: "connecting", "live" or "reconnecting". */
export function setStatus(state) {
  feedState = state;
  if (state === "live") unauthorized = false;
  renderStatus();
}

/** A message over the page (null hides it); `kind` "auth" or "error" styles it. */
export function showMessage(text, kind = "error", detail = "") {
  const message = document.getElementById("message");
  message.hidden = !text;
  message.dataset.kind = text ? kind : "";
  message.textContent = text || "";
  if (text && detail) {
    const small = document.createElement("small");
    small.className = "detail";
    small.textContent = detail;
    message.appendChild(small);
  }
  failed = Boolean(text) && kind === "error";
  renderStatus();
}

/**
 * Report a failed REST load: 401/403 get the access message (and the status "no access");
 * an unreachable server is left to the live status; anything else is shown with its reason.
 */
export function reportError(error, what) {
  if (error && error.isAuth) {
    showDenied(error.status, error.message);
    return;
  }
  if (error && error.status) {
    showMessage(what + ": " + error.message, "error");
  }
}

/** The server refused the token (401) or its role (403): say so over the page. */
export function showDenied(status, detail) {
  const shown = document.getElementById("message");
  // The first explanation of a refusal stays (REST and the socket both report the same token).
  if (!shown.hidden && shown.dataset.kind === "auth" && shown.dataset.status === String(status)) return;
  const { text, hint } = authMessage(status, detail);
  showMessage(text, "auth", hint);
  shown.dataset.status = String(status);
  unauthorized = true;
  renderStatus();
}

/** A successful load: drop an access or load message shown before. */
export function clearError() {
  const message = document.getElementById("message");
  if (!message.hidden) showMessage(null);
  failed = false;
  if (unauthorized) {
    unauthorized = false;
    renderStatus();
  }
}
