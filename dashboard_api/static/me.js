// A manager's own numbers: today against yesterday, the month against the last one and the plan,
// and daily trend charts over the last 30 days, kept live by the WebSocket feed.
// URL: /me?manager=<id>[&days=30][&token=...]  (days: 7 to 90 days of trend charts)

import { getJSON, initToken } from "./api.js";
import { drawChart } from "./charts.js";
import { renderComparisons } from "./compare.js";
import { installDrilldown } from "./drilldown.js";
import { formatKpi } from "./format.js";
import { LiveFeed } from "./live.js";
import { clearError, reportError, setStatus, showDenied, showMessage, startClock } from "./screen.js";
import { showValue } from "./tween.js";

const TILE_KPIS = ["calls", "meetings", "deals_won", "revenue", "win_rate"];
const TRENDS = [
  { kpi: "calls", kind: "bar" },
  { kpi: "meetings", kind: "bar" },
  { kpi: "deals_won", kind: "bar" },
  { kpi: "revenue", kind: "line" },
];

const params = new URLSearchParams(window.location.search);
const managerId = params.get("manager");
const DEFAULT_DAYS = 30;
const days = parseDays(params.get("days"));

function parseDays(given) {
  if (given === null) return DEFAULT_DAYS;
  const number = Number(given);
  return Number.isInteger(number) && number >= 7 && number <= 90 ? number : null;
}

/** The local day `count - 1` days before `label` (YYYY-MM-DD), for the series' from. */
function daysBefore(label, count) {
  const day = new Date(label + "T00:00:00Z");
  day.setUTCDate(day.getUTCDate() - (count - 1));
  return day.toISOString().slice(0, 10);
}
const base = (kind) => `/api/v1/${kind}/managers/${encodeURIComponent(managerId)}`;

const state = {
  currency: "USD",
  day: null,
  month: null,
  today: null,
  yesterday: null,
  thisMonth: null,
  lastMonth: null,
  quota: null,
  pipeline: null,
  series: [], // [{label, kpis}] oldest first, the last one today
};

function fmt(kpi) {
  return (value) => formatKpi(kpi, value, state.currency);
}

function renderTiles(animate) {
  const pairs = { day: [state.today, state.yesterday], month: [state.thisMonth, state.lastMonth] };
  renderComparisons(document.getElementById("me-tiles"), TILE_KPIS, pairs, state.currency, animate);
}

function renderPlan(animate) {
  const quota = state.quota;
  const revenue = state.thisMonth ? state.thisMonth.revenue : null;
  const ratio = quota !== null && quota !== undefined && Number(quota) > 0 && revenue !== null ? Number(revenue) / Number(quota) : null;
  const plan = document.getElementById("plan");
  showValue(plan.querySelector('[data-kpi="quota_attainment"]'), ratio, fmt("quota_attainment"), animate);
  showValue(plan.querySelector('[data-kpi="revenue"]'), revenue, fmt("revenue"), animate);
  showValue(plan.querySelector('[data-kpi="quota"]'), quota, fmt("quota"), false);
  const weighted = state.pipeline ? state.pipeline.weighted_pipeline : null;
  showValue(plan.querySelector('[data-kpi="weighted_pipeline"]'), weighted, fmt("revenue"), animate);
  const forecast = weighted !== null && revenue !== null ? Number(revenue) + Number(weighted) : null;
  showValue(plan.querySelector('[data-kpi="forecast"]'), forecast, fmt("revenue"), animate);
  const progress = plan.querySelector(".progress");
  progress.querySelector(".bar").style.width = (ratio === null ? 0 : Math.min(100, ratio * 100)).toFixed(1) + "%";
  progress.dataset.level = ratio === null ? "none" : ratio >= 1 ? "done" : ratio >= 0.7 ? "near" : "low";
}

function renderTrends() {
  for (const { kpi, kind } of TRENDS) {
    const svg = document.querySelector(`#trend-${kpi} svg`);
    const points = state.series.map((point) => ({ label: point.label, value: point.kpis[kpi] }));
    drawChart(svg, points, { kpi, kind, currency: state.currency });
  }
}

async function loadRank() {
  // The leaderboard shows other managers' figures: a manager's own token may not read it.
  try {
    const board = await getJSON("/api/v1/leaderboard", { period: "day", sort: "revenue" });
    const row = board.rows.find((item) => item.manager_id === managerId);
    document.getElementById("rank-line").textContent = row ? rankText(row, board.rows.length) : "";
  } catch (error) {
    document.getElementById("rank-line").textContent = "";
  }
}

/** "#3 of 12 by revenue today", saying what the place rests on; nothing to rank is said as such. */
function rankText(row, count) {
  if (!row.active) return "Not ranked yet today";
  const place = (row.tied ? "tied #" : "#") + row.rank + " of " + count;
  if (Number(row.kpis.revenue) > 0) return place + " by revenue today";
  if (Number(row.kpis.deals_won) > 0) return place + " by deals won today";
  return place + " by calls today";
}

