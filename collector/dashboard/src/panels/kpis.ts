// KPI cards for the chosen range against the previous period of the same length, the
// customer KPIs, and the time series of the selected KPI.

import * as api from "../api";
import { align, chart } from "../charts";
import { h, panel, replace, table } from "../dom";
import { change, dec, duration, int, money, pct, when } from "../format";
import { t, type Key } from "../i18n";
import { iso, period, setMetric, state } from "../state";
import { buckets } from "../time";

/** What the other panels learn from the KPIs: the order events and the one currency. */
export const shared = { orderEvents: [] as string[], currency: null as string | null, onOrderEvents: (): void => undefined };

type Fmt = (n: number | null | undefined) => string;
interface Card {
  id: string;
  fmt: Fmt;
  lowerIsBetter?: boolean;
  selectable: boolean;
  el: HTMLElement;
  value: HTMLElement;
  delta: HTMLElement;
  arrow: HTMLElement;
  prev: HTMLElement;
}

function card(id: string, fmt: Fmt, selectable: boolean, lowerIsBetter = false): Card {
  const value = h("span", { class: "kpi-value", testid: `kpi-${id}-value` }, "—");
  const arrow = h("span", { class: "kpi-arrow", "aria-hidden": "true" });
  const delta = h("span", { class: "kpi-change", testid: `kpi-${id}-change`, title: t("kpi.change") }, "—");
  const prev = h("span", { testid: `kpi-${id}-previous` }, "—");
  const label = t(`kpi.${id}` as Key);
  const kids = [
    h("span", { class: "kpi-label", testid: `kpi-${id}-label` }, label), value,
    h("span", { class: "kpi-foot" }, h("span", { class: "kpi-delta" }, arrow, delta, h("span", { class: "sr-only" }, ` ${t("kpi.change")}`)),
      h("span", { class: "kpi-prev" }, h("span", { class: "sr-only" }, `${t("series.previous")}: `), prev)),
  ];
  const el = selectable
    ? h("button", { type: "button", class: "kpi", testid: `kpi-${id}`, "data-metric": id, "aria-pressed": String(state.metric === id), title: t("kpi.select", { metric: label }), onclick: () => setMetric(id as api.SeriesMetric) }, kids)
    : h("div", { class: "kpi static", testid: `kpi-${id}` }, kids);
  return { id, fmt, lowerIsBetter, selectable, el, value, delta, arrow, prev };
}

function fill(c: Card, cur: number | null | undefined, prev: number | null | undefined, curText?: string, prevText?: string): void {
  c.value.textContent = curText ?? c.fmt(cur);
  c.value.dataset.raw = cur === null || cur === undefined ? "" : String(cur);
  c.prev.textContent = prevText ?? c.fmt(prev);
  const { text, delta } = change(cur, prev);
  c.delta.textContent = text;
  c.delta.dataset.raw = delta === null ? "" : String(delta);
  // As shown: a change that rounds to 0.0% is flat.
  const shown = delta === null ? 0 : Math.round(delta * 1000);
  const trend = delta === null ? "none" : shown === 0 ? "flat" : shown > 0 ? "up" : "down";
  c.delta.dataset.trend = trend;
  const good = trend === "none" || trend === "flat" ? "" : (trend === "up") !== !!c.lowerIsBetter ? "good" : "bad";
  c.delta.className = `kpi-change ${trend} ${good}`;
  c.arrow.textContent = trend === "up" ? "▲" : trend === "down" ? "▼" : "";
  c.arrow.className = `kpi-arrow ${good}`;
}

const revenueText = (k: api.Kpis, amount: "revenue" | "aov"): string =>
  k[amount] !== null ? money(k[amount], k.currency) : k.currencies.map((c) => money(c[amount], c.currency)).join(" · ") || "—";

export function kpiPanel(): { el: HTMLElement; load(): Promise<void>; select(): void } {
  const p = panel("kpis", t("kpi.title"), { cls: "kpis" });
  const cards = [
    card("pageviews", int, true), card("visitors", int, true), card("sessions", int, true),
    card("bounce_rate", pct, true, true), card("avg_duration_s", duration, true), card("orders", int, true),
    card("revenue", (n) => money(n, shared.currency), true), card("aov", (n) => money(n, shared.currency), false),
    card("conversion_rate", pct, true),
  ];
  const byId = Object.fromEntries(cards.map((c) => [c.id, c]));
  const currencies = h("p", { class: "muted small", testid: "kpi-currencies" });
  replace(p.body, h("div", { class: "kpi-grid" }, cards.map((c) => c.el)), currencies);

  const load = () => p.run(async (fresh) => {
    const per = period();
    const [cur, prev] = await Promise.all([api.kpis(iso(per.cur), state.filters), api.kpis(iso(per.prev), state.filters)]);
    if (!fresh()) return;
    shared.currency = cur.currency;
    if (cur.order_events && cur.order_events.join() !== shared.orderEvents.join()) {
      shared.orderEvents = cur.order_events;
      shared.onOrderEvents();
    }
    fill(byId.pageviews, cur.pageviews, prev.pageviews);
    fill(byId.visitors, cur.visitors_exact ?? cur.visitors, prev.visitors_exact ?? prev.visitors);
    fill(byId.sessions, cur.sessions, prev.sessions);
    fill(byId.bounce_rate, cur.bounce_rate, prev.bounce_rate);
    fill(byId.avg_duration_s, cur.avg_duration_s, prev.avg_duration_s);
    fill(byId.orders, cur.orders, prev.orders);
    // Amounts compare only within one currency; several currencies are listed, not added.
    const same = cur.currency === prev.currency;
    fill(byId.revenue, same ? cur.revenue : null, same ? prev.revenue : null, revenueText(cur, "revenue"), revenueText(prev, "revenue"));
    fill(byId.aov, same ? cur.aov : null, same ? prev.aov : null, revenueText(cur, "aov"), revenueText(prev, "aov"));
    fill(byId.conversion_rate, cur.conversion_rate, prev.conversion_rate);
    replace(currencies, cur.currencies.length > 1
      ? [`${t("kpi.perCurrency")}: `, cur.currencies.map((c) => `${money(c.revenue, c.currency)} (${int(c.orders)} ${t("kpi.orders")})`).join(" · ")] : null);
  });
  const select = () => {
    for (const c of cards) if (c.selectable) c.el.setAttribute("aria-pressed", String(c.id === state.metric));
  };
  return { el: p.el, load, select };
}

