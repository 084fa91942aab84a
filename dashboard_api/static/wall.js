// CRM Pulse wall display (TV mode): leaderboard, funnel and comparisons of the company or a team,
// rotating as a playlist, kept live by the WebSocket feed (docs/websocket.md), with an alert ticker.
// Plain JavaScript modules, no build step, nothing fetched but this server's REST API and "/ws".
//
// URL: /?scope=c | /?scope=t:team-01 (or ?team=team-01), &view=funnel, or
//      &playlist=leaderboard,funnel,compare&rotate=20 (seconds; 0 stops), &rows=N (at most N managers;
//      default: every manager that fits the screen, then a "+N more" line), &sort=calls|meetings|deals_won|revenue,
//      &token=... (kept for the tab). /?manager=<id> opens the manager's own view (/me).

import { getJSON, initToken } from "./api.js";
import { renderComparisons } from "./compare.js";
import { installDrilldown } from "./drilldown.js";
import { formatKpi, KPI_LABELS, ruleTitle, scopeName } from "./format.js";
import { LiveFeed } from "./live.js";
import { clearError, reportError, setStatus, showDenied, showMessage, startClock } from "./screen.js";
import { flash, showValue } from "./tween.js";

const VIEWS = ["leaderboard", "funnel", "compare"];
const ROW_KPIS = ["calls", "meetings", "deals_won", "revenue"];
const TOTAL_KPIS = ["calls", "meetings", "deals_won", "revenue"];
const COMPARE_KPIS = ["calls", "meetings", "deals_created", "deals_won", "revenue", "win_rate"];
const ALERT_REFRESH_MS = 30000;

const params = new URLSearchParams(window.location.search);

function redirectToManagerView() {
  const scope = params.get("scope") || "";
  const manager = params.get("manager") || (scope.startsWith("m:") ? scope.slice(2) : null);
  if (!manager) return false;
  const rest = new URLSearchParams(params);
  rest.delete("scope");
  rest.delete("token"); // already kept for this tab
  rest.set("manager", manager);
  window.location.replace("/me?" + rest.toString());
  return true;
}

function parseScope() {
  const scope = params.get("scope") || (params.get("team") ? "t:" + params.get("team") : "c");
  if (scope === "c") return { token: "c", team: null };
  if (scope.startsWith("t:") && scope.length > 2) return { token: scope, team: scope.slice(2) };
  return { token: "c", team: null, invalid: scope };
}

function parsePlaylist() {
  const given = (params.get("playlist") || params.get("view") || VIEWS.join(","))
    .split(",")
    .map((name) => name.trim())
    .filter((name) => VIEWS.includes(name));
  const views = given.length ? given : VIEWS;
  const seconds = Number(params.get("rotate") ?? "20");
  return { views, rotateMs: Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0 };
}

const PARAMS = ["scope", "team", "manager", "view", "playlist", "rotate", "rows", "sort", "token"];

/** What is wrong with the page's address: an unknown parameter or a value it cannot use, else null. */
function addressProblem() {
  const unknown = [...params.keys()].filter((name) => !PARAMS.includes(name));
  if (unknown.length) return `Unknown setting ${unknown.join(", ")} in the address: this page takes ${PARAMS.join(", ")}`;
  const views = (params.get("playlist") || params.get("view") || "").split(",").map((name) => name.trim()).filter(Boolean);
  const badView = views.find((name) => !VIEWS.includes(name));
  if (badView) return `Unknown view ${badView}: use ${VIEWS.join(", ")}`;
  if (params.has("sort") && !ROW_KPIS.includes(params.get("sort"))) return `Cannot rank by ${params.get("sort")}: use ${ROW_KPIS.join(", ")}`;
  if (params.has("rows") && !/^[1-9][0-9]{0,2}$/.test(params.get("rows"))) return `rows=${params.get("rows")} is not a number of rows: use 1 to 100, or leave it out to fit every manager`;
  if (params.has("rotate") && !(Number(params.get("rotate")) >= 0)) return `rotate=${params.get("rotate")} is not a number of seconds (0 stops the rotation)`;
  return null;
}