async function loadAll() {
  try {
    // Today first: the chart's first day counts back from today in the business time zone.
    const day = await getJSON(base("kpis"), { period: "day" });
    const [month, series, pipeline] = await Promise.all([
      getJSON(base("kpis"), { period: "month" }),
      getJSON(base("kpis") + "/series", { granularity: "day", from: daysBefore(day.period.label, days) }),
      getJSON(base("pipeline")),
    ]);
    state.currency = day.currency || state.currency;
    state.day = day.period.label;
    state.month = month.period.label;
    state.today = day.kpis;
    state.yesterday = day.previous.kpis;
    state.thisMonth = month.kpis;
    state.lastMonth = month.previous.kpis;
    state.quota = month.kpis.quota;
    state.pipeline = pipeline.pipeline;
    state.series = series.points.map((point) => ({ label: point.period.label, kpis: point.kpis }));
    clearError();
    renderAll(false);
  } catch (error) {
    if (error.status === 404) showMessage(`Unknown manager ${managerId}: no event was attributed to it and it has no quota this month`, "error");
    else reportError(error, "Could not load the figures");
    throw error;
  }
  loadRank();
}

function renderAll(animate) {
  renderTiles(animate);
  renderPlan(animate);
  renderTrends();
}

function applyToday(kpis) {
  state.today = kpis;
  const last = state.series[state.series.length - 1];
  if (last && last.label === state.day) last.kpis = kpis;
}

function onSnapshot(message) {
  const snapshot = message.scopes["m:" + managerId];
  if (!snapshot) return;
  if (state.day && snapshot.day.label !== state.day) {
    loadAll().catch(() => {});
    return;
  }
  applyToday(snapshot.day.kpis);
  state.thisMonth = snapshot.month.kpis;
  if (snapshot.pipeline) state.pipeline = snapshot.pipeline;
  renderAll(true);
}

function onChange(message) {
  if (message.scope !== "m:" + managerId) return;
  const current = message.g === "day" ? state.day : state.month;
  if (current && message.b > current) {
    loadAll().catch(() => {});
    return;
  }
  if (message.g === "day" && message.b === state.day) {
    applyToday(message.kpis);
  } else if (message.g === "month" && message.b === state.month) {
    state.thisMonth = message.kpis;
  } else if (message.g === "day") {
    // A late event for an earlier day of the chart.
    const point = state.series.find((item) => item.label === message.b);
    if (!point) return;
    point.kpis = message.kpis;
  } else {
    return;
  }
  renderAll(true);
}

function onPipeline(message) {
  if (message.scope !== "m:" + managerId) return;
  state.pipeline = message.pipeline;
  renderPlan(true);
}

async function listManagers() {
  try {
    const { managers } = await getJSON("/api/v1/managers");
    showMessage("Choose a manager (or open /me?manager=<id>):", "error");
    const choices = document.createElement("div");
    choices.className = "choices";
    for (const id of managers) {
      const link = document.createElement("a");
      link.href = "/me?manager=" + encodeURIComponent(id);
      link.textContent = id;
      choices.appendChild(link);
    }
    document.getElementById("message").appendChild(choices);
  } catch (error) {
    reportError(error, "Could not list the managers");
  }
}

function start() {
  initToken();
  startClock();
  const unknown = [...params.keys()].filter((name) => !["manager", "days", "token"].includes(name));
  if (days === null || unknown.length) {
    setStatus("connecting");
    showMessage(
      days === null
        ? `days=${params.get("days")} is not a number of days this view shows: use 7 to 90 (default ${DEFAULT_DAYS})`
        : `Unknown setting ${unknown.join(", ")} in the address: this page takes manager, days, token`,
      "error",
    );
    return;
  }
  if (!managerId) {
    setStatus("connecting");
    listManagers();
    return;
  }
  document.getElementById("scope-name").textContent = "· " + managerId;
  window.addEventListener("resize", renderTrends);
  document.title = "CRM Pulse — " + managerId;
  installDrilldown("m:" + managerId, { currency: () => state.currency });
  const feed = new LiveFeed("/ws", ["m:" + managerId], {
    onStatus: setStatus,
    onSnapshot,
    onChange,
    onPipeline,
    onDenied: showDenied,
    onError: (text) => {
      if (/^(unauthorized|forbidden)/.test(text)) showDenied(text.startsWith("unauthorized") ? 401 : 403, text.replace(/^\w+:\s*/, ""));
    },
    beforeReconnect: loadAll,
  });
  loadAll()
    .catch(() => {})
    .finally(() => feed.start());
}

start();
