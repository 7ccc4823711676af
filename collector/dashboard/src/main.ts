// Tracklane's dashboard: sign in with a read key, then live numbers, KPIs, a KPI's time
// series, breakdowns, a funnel, retention, attribution and alerts, all from this origin.
//
// Text of the test ids (data-testid), for tests that compare it. Numbers use
// Intl.NumberFormat in the chosen language (en or zh-CN; both group thousands with ","):
// - integers (kpi-pageviews/visitors/sessions/orders/new_visitors/returning_visitors-value,
//   live-visitors, live-pageviews, live-page-visitors, breakdown-visitors/pageviews,
//   funnel-step-persons, retention-size, pipeline-lag/accepted/rejected): "1,234";
//   kpi-visitors-value is visitors_exact;
// - rates (kpi-bounce_rate/conversion_rate/repurchase_rate-value, breakdown-bounce,
//   funnel-step-previous/first, retention-cell, retention-d1/d7/d30, attribution-share):
//   a percentage with at most one decimal, "42.5%", "0%", "100%"; a retention cell not yet
//   reached (cohort day + N after as_of) is "";
// - changes (kpi-*-change): relative to the previous period, "+12.5%", "-3%", "0%"; "—"
//   when the previous value is 0 or missing; data-trend is up, down, flat or none;
// - durations (kpi-avg_duration_s-value, pipeline-delay): "45s", "2m 05s", "1h 02m"
//   (zh-CN "45秒", "2分05秒", "1小时02分");
// - money (kpi-revenue/aov-value, their -previous): Intl currency format, en "€1,234.50",
//   "$12.00", zh-CN "€1,234.50", "US$12.00"; without a currency "12.00"; several
//   currencies joined by " · " (then no change is computed: amounts are never added);
// - attribution-conversions/revenue: two decimals, "1.50";
// - kpi-<id>-previous: the previous period's value, formatted as kpi-<id>-value;
// - breakdown-label: the value as shown: countries "Germany (DE)" (Intl.DisplayNames in
//   the language, then the code), "" as "Unknown" ("Direct / none" for referrers);
// - missing values: "—" (an em dash).
// kpi-*-value and kpi-*-change also carry data-raw (the number; the change as a fraction);
// rows carry data-value (the raw value, "" for unknown): breakdown-row (and data-dimension),
// live-page, attribution-row, filter-chip; funnel-step has data-event, retention-cell
// data-day/data-n/data-count, alert-row data-rule/data-status, silence-row data-id.
// Panels (data-testid="panel-<id>") have data-state: idle, loading, ready or error; an
// error is the text of <id>-error.

import { onAuthError, setKey as setApiKey, checkKey, ApiError } from "./api";
import { redrawAll } from "./charts";
import { h, replace } from "./dom";
import { setLang, t } from "./i18n";
import { attributionPanel } from "./panels/attribution";
import { alertsPanel } from "./panels/alerts";
import { breakdownPanels } from "./panels/breakdowns";
import { filterChips, rangeLine, topBar } from "./panels/controls";
import { eventsDatalist, resetEventNames } from "./panels/events";
import { funnelPanel } from "./panels/funnel";
import { customersPanel, kpiPanel, seriesPanel, shared, speedPanel } from "./panels/kpis";
import { livePanel, type Live } from "./panels/live";
import { retentionPanel } from "./panels/retention";
import { signinView } from "./panels/signin";
import { removeFilter, setKey, state, subscribe, type Change } from "./state";

const params = new URLSearchParams(location.search);
/** ?refresh=<seconds> sets the live panel's interval (default 5 s); it is not secret. */
const REFRESH_S = (() => {
  const v = Number(params.get("refresh"));
  return Number.isFinite(v) && v >= 0.2 && v <= 3600 ? v : 5;
})();

const root = document.getElementById("app") || document.body.appendChild(h("div", { id: "app" }));

interface Dashboard {
  live: Live;
  bar: HTMLElement;
  info: HTMLElement;
  chips: HTMLElement;
  kpis: ReturnType<typeof kpiPanel>;
  series: ReturnType<typeof seriesPanel>;
  data: { load(): Promise<void> }[];
  alerts: ReturnType<typeof alertsPanel>;
}
let dash: Dashboard | null = null;

function applyTheme(): void {
  document.documentElement.dataset.theme = state.theme;
  document.documentElement.style.colorScheme = state.theme;
}
function applyLang(): void {
  setLang(state.lang);
  document.documentElement.lang = state.lang;
  document.title = `${t("app.title")} · ${t("app.tagline")}`;
}

