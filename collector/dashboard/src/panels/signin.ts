// The sign-in form. The key is checked against the server before it is kept; a 401 says
// the key is not valid for any project.

import { ApiError, checkKey } from "../api";
import { field, h } from "../dom";
import { t } from "../i18n";

export interface SigninOptions {
  message?: string;
  canCancel: boolean;
  onDone(key: string): void;
  onCancel(): void;
}

export function signinView(o: SigninOptions): HTMLElement {
  const input = h("input", { type: "password", name: "read-key", testid: "signin-key", autocomplete: "off", spellcheck: "false", required: true, "aria-describedby": "signin-help signin-error" });
  const error = h("p", { id: "signin-error", class: "error", testid: "signin-error", role: "alert", hidden: !o.message }, o.message || "");
  const submit = h("button", { type: "submit", class: "btn primary", testid: "signin-submit" }, t("signin.submit"));
  const fail = (text: string) => {
    error.textContent = text;
    error.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
  };
  const form = h("form", {
    class: "signin", testid: "signin-form", "aria-labelledby": "signin-title",
    onsubmit: async (e: Event) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) return fail(t("signin.missing"));
      submit.disabled = true;
      submit.textContent = t("signin.checking");
      try {
        await checkKey(key);
        o.onDone(key);
      } catch (err) {
        fail(err instanceof ApiError && err.status === 401 ? t("signin.invalid")
          : t("signin.unreachable", { msg: err instanceof Error ? err.message : String(err) }));
      } finally {
        submit.disabled = false;
        submit.textContent = t("signin.submit");
      }
    },
  },
  h("h2", { id: "signin-title" }, t("signin.title")),
  field(t("signin.key"), input),
  h("p", { id: "signin-help", class: "muted small" }, t("signin.help")),
  error,
  h("div", { class: "row" }, submit,
    o.canCancel ? h("button", { type: "button", class: "btn", testid: "signin-cancel", onclick: () => o.onCancel() }, t("signin.cancel")) : null));
  queueMicrotask(() => input.focus());
  return h("main", { class: "signin-page", id: "main" }, form);
}
