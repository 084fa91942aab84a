// Inline SVG charts drawn by hand: daily bars and an area line, sized by the viewBox.

import { formatCompact, formatKpi, kpiKind } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const PAD = { left: 78, right: 16, top: 18, bottom: 38 };

function node(name, attributes, parent) {
  const element = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (parent) parent.appendChild(element);
  return element;
}

/**
 * The top of the axis: the first of 2, 4, 10 times a power of ten at or above the largest value, so the
 * three ticks (0, half, top) are distinct round numbers, whole numbers for counts. An empty chart
 * gets a nominal scale (counts 0–2, money 0–100) rather than repeated labels.
 */
export function axisTop(value, kind) {
  const whole = kind !== "percent";
  if (!(value > 0)) return kind === "money" ? 100 : kind === "percent" ? 1 : 2;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 4, 10]) {
    const top = step * power;
    if (top >= value && (!whole || (Number.isInteger(top) && Number.isInteger(top / 2)))) return top;
  }
  return 10 * power * (whole && power < 1 ? 1 / power : 1);
}

function shortDate(label) {
  const day = new Date(label + "T00:00:00Z");
  return day.toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
}

/**
 * Draw a daily series into an <svg>: `points` are {label, value}; `kind` is "bar" or "line".
 * Each point gets data-point (its label) and data-value (the raw value) for tests and tooltips.
 */
export function drawChart(svg, points, { kpi, kind = "bar", currency = "USD" }) {
  // One user unit per CSS pixel of the element as laid out, so text is never stretched.
  const WIDTH = Math.max(200, Math.round(svg.clientWidth || 800));
  const HEIGHT = Math.max(100, Math.round(svg.clientHeight || 300));
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("role", "img");
  const values = points.map((point) => Number(point.value) || 0);
  const top = axisTop(Math.max(0, ...values), kpiKind(kpi));
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (points.length <= 1 ? plotW / 2 : (i * plotW) / (points.length - 1));
  const y = (v) => PAD.top + plotH - (v / top) * plotH;

  for (const fraction of [0, 0.5, 1]) {
    const level = top * fraction;
    node("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(level), y2: y(level), class: "grid" }, svg);
    node("text", { x: PAD.left - 10, y: y(level) + 7, class: "axis", "text-anchor": "end" }, svg).textContent =
      formatCompact(kpi, level, currency);
  }
  const slot = plotW / Math.max(points.length, 1);
  const centre = (i) => (kind === "bar" ? PAD.left + i * slot + slot / 2 : x(i));
  // A date under today and under each week before it (every day on a short chart).
  const every = points.length <= 10 ? 1 : 7;
  points.forEach((point, i) => {
    if ((points.length - 1 - i) % every !== 0) return;
    const last = i === points.length - 1;
    const anchor = last ? "end" : i === 0 ? "start" : "middle";
    const at = last ? Math.min(WIDTH - PAD.right, centre(i) + 20) : centre(i);
    const label = node("text", { x: at, y: HEIGHT - 8, class: "axis", "text-anchor": anchor, "data-date": point.label }, svg);
    label.textContent = last ? "today" : shortDate(point.label);
  });

  const series = node("g", { class: "series series-" + kind }, svg);
  if (kind === "line") {
    const path = points.map((_, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(values[i]).toFixed(1)}`).join("");
    if (points.length) {
      const base = y(0).toFixed(1);
      node("path", { d: `${path}L${x(points.length - 1).toFixed(1)},${base}L${x(0).toFixed(1)},${base}Z`, class: "area" }, series);
      node("path", { d: path, class: "line" }, series);
    }
  }
  points.forEach((point, i) => {
    const value = values[i];
    const title = point.label + ": " + formatKpi(kpi, point.value, currency);
    let mark;
    if (kind === "bar") {
      const barW = Math.max(2, slot * 0.7);
      const left = PAD.left + i * slot + (slot - barW) / 2;
      mark = node("rect", { x: left, y: y(value), width: barW, height: Math.max(0, y(0) - y(value)), class: "bar" }, series);
    } else {
      mark = node("circle", { cx: x(i), cy: y(value), r: i === points.length - 1 ? 7 : 3.5, class: "dot" }, series);
    }
    if (i === points.length - 1) mark.classList.add("today");
    mark.setAttribute("data-point", point.label);
    mark.setAttribute("data-value", String(point.value));
    node("title", {}, mark).textContent = title;
  });
  svg.dataset.points = String(points.length);
}
