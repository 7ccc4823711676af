// A tiny element builder. It never writes a `style` attribute (the page's CSP forbids
// inline styles); sizes and colours set from code go through element.style (CSSOM).

import { ApiError } from "./api";
import { t } from "./i18n";

export type Child = Node | string | number | null | undefined | false | Child[];
type Handler = (e: Event) => void;
export type Attrs = Record<string, string | number | boolean | null | undefined | Handler>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.slice(2).toLowerCase(), value);
    else if (name === "class") el.className = String(value);
    else if (name === "testid") el.dataset.testid = String(value);
    else if (name === "value" && "value" in el) (el as HTMLInputElement).value = String(value);
    else if (name === "style") throw new Error("inline style: use element.style");
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

let ids = 0;
export const uid = (prefix: string): string => `${prefix}-${++ids}`;

/** A labelled form field: label text + control, the label pointing at the control. */
export function field(label: string, control: HTMLElement, cls = "field"): HTMLElement {
  if (!control.id) control.id = uid("f");
  return h("div", { class: cls }, h("label", { for: control.id }, label), control);
}

export function select(options: [string, string][], value: string, attrs: Attrs = {}): HTMLSelectElement {
  const s = h("select", attrs, options.map(([v, text]) => h("option", { value: v }, text)));
  s.value = value;
  return s;
}

/** A table with a header row of th scope=col. */
export function table(testid: string, heads: (string | [string, string])[], rows: Node[], caption?: string): HTMLTableElement {
  return h("table", { testid, class: "tbl" },
    caption ? h("caption", { class: "sr-only" }, caption) : null,
    h("thead", null, h("tr", null, heads.map((c) => Array.isArray(c)
      ? h("th", { scope: "col", class: c[1] }, c[0]) : h("th", { scope: "col" }, c)))),
    h("tbody", null, rows));
}

export function errorText(e: unknown): string {
  if (e instanceof ApiError) {
    if (e.status === 404 || e.code === "not_found") return t("error.notYet", { msg: `${e.status} ${e.code}` });
    return t("error.generic", { msg: e.message });
  }
  return t("error.generic", { msg: e instanceof Error ? e.message : String(e) });
}

/** A panel: a section with a heading, an error line and a body refreshed by `run`.
 * data-state on the section: idle, loading, ready or error. */
export interface Panel {
  el: HTMLElement;
  body: HTMLElement;
  /** Runs `work` for this panel: stale answers are dropped, errors shown in the panel. */
  run(work: (fresh: () => boolean) => Promise<void>): Promise<void>;
}

export function panel(id: string, title: string, opts: { cls?: string; tools?: Child; level?: "h2" | "h3" } = {}): Panel {
  const headingId = uid("h");
  const error = h("p", { class: "error", testid: `${id}-error`, role: "alert", hidden: true });
  const body = h("div", { class: "panel-body", testid: `${id}-body` });
  const el = h("section", { class: `panel ${opts.cls || ""}`, testid: `panel-${id}`, "aria-labelledby": headingId, "data-state": "idle" },
    h("div", { class: "panel-head" }, h(opts.level || "h2", { id: headingId }, title), opts.tools), error, body);
  let generation = 0;
  return {
    el, body,
    async run(work) {
      const mine = ++generation;
      const fresh = () => mine === generation;
      el.dataset.state = "loading";
      el.setAttribute("aria-busy", "true");
      try {
        await work(fresh);
        if (!fresh()) return;
        el.dataset.state = "ready";
        error.hidden = true;
        replace(error);
      } catch (e) {
        if (!fresh()) return;
        el.dataset.state = "error";
        error.hidden = false;
        replace(error, errorText(e));
      } finally {
        if (mine === generation) el.setAttribute("aria-busy", "false");
      }
    },
  };
}
