// The funnel builder: 2 to 10 events (typed or picked from the range's event names), a
// window and an optional breakdown; persons and conversion per step as bars and numbers.

import * as api from "../api";
import { field, h, panel, replace, select } from "../dom";
import { int, pct } from "../format";
import { t, type Key } from "../i18n";
import { iso, period, state } from "../state";
import { label } from "./breakdowns";
import { EVENTS_LIST, onEventNames } from "./events";
import { shared } from "./kpis";

const WINDOWS = [600, 3600, 86400, 604800, 2592000];
const ready = () => state.funnel.steps.filter((s) => s.trim()).length >= 2;

export function funnelPanel(): { el: HTMLElement; load(): Promise<void> } {
  const p = panel("funnel", t("funnel.title"), { cls: "funnel" });
  const stepsBox = h("ol", { class: "funnel-inputs", testid: "funnel-inputs" });
  const add = h("button", { type: "button", class: "btn", testid: "funnel-add", onclick: () => { state.funnel.steps.push(""); drawInputs(true); } }, t("funnel.add"));
  const windowSel = select(WINDOWS.map((w) => [String(w), t(`win.${w}` as Key)]), String(state.funnel.windowS), {
    testid: "funnel-window", onchange: () => { state.funnel.windowS = Number(windowSel.value); },
  });
  const bySel = select([["", t("funnel.noBreakdown")], ...api.FUNNEL_BREAKDOWNS.map((d): [string, string] => [d, t(`dim.${d}` as Key)])],
    state.funnel.breakdown, { testid: "funnel-breakdown", onchange: () => { state.funnel.breakdown = bySel.value; } });
  const result = h("div", { class: "funnel-result", testid: "funnel-result", "aria-live": "polite" });
  const form = h("form", { class: "funnel-form", testid: "funnel-form", onsubmit: (e: Event) => { e.preventDefault(); void load(); } },
    stepsBox, h("div", { class: "row" }, add),
    h("div", { class: "row wrap" }, field(t("funnel.window"), windowSel), field(t("funnel.breakdown"), bySel),
      h("button", { type: "submit", class: "btn primary", testid: "funnel-run" }, t("funnel.run"))));
  replace(p.body, form, result);

  function drawInputs(focusLast = false) {
    const steps = state.funnel.steps;
    replace(stepsBox, steps.map((value, i) => {
      const input = h("input", {
        type: "text", list: EVENTS_LIST, value, testid: "funnel-step-input", autocomplete: "off", spellcheck: "false",
        oninput: () => { steps[i] = input.value; },
      });
      return h("li", { class: "funnel-input" }, field(t("funnel.step", { n: i + 1 }), input, "field grow"),
        steps.length > 2 ? h("button", {
          type: "button", class: "btn icon", testid: "funnel-remove", "aria-label": t("funnel.remove", { n: i + 1 }),
          onclick: () => { steps.splice(i, 1); drawInputs(); },
        }, "×") : null);
    }));
    add.toggleAttribute("disabled", steps.length >= 10);
    if (focusLast) stepsBox.querySelector<HTMLInputElement>("li:last-child input")?.focus();
  }
  drawInputs();

  // First visit: page views to the first order event, when the project has both.
  onEventNames((names) => {
    if (state.funnel.steps.some((s) => s)) return;
    const order = [...shared.orderEvents, "purchase", "Order Completed"].find((e) => names.includes(e));
    const start = names.includes("page_view") ? "page_view" : names[0];
    const end = order && order !== start ? order : names.find((n) => n !== start);
    if (start && end) {
      state.funnel.steps = [start, end];
      drawInputs();
      void load();
    }
  });

  const load = () => p.run(async (fresh) => {
    const steps = state.funnel.steps.map((s) => s.trim()).filter(Boolean);
    if (steps.length < 2 || steps.length > 10) {
      replace(result, h("p", { class: "muted" }, t("funnel.needSteps")));
      return;
    }
    const r = await api.funnel(iso(period().cur), steps, state.funnel.windowS, state.funnel.breakdown || null, state.filters);
    if (!fresh()) return;
    const by = state.funnel.breakdown as api.FilterDimension;
    replace(result, r.funnels.length ? r.funnels.map((f) => h("div", { class: "funnel-segment", testid: "funnel-segment", "data-segment": f.segment },
      by ? h("h3", null, t("funnel.segment", { value: label(by, f.segment) })) : null,
      h("ol", { class: "funnel-steps" }, f.steps.map((s, i) => {
        const bar = h("span", { class: "fbar" });
        bar.style.width = `${Math.max(0, Math.min(100, s.from_first * 100))}%`;
        return h("li", { class: "funnel-step", testid: "funnel-step", "data-event": s.event, "data-index": String(i) },
          h("div", { class: "fhead" }, h("span", { class: "fname" }, `${i + 1}. ${s.event}`),
            h("span", { class: "fnum" }, h("span", { testid: "funnel-step-persons" }, int(s.persons)), ` ${t("funnel.persons")}`)),
          h("div", { class: "ftrack", "aria-hidden": "true" }, bar),
          h("div", { class: "fstats muted small" },
            i ? h("span", null, `${t("funnel.fromPrevious")}: `, h("span", { testid: "funnel-step-previous" }, pct(s.from_previous))) : null,
            h("span", null, `${t("funnel.fromFirst")}: `, h("span", { testid: "funnel-step-first" }, pct(s.from_first)))));
      })))) : h("p", { class: "muted" }, t("empty")));
  });
  return { el: p.el, load: () => (ready() ? load() : Promise.resolve()) };
}
