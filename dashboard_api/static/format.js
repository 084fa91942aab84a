// Number formatting for the displays, by the KPI's kind: counts, money in the reporting currency,
// percentages, days. Every function takes a number or a numeric string (the API sends money and
// ratios as exact decimal strings); anything else shows as "–".

const integer = new Intl.NumberFormat("en-US");
const oneDecimal = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const moneyFormats = new Map();

function money(currency) {
  if (!moneyFormats.has(currency)) {
    let format;
    try {
      format = new Intl.NumberFormat("en-US", { style: "currency", currency, maximumFractionDigits: 0 });
    } catch (e) {
      format = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
    }
    moneyFormats.set(currency, format);
  }
  return moneyFormats.get(currency);
}

export const MONEY_KPIS = new Set([
  "revenue", "avg_deal_size", "quota", "repeat_revenue", "weighted_pipeline", "forecast", "amount", "pipeline_amount",
]);
export const RATIO_KPIS = new Set(["win_rate", "quota_attainment", "conversion", "overall_win_conversion"]);
export const DAY_KPIS = new Set(["avg_cycle_days", "deal.days_in_stage", "days_in_stage"]);

export const KPI_LABELS = {
  calls: "Calls",
  meetings: "Meetings",
  proposals: "Proposals",
  deals_created: "New deals",
  deals_won: "Deals won",
  deals_lost: "Deals lost",
  revenue: "Revenue",
  avg_deal_size: "Average deal",
  win_rate: "Win rate",
  quota_attainment: "Plan",
  avg_cycle_days: "Sales cycle",
  weighted_pipeline: "Weighted pipeline",
  forecast: "Forecast",
  call_duration_s: "Call time",
  "deal.days_in_stage": "Days in stage",
};

/** The kind of a KPI: "money", "percent", "days", "duration" or "count". */
export function kpiKind(kpi) {
  const name = String(kpi || "");
  if (MONEY_KPIS.has(name) || name.endsWith("revenue")) return "money";
  if (RATIO_KPIS.has(name) || name.endsWith("_rate") || name.endsWith("_conversion")) return "percent";
  if (DAY_KPIS.has(name)) return "days";
  if (name.endsWith("_duration_s")) return "duration";
  return "count";
}

/** A finite number from a number or numeric string; null otherwise. */
export function toNumber(value) {
  if (value === null || value === undefined || value === "" || typeof value === "boolean") return null;
  const number = typeof value === "number" ? value : Number(String(value).trim());
  return Number.isFinite(number) ? number : null;
}

/** A ratio as a whole percentage ("42%"); "<1%" for a small positive one, so nothing reads as zero that is not. */
export function formatPercent(value) {
  const number = toNumber(value);
  if (number === null) return "–";
  const percent = number * 100;
  if (percent > 0 && percent < 1) return "<1%";
  if (percent < 0 && percent > -1) return ">-1%";
  return integer.format(Math.round(percent)) + "%";
}

function formatDuration(seconds) {
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return minutes + " min";
  return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
}

/** A KPI value (number, or exact decimal string) as the wall shows it; "–" when undefined. */
export function formatKpi(kpi, value, currency = "USD") {
  const number = toNumber(value);
  if (number === null) return "–";
  switch (kpiKind(kpi)) {
    case "money":
      return money(currency).format(number);
    case "percent":
      return formatPercent(number);
    case "days":
      return oneDecimal.format(number) + (Math.abs(number) === 1 ? " day" : " days");
    case "duration":
      return formatDuration(number);
    default:
      return integer.format(Math.round(number));
  }
}

/** Short axis labels: $1.2k, $3.4M for money; counts as integers (or one decimal below 10). */
export function formatCompact(kpi, value, currency = "USD") {
  const number = toNumber(value) ?? 0;
  if (kpiKind(kpi) === "percent") return formatPercent(number);
  if (kpiKind(kpi) !== "money") return Number.isInteger(number) ? integer.format(number) : number.toFixed(1);
  const symbol = money(currency).formatToParts(0).find((part) => part.type === "currency");
  const prefix = symbol ? symbol.value : "";
  const trim = (text) => text.replace(/\.0$/, "");
  if (Math.abs(number) >= 1e6) return prefix + trim((number / 1e6).toFixed(1)) + "M";
  if (Math.abs(number) >= 1e3) return prefix + trim((number / 1e3).toFixed(1)) + "k";
  return prefix + (Number.isInteger(number) ? String(number) : number.toFixed(2));
}

/** Relative change "▲ 12%" / "▼ 3%" / "= 0%" of current against previous; null when undefined. */
export function formatChange(current, previous) {
  const now = toNumber(current);
  const before = toNumber(previous);
  if (now === null || before === null) return null;
  if (before === 0) return now === 0 ? { text: "= 0%", direction: "flat" } : { text: "▲ new", direction: "up" };
  const percent = ((now - before) / Math.abs(before)) * 100;
  if (Math.abs(percent) < 0.5) return { text: "= 0%", direction: "flat" };
  const rounded = integer.format(Math.round(Math.abs(percent)));
  return percent > 0 ? { text: "▲ " + rounded + "%", direction: "up" } : { text: "▼ " + rounded + "%", direction: "down" };
}

/** A rule name as people say it: "LowWinRate" or "low_win_rate" → "Low win rate". */
export function ruleTitle(name) {
  const words = String(name || "")
    .replace(/[_-]+/g, " ")
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1 $2")
    .trim()
    .split(/\s+/)
    .filter(Boolean);
  if (!words.length) return "Alert";
  const lower = words.map((word, i) => (i && /^[A-Z][a-z]/.test(word) ? word.toLowerCase() : word));
  lower[0] = lower[0].charAt(0).toUpperCase() + lower[0].slice(1);
  return lower.join(" ");
}

/** A scope token as people read it: "c" → "Company", "t:team-01" → "Team team-01", "m:ann" → "ann". */
export function scopeName(scope) {
  const token = String(scope || "");
  if (token === "c" || token === "") return "Company";
  if (token.startsWith("t:")) return "Team " + token.slice(2);
  if (token.startsWith("m:")) return token.slice(2);
  if (token.startsWith("deal:")) return "Deal " + token.slice(5);
  return token;
}
