// Drill-down: click a number on the wall display or the manager view to list the deals and events
// behind it (GET /api/v1/drilldown), paged and sortable, in a panel over the page.
// The cell is read from the page's own markup: data-kpi (and data-period, a funnel stage, a
// leaderboard row's data-manager); numbers that are no KPI cell (conversion, quota) are not links.

import { getJSON } from "./api.js";
import { formatKpi, KPI_LABELS } from "./format.js";

const PAGE_SIZE = 25;
const DRILLABLE = new Set([
  "calls", "call_duration_s", "meetings", "proposals", "deals_created", "deals_won", "deals_lost", "revenue",
  "avg_deal_size", "win_rate", "avg_cycle_days", "repeat_deals", "repeat_revenue", "new_customers",
  "quota_attainment",
]);
const COLUMNS = [
  { key: "occurred_at", label: "When", sort: "occurred_at" },
  { key: "type", label: "Event", sort: "type" },
  { key: "manager_id", label: "Manager", sort: "manager_id" },
  { key: "deal_id", label: "Deal", sort: "deal_id" },
  { key: "customer_id", label: "Customer", sort: "customer_id" },
  { key: "stage", label: "Stage" },
  { key: "lead_source", label: "Source" },
  { key: "lost_reason", label: "Lost reason" },
  { key: "amount", label: "Amount", sort: "amount", money: true },
  { key: "revenue", label: "Revenue at win", sort: "revenue", money: true },
  { key: "duration_s", label: "Duration (s)", sort: "duration_s" },
  { key: "cycle_days", label: "Cycle (days)", sort: "cycle_days" },
];

let panel = null;
let current = null; // { cell, sort, order, page }

/** The drill-down cell of a clicked element, or null: {scope, kpi, key, period}. */
export function cellOf(element, pageScope, rowPeriod = "day") {
  const target = element.closest("[data-kpi], [data-funnel]");
  if (!target) return null;
  const row = target.closest("tr[data-manager]");
  const scope = row ? "m:" + row.dataset.manager : pageScope;
  const periodHolder = target.closest("[data-period]");
  let period = periodHolder ? periodHolder.dataset.period : row ? rowPeriod : "month";
  let kpi = target.dataset.kpi;
  let key = null;
  if (target.dataset.funnel) {
    kpi = { won: "deals_won", lost: "deals_lost" }[target.dataset.funnel];
    period = "month";
  } else if (kpi === "entries") {
    const stage = target.closest("[data-stage]");
    if (!stage) return null;
    period = "month";
    if (stage.dataset.stage === "won") kpi = "deals_won";
    else [kpi, key] = ["stage_entries", stage.dataset.stage];
  }
  if (kpi === "quota_attainment") period = "month";
  if (!kpi || (!DRILLABLE.has(kpi) && kpi !== "stage_entries")) return null;
  return { scope, kpi, key, period };
}