const scope = parseScope();
const playlist = parsePlaylist();
// ?rows=N caps the board; without it every manager is shown that fits the screen (the rest are counted).
const maxRows = params.get("rows") ? Math.max(1, Math.min(100, parseInt(params.get("rows"), 10) || 10)) : Infinity;
const sortKpi = ROW_KPIS.includes(params.get("sort")) ? params.get("sort") : "revenue";
const team = scope.team;
const kpiBase = team ? "/api/v1/kpis/teams/" + encodeURIComponent(team) : "/api/v1/kpis/company";
const funnelBase = team ? "/api/v1/funnel/teams/" + encodeURIComponent(team) : "/api/v1/funnel/company";

const state = {
  day: null, // current local day label, e.g. "2026-11-28"
  month: null, // current month label, e.g. "2026-11"
  currency: "USD",
  totals: { day: null, month: null, yesterday: null, lastMonth: null, quota: null },
  managers: new Map(), // manager id -> { day, month, quota }
  members: null, // team view: the team's manager ids (null: every manager)
  stages: [], // the funnel's open stages, in order
  alerts: [],
};

// ---------- helpers ----------

function manager(id) {
  let entry = state.managers.get(id);
  if (!entry) {
    entry = { day: null, month: null, quota: null };
    state.managers.set(id, entry);
  }
  return entry;
}

function attainment(kpis, quota) {
  if (!kpis || quota === null || quota === undefined || Number(quota) === 0) return null;
  return Number(kpis.revenue) / Number(quota);
}

function fmt(kpi) {
  return (value) => formatKpi(kpi, value, state.currency);
}

function setProgress(container, ratio) {
  const bar = container.querySelector(".bar");
  const percent = ratio === null ? 0 : Math.max(0, Math.min(100, ratio * 100));
  bar.style.width = percent.toFixed(1) + "%";
  container.dataset.level = ratio === null ? "none" : ratio >= 1 ? "done" : ratio >= 0.7 ? "near" : "low";
}

function show(element, kpi, value, animate) {
  if (element) showValue(element, value, fmt(kpi), animate);
}

// ---------- rendering: leaderboard ----------

function renderTotals(animate) {
  for (const period of ["day", "month"]) {
    const kpis = state.totals[period];
    for (const kpi of TOTAL_KPIS) {
      const cell = document.querySelector(`[data-scope="total"][data-period="${period}"][data-kpi="${kpi}"]`);
      show(cell, kpi, kpis ? kpis[kpi] : null, animate);
    }
  }
  const ratio = attainment(state.totals.month, state.totals.quota);
  show(document.querySelector('[data-scope="total"][data-kpi="quota_attainment"]'), "quota_attainment", ratio, animate);
  setProgress(document.querySelector('[data-progress="total"]'), ratio);
}

// Ties on the ranked KPI go by deals won, then calls; managers equal on all three share a rank.
const RANK_KEYS = [sortKpi, ...["deals_won", "calls"].filter((kpi) => kpi !== sortKpi)];

function rankKey(entry) {
  return RANK_KEYS.map((kpi) => Number(entry.day ? entry.day[kpi] : 0) || 0);
}

