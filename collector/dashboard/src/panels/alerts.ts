// Alerts: what fires now, the recent transitions, and silences (list, create, expire).

import * as api from "../api";
import { errorText, field, h, panel, replace, table } from "../dom";
import { int, when } from "../format";
import { t, type Key } from "../i18n";

const statusText = (s: string): string => (["firing", "pending", "resolved", "inactive", "active"].includes(s) ? t(`status.${s}` as Key) : s);
const badge = (s: string) => h("span", { class: `badge ${s}`, testid: "status", "data-status": s }, statusText(s));
const matchersText = (m: Record<string, string>) => Object.entries(m).map(([k, v]) => `${k}=${v}`).join(", ");

/** "rule=checkout, severity=critical" → {rule: "checkout", severity: "critical"}; null when malformed. */
export function parseMatchers(text: string): Record<string, string> | null {
  const out: Record<string, string> = {};
  for (const part of text.split(/[,\n]/).map((s) => s.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) return null;
    out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return Object.keys(out).length ? out : null;
}

export function alertsPanel(): { el: HTMLElement; load(): Promise<void> } {
  const now = panel("alerts-now", t("al.current"), { level: "h3" });
  const recent = panel("alerts-transitions", t("al.transitions"), { level: "h3" });
  const sil = panel("silences", t("al.silences"), { level: "h3" });
  const count = h("span", { class: "badge firing", testid: "alerts-firing-count", hidden: true });

  const matchers = h("input", { type: "text", testid: "silence-matchers", required: true, placeholder: "rule=checkout-conversion", autocomplete: "off", spellcheck: "false" });
  const minutes = h("input", { type: "number", min: "1", max: "129600", step: "1", value: "60", required: true, testid: "silence-duration" });
  const by = h("input", { type: "text", testid: "silence-created-by", required: true, maxlength: "200", autocomplete: "name" });
  const comment = h("input", { type: "text", testid: "silence-comment", maxlength: "2000" });
  const formMsg = h("p", { class: "form-msg", testid: "silence-message", role: "status" });
  const list = h("div", { testid: "silences-list" });
  const form = h("form", { class: "silence-form", testid: "silence-form", onsubmit: (e: Event) => { e.preventDefault(); void create(); } },
    h("div", { class: "row wrap" }, field(t("al.matchers"), matchers, "field grow"), field(t("al.duration"), minutes, "field narrow"),
      field(t("al.createdBy"), by), field(t("al.comment"), comment, "field grow")),
    h("p", { class: "muted small" }, t("al.matchersHelp")),
    h("div", { class: "row" }, h("button", { type: "submit", class: "btn primary", testid: "silence-submit" }, t("al.create")), formMsg));
  matchers.setAttribute("aria-describedby", formMsg.id = "silence-msg");
  replace(sil.body, list, form);

  async function create() {
    const m = parseMatchers(matchers.value);
    formMsg.className = "form-msg error";
    if (!m) {
      formMsg.textContent = t("al.badMatchers");
      return;
    }
    try {
      await api.createSilence({ matchers: m, duration_minutes: Number(minutes.value), created_by: by.value.trim(), comment: comment.value });
      formMsg.className = "form-msg ok";
      formMsg.textContent = t("al.created");
      matchers.value = comment.value = "";
      await loadSilences();
    } catch (e) {
      formMsg.textContent = errorText(e);
    }
  }

  const loadSilences = () => sil.run(async (fresh) => {
    const r = await api.silences();
    if (!fresh()) return;
    replace(list, r.silences.length ? table("silences-table",
      [t("al.matchers"), t("al.ends"), t("al.createdBy"), t("al.comment"), t("al.state"), ""],
      r.silences.map((s) => h("tr", { testid: "silence-row", "data-id": s.id },
        h("td", { testid: "silence-matchers-text" }, matchersText(s.matchers)),
        h("td", null, when(s.ends_at)), h("td", null, s.created_by), h("td", null, s.comment),
        h("td", null, badge(s.state)),
        h("td", null, h("button", {
          type: "button", class: "btn small", testid: "silence-expire", "aria-label": t("al.expireLabel", { id: s.id }),
          onclick: async (e: Event) => {
            (e.currentTarget as HTMLButtonElement).disabled = true;
            try {
              await api.expireSilence(s.id);
            } catch (err) {
              formMsg.className = "form-msg error";
              formMsg.textContent = errorText(err);
            }
            await loadSilences();
          },
        }, t("al.expire"))))), t("al.silences")) : h("p", { class: "muted", testid: "silences-none" }, t("al.noSilences")));
  });

  const loadAlerts = async () => {
    const fetched = api.alerts();
    await Promise.all([
      now.run(async (fresh) => {
        const r = await fetched;
        if (!fresh()) return;
        const shown = r.alerts.filter((a) => a.status !== "inactive")
          .sort((a, b) => Number(b.status === "firing") - Number(a.status === "firing") || a.rule.localeCompare(b.rule));
        const firing = r.alerts.filter((a) => a.status === "firing").length;
        count.hidden = !firing;
        count.textContent = t("al.firingCount", { n: int(firing) });
        replace(now.body, !firing ? h("p", { class: "muted", testid: "alerts-none" }, r.alerts.length ? t("al.noneFiring") : t("al.noAlerts")) : null,
          shown.length ? table("alerts-table", [t("al.rule"), t("al.status"), t("al.severity"), t("al.since"), t("al.summary")],
            shown.map((a) => h("tr", { testid: "alert-row", "data-rule": a.rule, "data-status": a.status },
              h("td", null, a.rule), h("td", null, badge(a.status)), h("td", null, a.labels.severity || ""),
              h("td", null, when(a.status === "resolved" ? a.resolved_at : a.fired_at)),
              h("td", null, a.finding?.summary || ""))), t("al.current")) : null);
      }),
      recent.run(async (fresh) => {
        const r = await fetched;
        if (!fresh()) return;
        replace(recent.body, r.transitions.length ? table("transitions-table", [t("al.at"), t("al.rule"), t("al.change"), t("al.summary")],
          r.transitions.slice(0, 50).map((x) => h("tr", { testid: "transition-row", "data-rule": x.rule, "data-to": x.to },
            h("td", null, when(x.at)), h("td", null, x.rule), h("td", null, statusText(x.from), " → ", badge(x.to)), h("td", null, x.summary))), t("al.transitions"))
          : h("p", { class: "muted" }, t("al.noTransitions")));
      }),
    ]);
  };

  const el = h("section", { class: "alerts", testid: "panel-alerts", "aria-labelledby": "alerts-title" },
    h("div", { class: "section-head" }, h("h2", { id: "alerts-title" }, t("al.title")), count),
    h("div", { class: "alerts-grid" }, now.el, recent.el), sil.el);
  return { el, load: async () => { await Promise.all([loadAlerts(), loadSilences()]); } };
}
