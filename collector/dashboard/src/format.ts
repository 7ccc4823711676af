// Number, money, duration and time formats in the chosen language (see main.ts for the
// text each test id holds).

import { lang, t } from "./i18n";
import { state } from "./state";

const cache = new Map<string, Intl.NumberFormat>();
function nf(opts: Intl.NumberFormatOptions): Intl.NumberFormat {
  const id = lang() + JSON.stringify(opts);
  let f = cache.get(id);
  if (!f) cache.set(id, (f = new Intl.NumberFormat(lang(), opts)));
  return f;
}

const NONE = "—";
const ok = (n: number | null | undefined): n is number => typeof n === "number" && Number.isFinite(n);

/** 1234 → "1,234" (grouped integer, rounded). */
export const int = (n: number | null | undefined): string => (ok(n) ? nf({ maximumFractionDigits: 0 }).format(n) : NONE);
/** 0.4251 → "42.5%" (at most one decimal). */
export const pct = (x: number | null | undefined): string => (ok(x) ? nf({ style: "percent", maximumFractionDigits: 1 }).format(x) : NONE);
/** 12.3456 → "12.35" (exactly `d` decimals). */
export const dec = (n: number | null | undefined, d = 2): string =>
  ok(n) ? nf({ minimumFractionDigits: d, maximumFractionDigits: d }).format(n) : NONE;

/** 42.5, "EUR" → "€42.50"; no currency ('' or null) → "42.50". */
export function money(n: number | null | undefined, currency: string | null | undefined): string {
  if (!ok(n)) return NONE;
  if (!currency) return dec(n, 2);
  try {
    return nf({ style: "currency", currency }).format(n);
  } catch {
    return `${dec(n, 2)} ${currency}`;
  }
}

/** Seconds → "45s", "2m 05s", "1h 02m" (zh-CN: "45秒", "2分05秒", "1小时02分"). */
export function duration(s: number | null | undefined): string {
  if (!ok(s)) return NONE;
  const total = Math.round(s);
  const pad = (n: number) => String(n).padStart(2, "0");
  if (total < 60) return t("dur.s", { s: total });
  if (total < 3600) return t("dur.ms", { m: Math.floor(total / 60), s: pad(total % 60) });
  return t("dur.hm", { h: int(Math.floor(total / 3600)), m: pad(Math.floor((total % 3600) / 60)) });
}

/** Relative change: "+12.5%", "-3%", "0%"; "—" when the previous value is 0 or missing. */
export function change(cur: number | null | undefined, prev: number | null | undefined): { text: string; delta: number | null } {
  if (!ok(cur) || !ok(prev) || prev === 0) return { text: NONE, delta: null };
  const delta = (cur - prev) / Math.abs(prev);
  return { text: nf({ style: "percent", maximumFractionDigits: 1, signDisplay: "exceptZero" }).format(delta), delta };
}

const dtf = new Map<string, Intl.DateTimeFormat>();
/** An instant in the chosen zone and language. */
export function when(ms: number | string | null | undefined, opts: Intl.DateTimeFormatOptions = { dateStyle: "medium", timeStyle: "short" }): string {
  const v = typeof ms === "string" ? Date.parse(ms) : ms;
  if (!ok(v)) return NONE;
  const id = lang() + state.tz + JSON.stringify(opts);
  let f = dtf.get(id);
  if (!f) dtf.set(id, (f = new Intl.DateTimeFormat(lang(), { ...opts, timeZone: state.tz })));
  return f.format(v);
}
/** A calendar date "YYYY-MM-DD" as the language writes it (no zone shift). */
export function day(d: string, opts: Intl.DateTimeFormatOptions = { dateStyle: "medium" }): string {
  const v = Date.parse(`${d}T00:00:00Z`);
  return Number.isFinite(v) ? new Intl.DateTimeFormat(lang(), { ...opts, timeZone: "UTC" }).format(v) : d;
}

let regions: Intl.DisplayNames | null = null;
let regionsLang = "";
/** "DE" → "Germany (DE)" / "德国 (DE)"; "" → "Unknown". */
export function country(code: string): string {
  if (!code) return t("bd.unknown");
  if (regionsLang !== lang()) {
    regionsLang = lang();
    try {
      regions = new Intl.DisplayNames([lang()], { type: "region" });
    } catch {
      regions = null;
    }
  }
  let name: string | undefined;
  try {
    name = regions?.of(code.toUpperCase());
  } catch {
    name = undefined;
  }
  return name && name !== code.toUpperCase() ? `${name} (${code})` : code;
}
