// The live panel: visitors and top pages right now, events per minute over the last hour,
// and the pipeline's freshness; refreshed every `intervalS` seconds without a reload.

import * as api from "../api";
import { align, chart } from "../charts";
import { h, panel, replace, table } from "../dom";
import { duration, int, when } from "../format";
import { t } from "../i18n";
import { state } from "../state";
import { buckets, floorMinute, HOUR } from "../time";

export interface Live { el: HTMLElement; refresh(): Promise<void>; stop(): void }

export function livePanel(intervalS: number): Live {
  const now = panel("live-now", t("live.visitors"), { level: "h3", cls: "live-now" });
  const visitors = h("p", { class: "big", testid: "live-visitors", "aria-live": "polite" }, "—");
  const pageviews = h("span", { testid: "live-pageviews" }, "—");
  const pages = h("div", { testid: "live-pages", class: "live-pages" });
  replace(now.body, visitors, h("p", { class: "muted" }, t("live.visitorsHelp")),
    h("p", { class: "muted" }, `${t("live.pageviews")}: `, pageviews),
    h("h4", null, t("live.pages")), pages);

  const perMinute = panel("live-chart", t("live.chart"), { level: "h3", cls: "live-chart" });
  const plot = h("div", { class: "chart", testid: "live-chart" });
  replace(perMinute.body, plot);

  const pipe = panel("live-pipeline", t("live.pipeline"), { level: "h3", cls: "live-pipeline" });
  const badge = h("span", { class: "badge", testid: "pipeline-state" }, t("live.unknown"));
  const stat = (id: string, label: string) => {
    const v = h("dd", { testid: id }, "—");
    return [h("dt", null, label), v] as [HTMLElement, HTMLElement];
  };
  const delay = stat("pipeline-delay", t("live.delay"));
  const lag = stat("pipeline-lag", t("live.lag"));
  const accepted = stat("pipeline-accepted", t("live.accepted"));
  const rejected = stat("pipeline-rejected", t("live.rejected"));
  replace(pipe.body, badge, h("dl", { class: "stats" }, delay, lag, accepted, rejected));

  const updated = h("p", { class: "muted small", testid: "live-updated", "aria-live": "off" });
  const el = h("section", { class: "live", testid: "panel-live", "aria-labelledby": "live-title" },
    h("div", { class: "section-head" }, h("h2", { id: "live-title" }, h("span", { class: "pulse", "aria-hidden": "true" }), t("live.title")), updated),
    h("div", { class: "live-grid" }, now.el, perMinute.el, pipe.el));

  async function refresh(): Promise<void> {
    await Promise.all([
      now.run(async (fresh) => {
        const r = await api.realtime();
        if (!fresh()) return;
        visitors.textContent = int(r.visitors);
        visitors.dataset.raw = String(r.visitors);
        pageviews.textContent = int(r.pageviews);
        const rows = r.pages.map((p) => h("tr", { testid: "live-page", "data-value": p.path },
          h("td", { class: "label" }, h("span", { class: "ellipsis", title: p.path }, p.path || "/")),
          h("td", { class: "num", testid: "live-page-visitors" }, int(p.visitors)),
          h("td", { class: "num", testid: "live-page-pageviews" }, int(p.pageviews))));
        replace(pages, rows.length ? table("live-pages-table", [t("dim.page"), [t("bd.visitors"), "num"], [t("bd.pageviews"), "num"]], rows, t("live.pages"))
          : h("p", { class: "muted" }, t("empty")));
      }),
      perMinute.run(async (fresh) => {
        const to = floorMinute(Date.now()) + 60_000;
        const from = to - HOUR;
        const r = await api.timeseries({ from: new Date(from).toISOString(), to: new Date(to).toISOString() }, "minute", state.tz);
        if (!fresh()) return;
        const { x, y } = align(buckets(from, to, "minute", state.tz), r.points.map((p) => ({ time: p.time, value: p.events })), 0);
        plot.dataset.total = String(y.reduce<number>((a, v) => a + (v || 0), 0));
        chart(plot, { label: t("live.chart"), x, grain: "minute", fmt: int, height: 200, series: [{ label: t("bd.events"), values: y, style: "bars" }] });
      }),
      pipe.run(async (fresh) => {
        const p = await api.pipeline();
        if (!fresh()) return;
        delay[1].textContent = p.watermark_delay_s === null ? "—" : duration(p.watermark_delay_s);
        lag[1].textContent = int(p.lag);
        accepted[1].textContent = int(p.accepted_last_hour);
        rejected[1].textContent = int(p.rejected_last_hour);
        const freshness = p.watermark_delay_s === null ? "unknown" : p.watermark_delay_s <= 60 ? "fresh" : "stale";
        badge.dataset.state = freshness;
        badge.className = `badge ${freshness}`;
        badge.textContent = t(freshness === "fresh" ? "live.fresh" : freshness === "stale" ? "live.stale" : "live.unknown");
      }),
    ]);
    updated.textContent = t("live.updated", { time: when(Date.now(), { timeStyle: "medium" }) });
  }

  let timer = 0;
  let stopped = false;
  const loop = async () => {
    if (stopped) return;
    if (!document.hidden) await refresh();
    if (!stopped) timer = window.setTimeout(loop, intervalS * 1000);
  };
  void loop();
  return { el, refresh, stop() { stopped = true; clearTimeout(timer); } };
}
