// What the page shows: the key (sessionStorage only), language, theme and time zone
// (localStorage), and the range, filters and panel choices (memory). Changes are announced
// to subscribers with what changed.

import type { Filters, FilterDimension, Grain, Model, SeriesMetric } from "./api";
import { detectLang, type Lang } from "./i18n";
import { addDays, browserTz, ceilMinute, dateIn, DAY, HOUR, midnight } from "./time";

const KEY = "tracklane.readKey";
const LANG = "tracklane.lang";
const THEME = "tracklane.theme";
const TZ = "tracklane.tz";

export type RangeKind = "today" | "24h" | "7d" | "30d" | "custom";
export type Theme = "light" | "dark";
export type Change = "range" | "filters" | "metric" | "tz" | "lang" | "theme" | "auth";

function load(store: Storage | null, name: string): string | null {
  try {
    return store ? store.getItem(name) : null;
  } catch {
    return null;
  }
}
function save(store: Storage | null, name: string, value: string | null): void {
  try {
    if (!store) return;
    if (value === null) store.removeItem(name);
    else store.setItem(name, value);
  } catch {
    /* storage disabled: the choice lasts for this page only */
  }
}
const local = (): Storage | null => { try { return window.localStorage; } catch { return null; } };
const session = (): Storage | null => { try { return window.sessionStorage; } catch { return null; } };

const systemDark = (): boolean => window.matchMedia?.("(prefers-color-scheme: dark)").matches ?? false;
const storedLang = load(local(), LANG);
const storedTheme = load(local(), THEME);

export const state = {
  key: load(session(), KEY),
  lang: (storedLang === "en" || storedLang === "zh-CN" ? storedLang : detectLang(navigator.language)) as Lang,
  theme: (storedTheme === "light" || storedTheme === "dark" ? storedTheme : systemDark() ? "dark" : "light") as Theme,
  tz: load(local(), TZ) || browserTz(),
  range: { kind: "7d" as RangeKind, from: "", to: "" },
  filters: {} as Filters,
  metric: "visitors" as SeriesMetric,
  funnel: { steps: ["", ""], windowS: 3600, breakdown: "" },
  attribution: { event: "", model: "last_touch" as Model, lookbackDays: 30 },
};

type Listener = (what: Change) => void;
const listeners: Listener[] = [];
export const subscribe = (fn: Listener): void => { listeners.push(fn); };
export const emit = (what: Change): void => { for (const fn of listeners) fn(what); };

export function setKey(key: string | null): void {
  state.key = key;
  save(session(), KEY, key);
  emit("auth");
}
export function setLangChoice(lang: Lang): void {
  state.lang = lang;
  save(local(), LANG, lang);
  emit("lang");
}
export function setTheme(theme: Theme): void {
  state.theme = theme;
  save(local(), THEME, theme);
  emit("theme");
}
export function setTz(tz: string): void {
  state.tz = tz;
  save(local(), TZ, tz);
  emit("tz");
}
export function setRange(kind: RangeKind, from = "", to = ""): void {
  state.range = { kind, from, to };
  emit("range");
}
export function addFilter(dim: FilterDimension, value: string): void {
  state.filters = { ...state.filters, [dim]: value };
  emit("filters");
}
export function removeFilter(dim: FilterDimension | null): void {
  if (dim === null) state.filters = {};
  else {
    const next = { ...state.filters };
    delete next[dim];
    state.filters = next;
  }
  emit("filters");
}
export function setMetric(metric: SeriesMetric): void {
  state.metric = metric;
  emit("metric");
}

export interface Span { from: number; to: number }
export interface Period {
  cur: Span;
  prev: Span; // the same length, right before (for "today": yesterday up to this time)
  grain: Grain;
  firstDay: string; // local dates in tz of the range, for retention cohorts
  lastDay: string;
}

/** The chosen range as instants in the chosen zone. */
export function period(now = Date.now()): Period {
  const { kind, from, to } = state.range;
  const tz = state.tz;
  const today = dateIn(now, tz);
  const end = ceilMinute(now + 1);
  let cur: Span;
  let shift: number;
  let grain: Grain = "hour";
  if (kind === "today") {
    cur = { from: midnight(today, tz), to: end };
    shift = DAY;
  } else if (kind === "24h") {
    cur = { from: end - DAY, to: end };
    shift = DAY;
  } else if (kind === "7d" || kind === "30d") {
    const days = kind === "7d" ? 7 : 30;
    cur = { from: midnight(addDays(today, 1 - days), tz), to: end };
    shift = days * DAY;
    grain = kind === "7d" ? "hour" : "day";
  } else {
    cur = { from: midnight(from, tz), to: midnight(addDays(to, 1), tz) };
    shift = cur.to - cur.from;
    grain = shift / HOUR <= 400 ? "hour" : "day";
  }
  return {
    cur, prev: { from: cur.from - shift, to: cur.to - shift }, grain,
    firstDay: dateIn(cur.from, tz), lastDay: dateIn(cur.to - 1, tz),
  };
}

export const iso = (span: Span) => ({ from: new Date(span.from).toISOString(), to: new Date(span.to).toISOString() });

/** A custom range is 1 to 400 days, start not after end. */
export function validCustom(from: string, to: string): boolean {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(from) || !/^\d{4}-\d{2}-\d{2}$/.test(to) || from > to) return false;
  return (Date.parse(to) - Date.parse(from)) / DAY < 400;
}