export function customersPanel(): { el: HTMLElement; load(): Promise<void> } {
  const p = panel("customers", t("kpi.customers"), { cls: "customers" });
  const cards = [card("repurchase_rate", pct, false), card("new_visitors", int, false), card("returning_visitors", int, false)];
  replace(p.body, h("div", { class: "kpi-grid small" }, cards.map((c) => c.el)));
  const load = () => p.run(async (fresh) => {
    const per = period();
    const [cur, prev] = await Promise.all([api.customers(iso(per.cur), state.tz), api.customers(iso(per.prev), state.tz)]);
    if (!fresh()) return;
    fill(cards[0], cur.repurchase.rate, prev.repurchase.rate);
    fill(cards[1], cur.visitors.new, prev.visitors.new);
    fill(cards[2], cur.visitors.returning, prev.visitors.returning);
  });
  return { el: p.el, load };
}

/** Page speed (the SDK's Web Vitals add-on): p75 of each metric; lower is better. */
export function speedPanel(): { el: HTMLElement; load(): Promise<void> } {
  const p = panel("speed", t("kpi.speed"), { cls: "speed" });
  const ms: Fmt = (v) => (v === null || v === undefined ? "—" : `${int(v)} ms`);
  const cls: Fmt = (v) => (v === null || v === undefined ? "—" : dec(v, 3));
  const cards = api.VITALS.map((v) => card(v, v === "cls" ? cls : ms, false, true));
  replace(p.body, h("div", { class: "kpi-grid" }, cards.map((c) => c.el)));
  const load = () => p.run(async (fresh) => {
    const per = period();
    const got = await Promise.all(api.VITALS.flatMap((v) => [api.vital(iso(per.cur), v), api.vital(iso(per.prev), v)]));
    if (!fresh()) return;
    cards.forEach((c, i) => fill(c, got[2 * i].value, got[2 * i + 1].value));
  });
  return { el: p.el, load };
}

const FILL_NULL = new Set(["bounce_rate", "avg_duration_s", "conversion_rate"]);

export function seriesFormat(metric: api.SeriesMetric): (v: number | null | undefined) => string {
  if (metric === "bounce_rate" || metric === "conversion_rate") return pct;
  if (metric === "avg_duration_s") return duration;
  if (metric === "revenue") return (v) => (shared.currency ? money(v, shared.currency) : dec(v, 2));
  return int;
}

export function seriesPanel(): { el: HTMLElement; load(): Promise<void> } {
  const title = t("series.title", { metric: t(`kpi.${state.metric}` as Key) });
  const p = panel("series", title, { cls: "series" });
  const plot = h("div", { class: "chart", testid: "series-chart", "data-metric": state.metric });
  const data = h("details", { class: "series-data" });
  replace(p.body, plot, data);
  const load = () => p.run(async (fresh) => {
    const per = period();
    const metric = state.metric;
    const [cur, prev] = await Promise.all([
      api.series(iso(per.cur), metric, per.grain, state.tz, state.filters),
      api.series(iso(per.prev), metric, per.grain, state.tz, state.filters),
    ]);
    if (!fresh()) return;
    const label = t(`kpi.${metric}` as Key);
    const heading = p.el.querySelector("h2");
    if (heading) heading.textContent = t("series.title", { metric: label });
    const fillWith = FILL_NULL.has(metric) ? null : 0;
    const a = align(buckets(per.cur.from, per.cur.to, per.grain, state.tz), cur.points, fillWith);
    const b = align(buckets(per.prev.from, per.prev.to, per.grain, state.tz), prev.points, fillWith);
    const fmt = seriesFormat(metric);
    plot.dataset.metric = metric;
    plot.dataset.grain = per.grain;
    plot.dataset.points = String(a.x.length);
    chart(plot, {
      label: `${t("series.title", { metric: label })}, ${t(`series.grain.${per.grain}` as Key)}`, x: a.x, grain: per.grain, fmt,
      series: [{ label: t("series.current"), values: a.y, style: "line" },
        { label: t("series.previous"), values: a.x.map((_, i) => b.y[i] ?? null), style: "dashed" }],
    });
    const timeOpts: Intl.DateTimeFormatOptions = per.grain === "day" ? { dateStyle: "medium" } : { dateStyle: "medium", timeStyle: "short" };
    replace(data, h("summary", null, `${label}, ${t(`series.grain.${per.grain}` as Key)}`),
      table("series-table", [t("al.at"), [label, "num"]], a.x.map((x, i) => h("tr", { testid: "series-row", "data-time": new Date(x).toISOString() },
        h("td", null, when(x, timeOpts)), h("td", { class: "num" }, fmt(a.y[i]))))));
  });
  return { el: p.el, load };
}