/** Make the KPI numbers of the page clickable; `pageScope` is "c", "t:<team>" or "m:<manager>". */
export function installDrilldown(pageScope, { rowPeriod = "day", currency = () => "USD" } = {}) {
  ensureStyles();
  document.body.classList.add("drillable");
  document.addEventListener("click", (event) => {
    if (panel && panel.contains(event.target)) return;
    const cell = cellOf(event.target, typeof pageScope === "function" ? pageScope() : pageScope, rowPeriod);
    if (!cell) return;
    event.preventDefault();
    open(cell, currency);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
}

function ensureStyles() {
  if (document.querySelector('link[href="/static/drilldown.css"]')) return;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = "/static/drilldown.css";
  document.head.appendChild(link);
}

function close() {
  if (panel) panel.hidden = true;
  current = null;
}

function buildPanel() {
  panel = document.createElement("div");
  panel.id = "drilldown";
  panel.setAttribute("role", "dialog");
  panel.innerHTML = `
    <div class="dd-box">
      <div class="dd-head"><h2 class="dd-title"></h2><span class="dd-summary"></span>
        <button type="button" class="dd-close" aria-label="close">×</button></div>
      <div class="dd-error" hidden></div>
      <div class="dd-scroll"><table class="dd-table"><thead><tr></tr></thead><tbody></tbody></table></div>
      <div class="dd-pager"><button type="button" data-page="-1">‹ previous</button>
        <span class="dd-page"></span><button type="button" data-page="1">next ›</button></div>
    </div>`;
  const headRow = panel.querySelector("thead tr");
  for (const column of COLUMNS) {
    const th = document.createElement("th");
    th.textContent = column.label;
    th.dataset.column = column.key;
    if (column.sort) {
      th.dataset.sort = column.sort;
      th.tabIndex = 0;
    }
    headRow.appendChild(th);
  }
  panel.querySelector(".dd-close").addEventListener("click", close);
  panel.addEventListener("click", (event) => {
    if (event.target === panel) return close();
    const th = event.target.closest("th[data-sort]");
    if (th && current) {
      current.order = current.sort === th.dataset.sort && current.order === "desc" ? "asc" : "desc";
      current.sort = th.dataset.sort;
      current.page = 1;
      load();
    }
    const step = event.target.closest("[data-page]");
    if (step && current) {
      current.page = Math.max(1, Math.min(current.pages || 1, current.page + Number(step.dataset.page)));
      load();
    }
  });
  document.body.appendChild(panel);
}

function open(cell, currency) {
  if (!panel) buildPanel();
  current = { cell, sort: "occurred_at", order: "desc", page: 1, pages: 1, currency };
  panel.hidden = false;
  load();
}

function describe(cell) {
  const what = cell.key ? `${KPI_LABELS[cell.kpi] || cell.kpi} · ${cell.key}` : KPI_LABELS[cell.kpi] || cell.kpi;
  const who = cell.scope === "c" ? "company" : cell.scope.slice(2);
  return `${what} — ${who}, ${cell.period === "day" ? "today" : "this month"}`;
}

async function load() {
  const asked = current;
  const { cell } = asked;
  const params = { scope: cell.scope, kpi: cell.kpi, period: cell.period, sort: asked.sort, order: asked.order,
    page: String(asked.page), page_size: String(PAGE_SIZE) };
  if (cell.key) params.key = cell.key;
  panel.querySelector(".dd-title").textContent = describe(cell);
  const error = panel.querySelector(".dd-error");
  try {
    const body = await getJSON("/api/v1/drilldown", params);
    if (current !== asked) return; // closed or changed meanwhile
    error.hidden = true;
    asked.pages = body.pages;
    render(body, asked.currency());
  } catch (exc) {
    if (current !== asked) return;
    error.hidden = false;
    error.textContent = "Could not load the rows: " + exc.message;
  }
}

function render(body, currency) {
  const shown = formatKpi(body.kpi, body.value, currency);
  panel.querySelector(".dd-summary").textContent = `${body.total_rows} events · ${shown}`;
  panel.querySelector(".dd-page").textContent = `page ${body.page} of ${body.pages}`;
  for (const th of panel.querySelectorAll("th[data-sort]")) {
    th.dataset.active = th.dataset.sort === body.sort ? body.order : "";
  }
  const tbody = panel.querySelector("tbody");
  tbody.replaceChildren();
  for (const row of body.rows) {
    const tr = document.createElement("tr");
    tr.dataset.event = row.event_id;
    for (const column of COLUMNS) {
      const td = document.createElement("td");
      const value = row[column.key];
      if (value === null || value === undefined) td.textContent = "";
      else if (column.money) td.textContent = formatKpi("revenue", value, currency);
      else if (column.key === "occurred_at") td.textContent = new Date(value).toLocaleString();
      else td.textContent = String(value);
      if (column.money || column.key === "duration_s" || column.key === "cycle_days") td.className = "num";
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
  panel.querySelector('[data-page="-1"]').disabled = body.page <= 1;
  panel.querySelector('[data-page="1"]').disabled = body.page >= body.pages;
}
