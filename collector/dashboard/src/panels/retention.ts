// Cohort retention for the days of the range: D0..D30, each cell the share of the cohort
// back on that day, its colour one of six steps (classes heat0..heat5, AA in both themes).

import * as api from "../api";
import { h, panel, replace } from "../dom";
import { day, int, pct } from "../format";
import { t } from "../i18n";
import { period, state } from "../state";
import { addDays } from "../time";

export const MAX_DAY = 30;
const heat = (rate: number): number => (rate <= 0 ? 0 : Math.min(5, 1 + Math.floor(rate * 5)));

export function retentionPanel(): { el: HTMLElement; load(): Promise<void> } {
  const p = panel("retention", t("ret.title"), { cls: "retention" });
  const rates = h("p", { class: "muted", testid: "retention-rates" });
  const grid = h("div", { class: "scroll", testid: "retention-grid", tabindex: "0", "aria-label": t("ret.title") });
  replace(p.body, rates, grid);
  const load = () => p.run(async (fresh) => {
    const per = period();
    const r = await api.retention(per.firstDay, per.lastDay, state.tz, MAX_DAY, state.filters);
    if (!fresh()) return;
    const days = Array.from({ length: MAX_DAY + 1 }, (_, n) => n);
    const rate = (k: string) => h("span", { testid: `retention-${k}` }, k in r.rates ? pct(r.rates[k]) : "—");
    replace(rates, [1, 7, 30].filter((n) => n <= MAX_DAY).map((n, i) => [i ? " · " : "", `${t("ret.dayLong", { n })}: `, rate(`d${n}`)]));
    const rows = r.cohorts.map((c) => h("tr", { testid: "retention-row", "data-day": c.day },
      h("th", { scope: "row", class: "cohort" }, day(c.day)),
      h("td", { class: "num", testid: "retention-size" }, int(c.size)),
      days.map((n) => {
        const ripe = addDays(c.day, n) <= r.as_of;
        const v = c.retained[n] ?? 0;
        const share = c.size ? v / c.size : 0;
        const cls = ripe && c.size ? `cell heat${heat(share)}` : "cell future";
        return h("td", {
          class: cls, testid: "retention-cell", "data-day": c.day, "data-n": String(n), "data-count": String(v),
          title: ripe && c.size ? `${day(c.day)} · ${t("ret.dayLong", { n })}: ${int(v)} / ${int(c.size)}` : undefined,
        }, ripe && c.size ? pct(share) : "");
      })));
    replace(grid, rows.length ? h("table", { class: "tbl grid", testid: "retention-table" },
      h("caption", { class: "sr-only" }, t("ret.caption")),
      h("thead", null, h("tr", null, h("th", { scope: "col" }, t("ret.cohort")), h("th", { scope: "col", class: "num" }, t("ret.size")),
        days.map((n) => h("th", { scope: "col", class: "num", title: t("ret.dayLong", { n }) }, t("ret.day", { n }))))),
      h("tbody", null, rows)) : h("p", { class: "muted" }, t("empty")));
  });
  return { el: p.el, load };
}
