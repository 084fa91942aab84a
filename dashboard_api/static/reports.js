// The report page (/reports): pick a preset or saved report, run it for a scope and period,
// see its chart and table, and download it as CSV, XLSX or PDF. The numbers are the API's
// (GET /api/v1/reports/{id}/run), formatted here by each column's kind as the PDF does.

import { ApiError, authMessage, getJSON, initToken } from "./api.js";

const NUMERIC = new Set(["count", "money", "ratio", "days", "seconds"]);
const SVG = "http://www.w3.org/2000/svg";
const grouped = (places) =>
  new Intl.NumberFormat("en-US", { minimumFractionDigits: places, maximumFractionDigits: places });
const FORMATS = { 0: grouped(0), 2: grouped(2) };

const form = document.getElementById("report-form");
const picker = document.getElementById("report-id");
const message = document.getElementById("message");
let reports = [];

/** A cell for people, by the column's kind: 5,000.00 for money, 16.67 % for a ratio, – for undefined. */
export function formatCell(value, kind) {
  if (value === null || value === undefined || value === "") return "\u2013";
  if (!NUMERIC.has(kind)) return String(value);
  const number = Number(value);
  if (kind === "ratio") return FORMATS[2].format(number * 100) + " %";
  if (kind === "money" || kind === "days") return FORMATS[2].format(number);
  return FORMATS[0].format(number);
}

function show(text) {
  message.textContent = text;
  message.hidden = !text;
}

function runParams() {
  const params = new URLSearchParams();
  for (const [name, id] of [["scope", "report-scope"], ["period", "report-period"], ["at", "report-at"]]) {
    const value = document.getElementById(id).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function runPath() {
  return "/api/v1/reports/" + encodeURIComponent(picker.value) + "/run";
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function renderTable(table) {
  const element = document.getElementById("report-table");
  const head = el("tr");
  for (const column of table.columns) head.append(el("th", column.label, NUMERIC.has(column.kind) ? "num" : ""));
  element.tHead.replaceChildren(head);
  const line = (row) => {
    const tr = el("tr");
    tr.dataset.key = row.key ?? "";
    for (const column of table.columns) {
      const td = el("td", formatCell(row[column.key], column.kind), NUMERIC.has(column.kind) ? "num" : "");
      td.dataset.column = column.key;
      tr.append(td);
    }
    return tr;
  };
  element.tBodies[0].replaceChildren(...table.rows.map(line));
  element.tFoot.replaceChildren(...(table.totals ? [line(table.totals)] : []));
}

function renderChart(table) {
  const svg = document.getElementById("report-chart");
  svg.replaceChildren();
  const chart = table.chart;
  svg.hidden = !chart || !table.rows.length;
  if (svg.hidden) return;
  const key = chart.y[0];
  const kind = (table.columns.find((column) => column.key === key) || {}).kind;
  const width = Math.max(300, svg.clientWidth || 900);
  const height = Math.max(120, svg.clientHeight || 260);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const values = table.rows.map((row) => Number(row[key]) || 0);
  const top = Math.max(...values, 0) || 1;
  const pad = { left: 90, bottom: 28, top: 10 };
  const slot = (width - pad.left) / values.length;
  const y = (v) => pad.top + (height - pad.top - pad.bottom) * (1 - v / top);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("text", { x: pad.left - 8, y: y(top) + 10, "text-anchor": "end" }, formatCell(top, kind));
  add("text", { x: pad.left - 8, y: y(0), "text-anchor": "end" }, formatCell(0, kind));
  if (chart.kind === "line") {
    const points = values.map((v, i) => `${(pad.left + slot * (i + 0.5)).toFixed(1)},${y(v).toFixed(1)}`);
    add("polyline", { points: points.join(" "), class: "line" });
  } else {
    values.forEach((v, i) =>
      add("rect", { x: pad.left + slot * i + slot * 0.15, y: y(v), width: slot * 0.7, height: y(0) - y(v), class: "bar" }),
    );
  }
  table.rows.forEach((row, i) => {
    if (values.length > 16 && i % Math.ceil(values.length / 16)) return;
    add("text", { x: pad.left + slot * (i + 0.5), y: height - 8, "text-anchor": "middle" }, String(row.key ?? ""));
  });
}

async function run(event) {
  if (event) event.preventDefault();
  show("");
  const query = Object.fromEntries(runParams());
  try {
    const table = await getJSON(runPath(), query);
    const report = reports.find((item) => item.id === picker.value);
    document.getElementById("report-description").textContent = report ? report.description : "";
    document.getElementById("report-title").textContent = table.title;
    document.getElementById("report-subtitle").textContent = `${table.subtitle} · amounts in ${table.currency}`;
    renderTable(table);
    renderChart(table);
    document.body.dataset.state = "ready";
  } catch (error) {
    document.body.dataset.state = "error";
    if (error instanceof ApiError && error.isAuth) {
      const { text, hint } = authMessage(error.status, error.message);
      show(text + " " + hint);
    } else {
      show(error instanceof ApiError ? error.message : "The API does not answer: " + error.message);
    }
  }
}

async function download(format) {
  const params = runParams();
  params.set("format", format);
  const token = initToken();
  const response = await fetch(runPath() + "?" + params, { headers: token ? { Authorization: "Bearer " + token } : {} });
  if (!response.ok) {
    show(`The export failed (HTTP ${response.status}): ${(await response.json().catch(() => ({}))).detail || ""}`);
    return;
  }
  const disposition = response.headers.get("content-disposition") || "";
  const name = decodeURIComponent((disposition.match(/filename\*=UTF-8''([^;]+)/) || [])[1] || "report." + format);
  const link = el("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
}

async function start() {
  initToken();
  try {
    reports = await getJSON("/api/v1/reports");
  } catch (error) {
    const { text, hint } = error instanceof ApiError ? authMessage(error.status, error.message) : { text: error.message, hint: "" };
    show(text + " " + hint);
    document.body.dataset.state = "error";
    return;
  }
  picker.replaceChildren(...reports.map((report) => {
    const option = el("option", report.spec.title + (report.preset ? "" : ` (${report.owner_name || report.owner})`));
    option.value = report.id;
    return option;
  }));
  const wanted = new URL(window.location.href).searchParams;
  for (const [name, id] of [["report", "report-id"], ["scope", "report-scope"], ["period", "report-period"], ["at", "report-at"]]) {
    if (wanted.get(name)) document.getElementById(id).value = wanted.get(name);
  }
  form.addEventListener("submit", run);
  picker.addEventListener("change", () => run());
  for (const button of form.querySelectorAll("[data-format]")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  await run();
}

start();
