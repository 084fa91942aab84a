// A comparison tile: a KPI today against yesterday and this month against the last one.

import { formatChange, formatKpi, KPI_LABELS } from "./format.js";
import { showValue } from "./tween.js";

/** A new tile for one KPI, with a day pair and a month pair. */
export function compareTile(kpi) {
  const tile = document.createElement("div");
  tile.className = "compare-tile";
  tile.dataset.compare = kpi;
  tile.innerHTML = `
    <div class="label"></div>
    <div class="pair" data-period="day">
      <div class="when">Today</div><div class="value" data-kpi="${kpi}"></div>
      <div class="before">yesterday <span data-previous></span> <b class="delta" data-delta></b></div>
    </div>
    <div class="pair" data-period="month">
      <div class="when">This month</div><div class="value" data-kpi="${kpi}"></div>
      <div class="before">last month <span data-previous></span> <b class="delta" data-delta></b></div>
    </div>`;
  tile.querySelector(".label").textContent = KPI_LABELS[kpi] || kpi;
  return tile;
}

/**
 * Fill the tiles under `root` (made once) from {day: [now, before], month: [now, before]}, each a
 * KPI values object or null.
 */
export function renderComparisons(root, kpis, pairs, currency, animate) {
  if (!root.children.length) for (const kpi of kpis) root.appendChild(compareTile(kpi));
  for (const kpi of kpis) {
    const tile = root.querySelector(`[data-compare="${kpi}"]`);
    const format = (value) => formatKpi(kpi, value, currency);
    for (const [period, [now, before]] of Object.entries(pairs)) {
      const pair = tile.querySelector(`[data-period="${period}"]`);
      const current = now ? now[kpi] : null;
      const previous = before ? before[kpi] : null;
      showValue(pair.querySelector(".value"), current, format, animate);
      showValue(pair.querySelector("[data-previous]"), previous, format, false);
      const change = formatChange(current, previous);
      const delta = pair.querySelector("[data-delta]");
      delta.textContent = change ? change.text : "";
      delta.dataset.direction = change ? change.direction : "none";
    }
  }
}
