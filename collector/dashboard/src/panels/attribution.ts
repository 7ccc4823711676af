// Attribution: credited conversions, revenue and share per channel, for a conversion event
// and a model.

import * as api from "../api";
import { field, h, panel, replace, select, table } from "../dom";
import { dec, pct } from "../format";
import { t, type Key } from "../i18n";
import { iso, period, state } from "../state";
import { EVENTS_LIST } from "./events";
import { shared } from "./kpis";

export function attributionPanel(): { el: HTMLElement; load(): Promise<void> } {
  const p = panel("attribution", t("att.title"), { cls: "attribution" });
  const a = state.attribution;
  const eventIn = h("input", { type: "text", list: EVENTS_LIST, value: a.event, testid: "attribution-event", autocomplete: "off", spellcheck: "false",
    placeholder: "purchase", oninput: () => { a.event = eventIn.value.trim(); } });
  const model = select(api.MODELS.map((m) => [m, t(`model.${m}` as Key)]), a.model, {
    testid: "attribution-model", onchange: () => { a.model = model.value as api.Model; void load(); },
  });
  const lookback = h("input", { type: "number", min: "0", max: "365", step: "1", value: String(a.lookbackDays), testid: "attribution-lookback",
    oninput: () => { const v = Number(lookback.value); if (v >= 0 && v <= 365) a.lookbackDays = v; } });
  const result = h("div", { testid: "attribution-result", "aria-live": "polite" });
  replace(p.body, h("form", { class: "row wrap", onsubmit: (e: Event) => { e.preventDefault(); void load(); } },
    field(t("att.event"), eventIn), field(t("att.model"), model), field(t("att.lookback"), lookback, "field narrow"),
    h("button", { type: "submit", class: "btn primary", testid: "attribution-run" }, t("att.run"))), result);

  // The default conversion: the project's first order event, once the KPIs name them.
  shared.onOrderEvents = () => {
    if (!a.event && shared.orderEvents[0]) {
      a.event = eventIn.value = shared.orderEvents[0];
      void load();
    }
  };

  const load = () => p.run(async (fresh) => {
    const event = a.event || shared.orderEvents[0] || "purchase";
    const r = await api.attribution(iso(period().cur), event, a.model, a.lookbackDays);
    if (!fresh()) return;
    replace(result, r.channels.length ? table("attribution-table",
      [t("att.channel"), [t("att.conversions"), "num"], [t("att.revenue"), "num"], [t("att.share"), "num"]],
      r.channels.map((c) => {
        const bar = h("span", { class: "bar", "aria-hidden": "true" });
        bar.style.width = `${Math.round(c.share * 100)}%`;
        return h("tr", { testid: "attribution-row", "data-value": c.channel },
          h("td", { class: "label" }, bar, h("span", { class: "ellipsis", testid: "attribution-channel" }, c.channel)),
          h("td", { class: "num", testid: "attribution-conversions" }, dec(c.conversions, 2)),
          h("td", { class: "num", testid: "attribution-revenue" }, dec(c.revenue, 2)),
          h("td", { class: "num", testid: "attribution-share" }, pct(c.share)));
      }), t("att.title")) : h("p", { class: "muted" }, t("empty")));
  });
  return { el: p.el, load };
}
