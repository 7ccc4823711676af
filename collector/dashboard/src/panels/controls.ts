// The top bar: range, time zone, refresh, language, theme, switch project and sign out;
// then the range line and the active filters as removable chips.

import { field, h, select } from "../dom";
import { day, when } from "../format";
import { LANGS, t, type Key, type Lang } from "../i18n";
import { period, removeFilter, setLangChoice, setRange, setTheme, setTz, state, validCustom, type RangeKind } from "../state";
import { dateIn, timeZones } from "../time";
import { label } from "./breakdowns";
import type { FilterDimension } from "../api";

export interface BarActions { refresh(): void; switchProject(): void; signOut(): void }

function prefs(): HTMLElement[] {
  const lang = select(LANGS.map((l) => [l.id, l.name]), state.lang, {
    testid: "lang-switch", onchange: () => setLangChoice(lang.value as Lang),
  });
  const theme = h("button", {
    type: "button", class: "btn", testid: "theme-switch", "aria-pressed": String(state.theme === "dark"),
    onclick: () => setTheme(state.theme === "dark" ? "light" : "dark"),
  }, h("span", { "aria-hidden": "true" }, state.theme === "dark" ? "☾ " : "☀ "), t("nav.theme"));
  return [field(t("nav.language"), lang, "field inline"), theme];
}

export function topBar(actions: BarActions | null): HTMLElement {
  const brand = h("div", { class: "brand" }, h("h1", null, t("app.title")), h("span", { class: "muted" }, t("app.tagline")));
  if (!actions) return h("header", { class: "top", testid: "topbar" }, brand, h("div", { class: "controls" }, prefs()));

  const kinds: RangeKind[] = ["today", "24h", "7d", "30d", "custom"];
  const today = dateIn(Date.now(), state.tz);
  const from = h("input", { type: "date", testid: "range-from", max: today, value: state.range.from || today, required: true });
  const to = h("input", { type: "date", testid: "range-to", max: today, value: state.range.to || today, required: true });
  const invalid = h("p", { class: "error", role: "alert", testid: "range-error", hidden: true }, t("range.invalid"));
  const custom = h("form", {
    class: "custom-range", testid: "range-custom-form", hidden: state.range.kind !== "custom",
    onsubmit: (e: Event) => {
      e.preventDefault();
      invalid.hidden = validCustom(from.value, to.value);
      if (invalid.hidden) setRange("custom", from.value, to.value);
    },
  }, field(t("range.from"), from, "field inline"), field(t("range.to"), to, "field inline"),
  h("button", { type: "submit", class: "btn", testid: "range-apply" }, t("range.apply")), invalid);
  const range = h("div", { class: "segmented", role: "group", "aria-label": t("nav.range") }, kinds.map((k) => h("button", {
    type: "button", class: "seg", testid: `range-${k}`, "aria-pressed": String(state.range.kind === k),
    onclick: () => {
      if (k === "custom") {
        custom.hidden = false;
        from.focus();
      } else setRange(k);
    },
  }, t(`range.${k}` as Key))));
  const tz = select(timeZones().map((z) => [z, z]), state.tz, { testid: "tz-select", onchange: () => setTz(tz.value) });
  if (!timeZones().includes(state.tz)) tz.prepend(h("option", { value: state.tz }, state.tz)), (tz.value = state.tz);

  return h("header", { class: "top", testid: "topbar" }, brand,
    h("div", { class: "controls" },
      range, field(t("nav.timezone"), tz, "field inline"),
      h("button", { type: "button", class: "btn", testid: "refresh-all", onclick: () => actions.refresh() }, t("nav.refresh")),
      prefs(),
      h("button", { type: "button", class: "btn", testid: "switch-project", onclick: () => actions.switchProject() }, t("nav.switch")),
      h("button", { type: "button", class: "btn", testid: "sign-out", onclick: () => actions.signOut() }, t("nav.signout"))),
    custom);
}

/** "May 1, 2026, 00:00 – May 8, 2026, 14:03, compared with …", and the filter chips. */
export function rangeLine(): HTMLElement {
  const p = period();
  const show = (ms: number) => when(ms, { dateStyle: "medium", timeStyle: "short" });
  const text = state.range.kind === "custom"
    ? t("range.showing", { from: day(p.firstDay), to: day(p.lastDay), pfrom: day(dateIn(p.prev.from, state.tz)), pto: day(dateIn(p.prev.to - 1, state.tz)) })
    : t("range.showing", { from: show(p.cur.from), to: show(p.cur.to), pfrom: show(p.prev.from), pto: show(p.prev.to) });
  return h("p", { class: "muted small range-line", testid: "range-info" }, text);
}

export function filterChips(): HTMLElement {
  const entries = Object.entries(state.filters) as [FilterDimension, string][];
  return h("div", { class: "filters", testid: "filters", role: "region", tabindex: "-1", "aria-label": t("filters.title") },
    h("span", { class: "muted small" }, `${t("filters.title")}: `),
    entries.length ? [
      entries.map(([dim, value]) => h("span", { class: "chip", testid: "filter-chip", "data-dimension": dim, "data-value": value },
        h("span", null, `${t(`dim.${dim}` as Key)}: ${label(dim, value)}`),
        h("button", {
          type: "button", class: "chip-x", testid: "filter-remove", "aria-label": t("filters.remove", { dim: t(`dim.${dim}` as Key), value: label(dim, value) }),
          onclick: () => removeFilter(dim),
        }, "×"))),
      entries.length > 1 ? h("button", { type: "button", class: "btn small", testid: "filters-clear", onclick: () => removeFilter(null) }, t("filters.clear")) : null,
    ] : h("span", { class: "muted small", testid: "filters-none" }, t("filters.none")));
}
