// Tabbed breakdown tables. Clicking (or Enter/Space on) a row's button filters the whole
// dashboard by its value; entry and exit pages filter by page.

import * as api from "../api";
import { h, panel, replace, table } from "../dom";
import { country, int, pct } from "../format";
import { t, type Key } from "../i18n";
import { addFilter, iso, period, state } from "../state";

const GROUPS: { id: string; tabs: api.Dimension[] }[] = [
  { id: "pages", tabs: ["page", "entry_page", "exit_page"] },
  { id: "sources", tabs: ["referrer_domain", "utm_source", "utm_medium", "utm_campaign"] },
  { id: "devices", tabs: ["device", "browser", "os"] },
  { id: "locations", tabs: ["country", "region", "city"] },
];
const LIMIT = 50;
const chosen: Record<string, api.Dimension> = {};

export const filterFor = (d: api.Dimension): api.FilterDimension | null =>
  d === "entry_page" || d === "exit_page" ? "page" : d === "event" ? null : d;

/** A value as shown: countries by name, "" as Unknown (or Direct for referrers). */
export function label(d: api.Dimension | api.FilterDimension, value: string): string {
  if (d === "country") return country(value);
  if (value === "") return t(d === "referrer_domain" ? "bd.direct" : "bd.unknown");
  return value;
}

const SESSION_DIMS = new Set<api.Dimension>(["entry_page", "exit_page", "referrer_domain", "utm_source", "utm_medium", "utm_campaign", "device", "browser", "os"]);

function rowsTable(d: api.Dimension, rows: api.BreakdownRow[]): HTMLElement {
  if (!rows.length) return h("p", { class: "muted", testid: "breakdown-empty" }, t("empty"));
  const sessions = SESSION_DIMS.has(d);
  const top = Math.max(1, ...rows.map((r) => r.visitors ?? 0));
  const target = filterFor(d);
  const heads: (string | [string, string])[] = [t(`bd.${d}` as Key), [t("bd.visitors"), "num"], [t("bd.pageviews"), "num"]];
  if (sessions) heads.push([t("bd.bounce"), "num"]);
  return table("breakdown-table", heads, rows.map((r) => {
    const text = label(d, r.value);
    const bar = h("span", { class: "bar", "aria-hidden": "true" });
    bar.style.width = `${Math.round(((r.visitors ?? 0) / top) * 100)}%`;
    const active = target !== null && state.filters[target] === r.value;
    const name = target === null ? h("span", { class: "ellipsis", testid: "breakdown-label", title: text }, text)
      : h("button", {
        type: "button", class: "row-button ellipsis", testid: "breakdown-label", title: text, "aria-label": t("bd.filterBy", { value: text }),
        "aria-pressed": String(active), onclick: () => addFilter(target, r.value),
      }, text);
    return h("tr", { testid: "breakdown-row", "data-dimension": d, "data-value": r.value },
      h("td", { class: "label" }, bar, name),
      h("td", { class: "num", testid: "breakdown-visitors" }, int(r.visitors)),
      h("td", { class: "num", testid: "breakdown-pageviews" }, int(r.pageviews)),
      sessions ? h("td", { class: "num", testid: "breakdown-bounce" }, pct(r.bounce_rate)) : null);
  }), t(`bd.${d}` as Key));
}

function group(id: string, tabs: api.Dimension[]): { el: HTMLElement; load(): Promise<void> } {
  const p = panel(`breakdown-${id}`, t(`bd.${id}` as Key), { cls: "breakdown" });
  const current = () => chosen[id] || tabs[0];
  const tabpanel = h("div", { role: "tabpanel", tabindex: "0", class: "tabpanel", testid: `breakdown-${id}-table` });
  const buttons = tabs.map((d, i) => h("button", {
    type: "button", role: "tab", class: "tab", testid: `tab-${d}`, "data-dimension": d, id: `tab-${d}`,
    "aria-controls": `tabpanel-${id}`, "aria-selected": String(d === current()), tabindex: d === current() ? "0" : "-1",
    onclick: () => pick(d),
    onkeydown: (e: Event) => {
      const k = (e as KeyboardEvent).key;
      const step = k === "ArrowRight" ? 1 : k === "ArrowLeft" ? -1 : 0;
      if (!step) return;
      e.preventDefault();
      const next = tabs[(i + step + tabs.length) % tabs.length];
      pick(next);
      buttons[tabs.indexOf(next)].focus();
    },
  }, t(`bd.${d}` as Key)));
  tabpanel.id = `tabpanel-${id}`;
  const tablist = h("div", { role: "tablist", class: "tabs", "aria-label": t(`bd.${id}` as Key) }, buttons);
  replace(p.body, tablist, tabpanel);
  function pick(d: api.Dimension) {
    chosen[id] = d;
    buttons.forEach((b, i) => {
      b.setAttribute("aria-selected", String(tabs[i] === d));
      b.tabIndex = tabs[i] === d ? 0 : -1;
    });
    void load();
  }
  const load = () => p.run(async (fresh) => {
    const d = current();
    tabpanel.setAttribute("aria-labelledby", `tab-${d}`);
    tabpanel.dataset.dimension = d;
    const r = await api.breakdown(iso(period().cur), d, LIMIT, state.filters);
    if (!fresh()) return;
    // A row's button that had focus is replaced: keep the focus in the table's place.
    const hadFocus = tabpanel.contains(document.activeElement);
    replace(tabpanel, rowsTable(d, r.rows));
    if (hadFocus) tabpanel.focus();
  });
  return { el: p.el, load };
}

export function breakdownPanels(): { el: HTMLElement; load(): Promise<void> } {
  const groups = GROUPS.map((g) => group(g.id, g.tabs));
  return {
    el: h("div", { class: "breakdown-grid", testid: "breakdowns" }, groups.map((g) => g.el)),
    load: async () => { await Promise.all(groups.map((g) => g.load())); },
  };
}