function stop(): void {
  dash?.live.stop();
  dash = null;
}

function showSignin(message = "", canCancel = false): void {
  stop();
  root.replaceChildren(topBar(null), signinView({
    message, canCancel,
    onDone: (key) => {
      if (key !== state.key) {
        // Another project: its own filters, events and funnel.
        state.funnel.steps = ["", ""];
        state.attribution.event = "";
        shared.orderEvents = [];
        removeFilter(null);
      }
      setKey(key);
      setApiKey(key);
      showDashboard();
    },
    onCancel: () => showDashboard(),
  }));
}

function signOut(message = t("signin.signedOut")): void {
  setKey(null);
  setApiKey(null);
  showSignin(message);
}

/** Re-renders `parts` with `fn` and gives the focus back to the same control. */
function keepFocus(parts: HTMLElement[], fn: () => void): void {
  const active = document.activeElement as HTMLElement | null;
  const id = active && parts.some((p) => p.contains(active)) ? active.dataset.testid : undefined;
  fn();
  // A removed filter's button is gone: the focus goes to the filters instead.
  if (id) (document.querySelector<HTMLElement>(`[data-testid="${id}"]`) || document.querySelector<HTMLElement>('[data-testid="filters"]'))?.focus();
}

function showDashboard(): void {
  stop();
  resetEventNames();
  const actions = { refresh: () => reload("all"), switchProject: () => showSignin("", true), signOut: () => signOut() };
  const live = livePanel(REFRESH_S);
  const events = eventsDatalist();
  const kpis = kpiPanel();
  const customers = customersPanel();
  const speed = speedPanel();
  const series = seriesPanel();
  const breakdowns = breakdownPanels();
  const funnel = funnelPanel();
  const attribution = attributionPanel();
  const retention = retentionPanel();
  const alerts = alertsPanel();
  const d: Dashboard = {
    live, kpis, series, alerts, bar: topBar(actions), info: rangeLine(), chips: filterChips(),
    data: [kpis, customers, speed, series, breakdowns, events, funnel, attribution, retention],
  };
  root.replaceChildren(
    h("a", { class: "skip", href: "#main" }, t("nav.skip")),
    d.bar,
    h("main", { id: "main", tabindex: "-1", class: "dash", testid: "dashboard" },
      h("div", { class: "context" }, d.info, d.chips),
      live.el,
      h("div", { class: "overview" }, kpis.el, customers.el),
      speed.el,
      series.el,
      breakdowns.el,
      h("div", { class: "two" }, funnel.el, attribution.el),
      retention.el,
      alerts.el),
    h("footer", { class: "foot muted small" }, t("footer")),
    events.el);
  dash = d;
  reload("all");
}

function reload(what: Change | "all"): void {
  const d = dash;
  if (!d) return;
  if (what === "all" || what === "range" || what === "tz" || what === "filters" || what === "theme") {
    keepFocus([d.bar, d.info, d.chips], () => {
      const bar = topBar({ refresh: () => reload("all"), switchProject: () => showSignin("", true), signOut: () => signOut() });
      d.bar.replaceWith(bar);
      d.bar = bar;
      const info = rangeLine();
      d.info.replaceWith(info);
      d.info = info;
      const chips = filterChips();
      d.chips.replaceWith(chips);
      d.chips = chips;
    });
  }
  if (what === "theme") return redrawAll();
  if (what === "metric") {
    d.kpis.select();
    void d.series.load();
    return;
  }
  for (const p of d.data) void p.load();
  if (what === "all" || what === "tz") {
    void d.live.refresh();
    void d.alerts.load();
  }
}

subscribe((what) => {
  if (what === "lang") {
    applyLang();
    if (dash) showDashboard();
    else showSignin();
  } else if (what === "theme") {
    applyTheme();
    reload("theme");
  } else if (what !== "auth") reload(what);
});

onAuthError(() => {
  if (state.key) signOut(t("signin.invalid"));
});

async function start(): Promise<void> {
  applyTheme();
  applyLang();
  // #key=<read key>: kept in sessionStorage, then taken out of the address bar and history.
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("key");
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  const key = fromUrl?.trim() || state.key;
  if (!key) return showSignin();
  replace(root, topBar(null), h("main", { class: "signin-page" }, h("p", { class: "muted", role: "status" }, t("signin.checking"))));
  try {
    await checkKey(key);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      setKey(null);
      return showSignin(t("signin.invalid"));
    }
    // Unreachable now: show the dashboard, whose panels say so and retry.
  }
  setKey(key);
  setApiKey(key);
  showDashboard();
}

void start();