/** Every manager of the board, best first: {id, entry, rank, tied}; rank null for one with nothing on any key. */
function ranked() {
  const rows = Array.from(state.managers.entries())
    .filter(([id]) => state.members === null || state.members.has(id))
    .map(([id, entry]) => ({ id, entry, key: rankKey(entry) }));
  const compare = (a, b) => {
    for (let i = 0; i < RANK_KEYS.length; i++) if (a.key[i] !== b.key[i]) return b.key[i] - a.key[i];
    return 0;
  };
  rows.sort((a, b) => compare(a, b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  rows.forEach((row, index) => {
    const before = rows[index - 1];
    const after = rows[index + 1];
    row.rank = before && compare(before, row) === 0 ? before.rank : index + 1;
    row.tied = Boolean((before && compare(before, row) === 0) || (after && compare(after, row) === 0));
    if (row.key.every((value) => value === 0)) row.rank = null;
  });
  return rows;
}

function renderLeaderboard(animate) {
  const body = document.getElementById("leaderboard");
  const template = document.getElementById("row-template");
  const existing = new Map();
  for (const row of body.querySelectorAll("tr[data-manager]")) existing.set(row.dataset.manager, row);
  const all = ranked();
  const rows = all.slice(0, maxRows);
  rows.forEach(({ id, entry, rank: rankValue, tied }, index) => {
    let row = existing.get(id);
    if (!row) {
      row = template.content.firstElementChild.cloneNode(true);
      row.dataset.manager = id;
      row.querySelector("[data-name]").textContent = id;
    }
    existing.delete(id);
    // No rank (and no medal) for a manager with nothing yet; ties share a rank, marked "=".
    const rank = rankValue === null ? "" : String(rankValue);
    if (row.dataset.rank !== undefined && row.dataset.rank !== rank && animate) flash(row.querySelector("[data-rank]"));
    row.dataset.rank = rank;
    row.dataset.medal = rankValue !== null && rankValue <= 3 ? String(rankValue) : "";
    row.querySelector("[data-rank]").textContent = rankValue === null ? "–" : (tied ? "=" : "") + rank;
    for (const kpi of ROW_KPIS) show(row.querySelector(`[data-kpi="${kpi}"]`), kpi, entry.day ? entry.day[kpi] : 0, animate);
    const ratio = attainment(entry.month, entry.quota);
    show(row.querySelector('[data-kpi="quota_attainment"]'), "quota_attainment", ratio, animate);
    setProgress(row.querySelector(".progress"), ratio);
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
  for (const row of existing.values()) row.remove();
  document.getElementById("leaderboard-empty").hidden = rows.length > 0;
  fitRows(all.length);
}

/** Row sizes of the board, biggest first (wall.css): a few managers get big rows, many get dense ones. */
const ROW_SIZES = ["roomy", "large", "", "compact", "dense"];

/**
 * Show every manager the screen holds: the biggest rows that fit them all, and when even the densest
 * rows do not, the lowest-ranked are hidden behind a "+N more" line (never dropped without a word).
 */
function fitRows(total) {
  const table = document.getElementById("leaderboard-table");
  const more = document.getElementById("leaderboard-more");
  const view = document.getElementById("view-leaderboard");
  const rows = Array.from(document.getElementById("leaderboard").children);
  for (const row of rows) row.hidden = false;
  let shown = rows.length;
  const say = () => {
    more.hidden = total <= shown;
    more.textContent = "+" + (total - shown) + " more";
    more.dataset.count = String(total - shown);
  };
  say();
  const first = rows.length <= 5 ? 0 : rows.length <= 8 ? 1 : 2;
  table.dataset.size = ROW_SIZES[first];
  if (view.hidden) return; // measured again when the playlist shows it
  const limit = view.getBoundingClientRect().bottom + 1;
  const overflows = () => (more.hidden ? table : more).getBoundingClientRect().bottom > limit;
  for (let size = first; size < ROW_SIZES.length && overflows(); size++) table.dataset.size = ROW_SIZES[size];
  while (shown > 1 && overflows()) {
    shown -= 1;
    rows[shown].hidden = true;
    say();
  }
}

// ---------- rendering: funnel ----------

function renderFunnel(animate) {
  const root = document.getElementById("funnel");
  const kpis = state.totals.month;
  const entries = state.stages.map((stage) => (kpis && kpis.stage_entries ? kpis.stage_entries[stage] || 0 : 0));
  const won = kpis ? kpis.deals_won : 0;
  const names = [...state.stages, "won"];
  const counts = [...entries, won];
  if (root.dataset.stages !== names.join(",")) {
    root.replaceChildren();
    names.forEach((name, i) => {
      const row = document.createElement("div");
      row.className = "funnel-stage" + (name === "won" ? " won" : "");
      row.dataset.stage = name;
      row.innerHTML =
        '<div class="stage-name"></div><div class="stage-bar"><div class="fill"></div>' +
        '<span class="stage-count" data-kpi="entries"></span></div><div class="stage-conv"></div>';
      row.querySelector(".stage-name").textContent = name;
      root.appendChild(row);
      if (i < names.length - 1) row.dataset.next = names[i + 1];
    });
    root.dataset.stages = names.join(",");
  }
  const widest = Math.max(1, ...counts);
  names.forEach((name, i) => {
    const row = root.querySelector(`[data-stage="${name}"]`);
    row.querySelector(".fill").style.width = Math.max(0.5, (counts[i] / widest) * 100).toFixed(1) + "%";
    show(row.querySelector(".stage-count"), "entries", counts[i], animate);
    const conv = row.querySelector(".stage-conv");
    if (i < names.length - 1) {
      const ratio = counts[i] ? counts[i + 1] / counts[i] : null;
      show(conv, "conversion", ratio, animate);
      conv.title = "conversion to " + names[i + 1];
    }
  });
  show(document.querySelector('[data-funnel="won"]'), "deals_won", won, animate);
  show(document.querySelector('[data-funnel="lost"]'), "deals_lost", kpis ? kpis.deals_lost : null, animate);
  show(document.querySelector('[data-funnel="overall"]'), "conversion", entries[0] ? won / entries[0] : null, animate);
}

// ---------- rendering: comparisons ----------

function renderCompare(animate) {
  const pairs = { day: [state.totals.day, state.totals.yesterday], month: [state.totals.month, state.totals.lastMonth] };
  renderComparisons(document.getElementById("compare"), COMPARE_KPIS, pairs, state.currency, animate);
}

function renderAll(animate) {
  renderTotals(animate);
  renderLeaderboard(animate);
  renderFunnel(animate);
  renderCompare(animate);
}

// ---------- alert ticker ----------

const CONDITION_WORDS = { "<": "below", "<=": "at or below", ">": "above", ">=": "at or above" };

/** What the ticker says of an alert: rule title, whose, and the value (formatted by the KPI's kind) when it changed. */
function alertItem(entry) {
  const labels = entry.labels || {};
  const status = entry.to || entry.status || "";
  const severity = entry.severity || labels.severity || "";
  const when = entry.at ? new Date(entry.at).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" }) : "";
  const kpi = entry.kpi || labels.kpi || "";
  const title = ruleTitle(entry.rule_name || entry.alertname || labels.alertname || entry.rule_id);
  const whose = labels.deal_id
    ? "Deal " + labels.deal_id + (labels.manager ? " of " + labels.manager : "")
    : scopeName(entry.scope || labels.scope);
  const parts = [title, whose];
  if (entry.value !== undefined && entry.value !== null && entry.value !== "none") {
    const label = (KPI_LABELS[kpi] || kpi.replace(/^deal\./, "").replace(/_/g, " ") || "value").toLowerCase();
    const word = CONDITION_WORDS[entry.op];
    const limit = word && entry.threshold !== undefined ? " (alert " + word + " " + formatKpi(kpi, entry.threshold, state.currency) + ")" : "";
    // The value the rule saw when the alert changed state, not a live figure: say when.
    parts.push(label + " " + formatKpi(kpi, entry.value, state.currency) + (when ? " at " + when : "") + limit);
  } else if (when) {
    parts.push(when);
  }
  return { id: entry.id || entry.seq, status, severity, text: parts.filter(Boolean).join(" · ") };
}

let tickerShown = null;

function renderTicker() {
  const track = document.getElementById("ticker-track");
  const items = state.alerts.slice(0, 20);
  // Unchanged items keep scrolling where they are; a refresh with news starts the ticker over.
  const key = items.map((item) => item.id + ":" + item.status).join(",");
  if (key === tickerShown) return;
  tickerShown = key;
  track.replaceChildren();
  if (!items.length) {
    const quiet = document.createElement("span");
    quiet.className = "ticker-item quiet";
    quiet.textContent = "No alerts";
    track.appendChild(quiet);
  }
  for (const item of items) {
    const span = document.createElement("span");
    span.className = "ticker-item";
    span.dataset.alert = item.id;
    span.dataset.status = item.status;
    span.dataset.severity = item.severity;
    span.innerHTML = '<b class="alert-status"></b> <span class="alert-text"></span>';
    span.querySelector(".alert-status").textContent = item.status.toUpperCase();
    span.querySelector(".alert-text").textContent = item.text;
    track.appendChild(span);
  }
  track.classList.remove("scrolling");
  const overflow = track.scrollWidth > document.getElementById("ticker-window").clientWidth;
  track.classList.toggle("scrolling", overflow);
  track.style.animationDuration = Math.max(20, track.scrollWidth / 120) + "s";
}

let alertsAllowed = true;

function alertsUnavailable(text) {
  alertsAllowed = false;
  state.alerts = [];
  tickerShown = null;
  renderTicker();
  const quiet = document.querySelector("#ticker-track .quiet");
  if (quiet) quiet.textContent = text;
}

async function loadAlerts() {
  if (!alertsAllowed) return;
  try {
    const history = await getJSON("/api/v1/alerts/history", { limit: "40" });
    state.alerts = history.entries.filter((entry) => entry.kind !== "notification").map(alertItem);
    renderTicker();
  } catch (error) {
    // Every token reads the alerts of its scopes; an API that refuses them (403) hides the ticker.
    if (error.status === 403) alertsUnavailable("Alerts are not shown to this token");
    else if (error.status === 401) reportError(error, "alerts");
  }
}

function onAlert(message) {
  if (message.kind === "notification") return;
  const item = alertItem(message);
  state.alerts = [item, ...state.alerts.filter((known) => known.id !== item.id)];
  renderTicker();
  const first = document.querySelector("#ticker-track .ticker-item");
  if (first) flash(first);
}

// ---------- REST loads ----------

async function loadAll() {
  try {
    const teamQuery = team ? { team_id: team } : {};
    const [dayBoard, monthBoard, dayReport, monthReport, funnel] = await Promise.all([
      getJSON("/api/v1/leaderboard", { period: "day", sort: sortKpi, ...teamQuery }),
      getJSON("/api/v1/leaderboard", { period: "month", sort: "revenue", ...teamQuery }),
      getJSON(kpiBase, { period: "day" }),
      getJSON(kpiBase, { period: "month" }),
      getJSON(funnelBase, { period: "month" }),
    ]);
    state.currency = dayReport.currency || state.currency;
    state.day = dayReport.period.label;
    state.month = monthReport.period.label;
    state.totals = {
      day: dayReport.kpis,
      month: monthReport.kpis,
      yesterday: dayReport.previous.kpis,
      lastMonth: monthReport.previous.kpis,
      quota: monthReport.kpis.quota,
    };
    state.managers = new Map();
    for (const row of dayBoard.rows) manager(row.manager_id).day = row.kpis;
    for (const row of monthBoard.rows) {
      const entry = manager(row.manager_id);
      entry.month = row.kpis;
      entry.quota = row.kpis.quota;
    }
    state.members = team ? new Set(state.managers.keys()) : null;
    state.stages = funnel.funnel.stages.map((stage) => stage.stage);
    clearError();
    renderAll(false);
  } catch (error) {
    if (error.status === 404 && team) showMessage("Unknown team " + team + ": no event has carried it yet", "error");
    else reportError(error, "Could not load the figures");
    throw error;
  }
}

let membershipTimer = null;

function refreshMembershipSoon() {
  if (membershipTimer) return;
  membershipTimer = setTimeout(async () => {
    membershipTimer = null;
    try {
      const board = await getJSON("/api/v1/leaderboard", { period: "month", team_id: team });
      for (const row of board.rows) {
        const entry = manager(row.manager_id);
        if (!entry.month) entry.month = row.kpis;
        entry.quota = row.kpis.quota;
        state.members.add(row.manager_id);
      }
      renderLeaderboard(true);
    } catch (e) {
      /* the next change retries */
    }
  }, 2000);
}

// ---------- live feed ----------

function applySnapshot(message) {
  for (const [token, snapshot] of Object.entries(message.scopes)) {
    state.day = snapshot.day.label;
    state.month = snapshot.month.label;
    if (token === scope.token) {
      state.totals.day = snapshot.day.kpis;
      state.totals.month = snapshot.month.kpis;
    } else if (token.startsWith("m:")) {
      const id = token.slice(2);
      if (state.members !== null && !state.members.has(id)) continue;
      const entry = manager(id);
      entry.day = snapshot.day.kpis;
      entry.month = snapshot.month.kpis;
    }
  }
  renderAll(true);
}

function applyChange(message) {
  const current = message.g === "day" ? state.day : state.month;
  if (current && message.b > current) {
    // Midnight (or a new month) in the business time zone: start over from the server's figures.
    loadAll().catch(() => {});
    return;
  }
  if (message.b !== current) return; // a late event for an earlier bucket: not on the wall
  if (message.scope === scope.token) {
    state.totals[message.g] = message.kpis;
    renderTotals(true);
    if (message.g === "month") renderFunnel(true);
    renderCompare(true);
  } else if (message.scope.startsWith("m:")) {
    const id = message.scope.slice(2);
    if (state.members !== null && !state.members.has(id)) {
      refreshMembershipSoon(); // a manager new to the team, or another team's
      return;
    }
    manager(id)[message.g] = message.kpis;
    renderLeaderboard(true);
  }
}

// ---------- playlist ----------

function showView(index) {
  const name = playlist.views[index % playlist.views.length];
  for (const section of document.querySelectorAll("section[data-view]")) section.hidden = section.dataset.view !== name;
  document.body.dataset.view = name;
  if (name === "leaderboard") renderLeaderboard(false);
  for (const item of document.querySelectorAll("#playlist [data-show]")) {
    item.classList.toggle("active", item.dataset.show === name);
  }
  const bar = document.getElementById("playlist-progress");
  if (bar) {
    bar.classList.remove("running");
    void bar.offsetWidth;
    if (playlist.rotateMs) bar.classList.add("running");
  }
}

function startPlaylist() {
  const nav = document.getElementById("playlist");
  if (playlist.views.length > 1) {
    for (const name of playlist.views) {
      const item = document.createElement("span");
      item.dataset.show = name;
      item.textContent = document.querySelector(`section[data-view="${name}"]`).dataset.short;
      item.title = document.querySelector(`section[data-view="${name}"]`).dataset.title;
      nav.appendChild(item);
    }
    if (playlist.rotateMs) {
      const bar = document.createElement("div");
      bar.id = "playlist-progress";
      bar.style.animationDuration = playlist.rotateMs + "ms";
      nav.appendChild(bar);
    }
  } else {
    const only = document.querySelector(`section[data-view="${playlist.views[0]}"]`);
    nav.textContent = only.dataset.title;
  }
  let index = 0;
  showView(index);
  if (playlist.rotateMs && playlist.views.length > 1) {
    setInterval(() => showView(++index), playlist.rotateMs);
  }
}

// ---------- start ----------

function start() {
  initToken();
  if (redirectToManagerView()) return;
  document.getElementById("scope-name").textContent = team ? "· " + team : "· company";
  if (scope.invalid) showMessage("Unknown scope " + scope.invalid + ": use ?scope=c or ?scope=t:<team id>", "error");
  const problem = addressProblem();
  if (problem) {
    // Say so rather than show something else than was asked for; nothing loads until the address is fixed.
    showMessage(problem, "error");
    startClock();
    return;
  }
  startClock();
  startPlaylist();
  installDrilldown(scope.token, { currency: () => state.currency });
  renderAll(false);
  const feed = new LiveFeed(
    "/ws",
    "*",
    {
      onStatus: setStatus,
      onSnapshot: applySnapshot,
      onChange: applyChange,
      onAlert,
      onDenied: showDenied,
      onError: (text) => {
        if (/^forbidden/.test(text) && /alert/i.test(text)) {
          feed.alerts = false;
          alertsUnavailable("Alerts are not shown to this token");
        } else if (/^(unauthorized|forbidden)/.test(text)) {
          showDenied(text.startsWith("unauthorized") ? 401 : 403, text.replace(/^\w+:\s*/, ""));
        } else if (/alert/i.test(text)) {
          // The alerts missed while away could not be replayed (Redis): the REST history fills the
          // ticker instead, and live alerts keep coming.
          loadAlerts();
        }
      },
      beforeReconnect: () => Promise.all([loadAll(), loadAlerts()]),
    },
    { alerts: true },
  );
  setInterval(loadAlerts, ALERT_REFRESH_MS);
  Promise.allSettled([loadAll(), loadAlerts()]).then(() => {
    feed.alerts = alertsAllowed;
    feed.start();
  });
}

start();
