// Number formatting for the displays: integers, money in the reporting currency, percentages.

const integer = new Intl.NumberFormat("en-US");
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

export const MONEY_KPIS = new Set(["revenue", "avg_deal_size", "quota", "repeat_revenue", "weighted_pipeline", "amount"]);
export const RATIO_KPIS = new Set(["win_rate", "quota_attainment", "conversion", "overall_win_conversion"]);

export const KPI_LABELS = {
  calls: "Calls",
  meetings: "Meetings",
  deals_created: "New deals",
  deals_won: "Deals won",
  revenue: "Revenue",
  win_rate: "Win rate",
  quota_attainment: "Plan",
};

/** A KPI value (number, or exact decimal string) as the wall shows it; "–" when undefined. */
export function formatKpi(kpi, value, currency = "USD") {
  if (value === null || value === undefined || value === "") return "–";
  const number = Number(value);
  if (!Number.isFinite(number)) return "–";
  if (MONEY_KPIS.has(kpi)) return money(currency).format(number);
  if (RATIO_KPIS.has(kpi)) return (number * 100).toFixed(Math.abs(number) >= 0.1 ? 0 : 1) + "%";
  return integer.format(Math.round(number));
}

/** Short money for chart axes: $1.2k, $3.4M. */
export function formatCompact(kpi, value, currency = "USD") {
  const number = Number(value);
  if (!MONEY_KPIS.has(kpi)) return Number.isInteger(number) ? integer.format(number) : number.toFixed(1);
  const symbol = money(currency).formatToParts(0).find((part) => part.type === "currency");
  const prefix = symbol ? symbol.value : "";
  if (Math.abs(number) >= 1e6) return prefix + (number / 1e6).toFixed(1) + "M";
  if (Math.abs(number) >= 1e3) return prefix + (number / 1e3).toFixed(1) + "k";
  return prefix + number.toFixed(0);
}

/** Relative change "▲ 12%" / "▼ 3%" / "= 0%" of current against previous; null when undefined. */
export function formatChange(current, previous) {
  const missing = (value) => value === null || value === undefined || value === "";
  if (missing(current) || missing(previous)) return null;
  const now = Number(current);
  const before = Number(previous);
  if (!Number.isFinite(now) || !Number.isFinite(before)) return null;
  if (before === 0) return now === 0 ? { text: "= 0%", direction: "flat" } : { text: "▲ new", direction: "up" };
  const percent = ((now - before) / Math.abs(before)) * 100;
  if (Math.abs(percent) < 0.5) return { text: "= 0%", direction: "flat" };
  const rounded = Math.abs(percent) >= 10 ? percent.toFixed(0) : percent.toFixed(1);
  return percent > 0 ? { text: "▲ " + rounded + "%", direction: "up" } : { text: "▼ " + rounded.slice(1) + "%", direction: "down" };
}
