// The dashboard in headless chromium against a running collector (`tracklane up`).
//
//   node e2e/dashboard.mjs '<json config>'      (or the config as the first line of stdin)
//
// Config:
//   base           "http://127.0.0.1:PORT": the collector; the page is `${base}/`
//   readKey        a valid read key
//   expect         {key: expected}: key is a data-testid, or a CSS selector when it holds
//                  any of "[.#: >"; expected is the exact trimmed text of the first match
//                  (a string), the texts of all matches in order (an array of strings), or
//                  {"re": "<regex>"} matched against the first one's text. Polled until
//                  all match (the page's Refresh button is pressed every 3 s meanwhile).
//   screenshotsDir where overview-light.png, overview-dark.png, overview-zh-CN.png go
//   liveStep       true: once the first checks pass, print a line "READY" and wait for one
//                  line on stdin (send events, then write the line); it may be JSON
//                  {"live-visitors": "<text>"} to wait for that text, else any change of
//                  live-visitors is waited for. Default false.
//   funnel         optional {"steps": [...], "window_s": 3600}: builds that funnel and
//                  reports its steps (funnelSteps: [{event, persons, first}] per step)
//   wrongKey       default "rk_not_a_valid_key"
//   timezoneId     the browser's zone, default "UTC"; locale is en-US, colour scheme light
//   refresh        the live panel's interval in seconds (the page's ?refresh=), default 1
//   timeoutMs      per wait, default 20000
//   allowPanelErrors  true: a panel showing an error does not fail the run
//   silence        optional {"matchers": "rule=x", "createdBy": "...", "comment": "..."}:
//                  create that silence in the alerts panel, see its row, expire it, see
//                  it go (reported as silence: {created, expired})
//   range          optional "today", "24h", "7d" or "30d": picked before the checks
//   filter         optional {"dimension", "value", "expect"}, or a list of them: after the
//                  checks, for each, click that
//                  breakdown row (its tab first), check `expect` as above on the filtered
//                  dashboard and that a filter chip shows, then clear the filters
//
// It checks that every request went to base's origin, that there was no console error,
// page error or CSP violation (401s while trying the wrong key aside), that the key is
// taken from the #key= fragment into sessionStorage and the fragment removed, that no
// cookie is set, that a wrong key (typed, and in the fragment) gives the sign-in message,
// and that switching to zh-CN shows Chinese labels. Prints one JSON line last:
//   {"ok": bool, "failures": [...], "texts": {...}, "panels": {...}, ...}
// and exits 1 when a check failed.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const KEY_STORAGE = "tracklane.readKey";
const INVALID_EN = "This read key is not valid for any project.";
const ZH_LABEL = { testid: "kpi-pageviews-label", text: "浏览量" };
// Panels that load by themselves once signed in.
const PANELS = ["live-now", "live-chart", "live-pipeline", "kpis", "customers", "speed", "series", "breakdown-pages",
  "breakdown-sources", "breakdown-devices", "breakdown-locations", "retention", "attribution", "alerts-now",
  "alerts-transitions", "silences"];

const stdin = (() => {
  const queue = [];
  const waiting = [];
  let closed = false;
  let rl = null;
  const open = () => {
    if (rl) return;
    rl = createInterface({ input: process.stdin });
    rl.on("line", (l) => (waiting.length ? waiting.shift()(l) : queue.push(l)));
    rl.on("close", () => { closed = true; while (waiting.length) waiting.shift()(null); });
  };
  return {
    next() {
      open();
      if (queue.length) return Promise.resolve(queue.shift());
      return closed ? Promise.resolve(null) : new Promise((ok) => waiting.push(ok));
    },
    close: () => rl?.close(),
  };
})();

const selectorOf = (key) => (/[[.#: >]/.test(key) ? key : `[data-testid="${key}"]`);
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

function matches(expected, texts) {
  if (Array.isArray(expected)) return JSON.stringify(texts) === JSON.stringify(expected);
  if (expected && typeof expected === "object" && "re" in expected) return texts.length > 0 && new RegExp(expected.re).test(texts[0]);
  return texts.length > 0 && texts[0] === expected;
}

async function main() {
  const raw = process.argv[2] || (await stdin.next());
  const cfg = JSON.parse(raw || "{}");
  if (!cfg.base || !cfg.readKey) throw new Error("config: base and readKey are required");
  const origin = new URL(cfg.base).origin;
  const timeout = cfg.timeoutMs || 20_000;
  const refresh = cfg.refresh ?? 1;
  const page0 = `${origin}/?refresh=${refresh}`;
  const shots = cfg.screenshotsDir || null;
  if (shots) mkdirSync(shots, { recursive: true });

  const report = {
    ok: true, failures: [], texts: {}, panels: {}, panelErrors: {}, requests: { total: 0, foreign: [] },
    consoleErrors: [], pageErrors: [], cspViolations: [], storage: {}, signinError: null, fragmentSigninError: null,
    zhLabel: null, live: null, funnelSteps: null, screenshots: [],
  };
  const fail = (msg) => { report.ok = false; report.failures.push(msg); };
  let phase = "main";

  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: CHROMIUM_FLAGS });
  try {
    const context = await browser.newContext({
      locale: "en-US", timezoneId: cfg.timezoneId || "UTC", colorScheme: "light", viewport: { width: 1400, height: 900 },
    });
    context.setDefaultTimeout(timeout);
    // Reported by the browser, whatever the page's own code does.
    await context.addInitScript(() => {
      window.__csp = [];
      document.addEventListener("securitypolicyviolation", (e) => {
        window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile || ""}:${e.lineNumber || ""}`);
      });
    });
    const page = await context.newPage();
    page.on("request", (r) => {
      report.requests.total++;
      const url = r.url();
      if (url.startsWith("data:") || url.startsWith("about:")) return;
      if (new URL(url).origin !== origin) report.requests.foreign.push(url);
    });
    page.on("console", (m) => {
      if (process.env.E2E_DEBUG) console.error(`console.${m.type()}: ${m.text()}`);
      if (m.type() !== "error") return;
      const text = m.text();
      if (/Content Security Policy/i.test(text)) report.cspViolations.push(text);
      // The wrong key's own 401s are what that step is about.
      else if (phase === "wrongKey" && /status of 401/.test(text)) return;
      else report.consoleErrors.push(`[${phase}] ${text}`);
    });
    page.on("pageerror", (e) => report.pageErrors.push(`[${phase}] ${e.message}`));
    const cspSeen = async () => {
      for (const v of await page.evaluate(() => window.__csp || []).catch(() => [])) report.cspViolations.push(v);
    };

    const settled = async () => {
      await page.waitForFunction((ids) => ids.every((id) => {
        const el = document.querySelector(`[data-testid="panel-${id}"]`);
        return el && (el.dataset.state === "ready" || el.dataset.state === "error");
      }), PANELS, { timeout });
    };
    const panelStates = async () => page.evaluate((ids) => Object.fromEntries(ids.map((id) => {
      const el = document.querySelector(`[data-testid="panel-${id}"]`);
      const err = document.querySelector(`[data-testid="${id}-error"]`);
      return [id, { state: el?.dataset.state ?? "missing", error: err && !err.hidden ? err.textContent : null }];
    })), PANELS);
    const texts = (sel) => page.$$eval(sel, (els) => els.map((e) => (e.textContent || "").trim()));
    const shot = async (name) => {
      if (!shots) return;
      const path = join(shots, `${name}.png`);
      await page.screenshot({ path, fullPage: true });
      report.screenshots.push(path);
    };

    // 1. The key in the fragment: kept in sessionStorage, the fragment removed.
    await page.goto(`${page0}#key=${encodeURIComponent(cfg.readKey)}`);
    await page.waitForSelector('[data-testid="dashboard"]');
    await settled();
    report.storage.url = page.url();
    if (page.url().includes("#")) fail(`the fragment was not removed: ${page.url()}`);
    report.storage.sessionKey = await page.evaluate((k) => sessionStorage.getItem(k), KEY_STORAGE);
    if (report.storage.sessionKey !== cfg.readKey) fail("the read key is not in sessionStorage");
    const local = await page.evaluate(() => Object.values(localStorage));
    if (local.includes(cfg.readKey)) fail("the read key is in localStorage");

    // 2. The expected texts (polled: data may still be arriving).
    const expectTexts = async (expect, label) => {
      const deadline = Date.now() + timeout;
      let lastRefresh = Date.now();
      for (;;) {
        const got = {};
        for (const key of Object.keys(expect)) got[key] = await texts(selectorOf(key));
        const bad = Object.keys(expect).filter((k) => !matches(expect[k], got[k]));
        const seen = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, Array.isArray(expect[k]) ? v : v[0] ?? null]));
        if (!bad.length) return seen;
        if (Date.now() > deadline) {
          for (const k of bad) fail(`${label}${k}: expected ${JSON.stringify(expect[k])}, got ${JSON.stringify(seen[k])}`);
          return seen;
        }
        if (Date.now() - lastRefresh > 3000) {
          await page.click('[data-testid="refresh-all"]');
          lastRefresh = Date.now();
        }
        await sleep(250);
      }
    };
    if (cfg.range) {
      await page.click(`[data-testid="range-${cfg.range}"]`);
      await settled();
    }
    report.texts = await expectTexts(cfg.expect || {}, "");
    await settled();
    report.panels = await panelStates();
    for (const [id, p] of Object.entries(report.panels)) if (p.error) report.panelErrors[id] = p.error;
    if (Object.keys(report.panelErrors).length && !cfg.allowPanelErrors) fail(`panels with errors: ${JSON.stringify(report.panelErrors)}`);

    // 2b. Clicking a breakdown row filters the whole dashboard.
    report.filtered = [];
    for (const step of [].concat(cfg.filter || [])) {
      const { dimension, value } = step;
      await page.click(`[data-testid="tab-${dimension}"]`);
      const row = `[data-testid="breakdown-row"][data-dimension="${dimension}"][data-value="${value}"] [data-testid="breakdown-label"]`;
      await page.waitForSelector(row);
      await page.click(row);
      await page.waitForSelector(`[data-testid="filter-chip"][data-dimension="${dimension}"][data-value="${value}"]`);
      await settled();
      report.filtered.push(await expectTexts(step.expect || {}, `filtered by ${dimension}=${value}: `));
      await page.click(`[data-testid="filter-chip"][data-dimension="${dimension}"] [data-testid="filter-remove"]`);
      await page.waitForSelector('[data-testid="filter-chip"]', { state: "detached" });
      await settled();
    }

    // 2c. A silence, created and expired from the alerts panel.
    if (cfg.silence) {
      const rows = '[data-testid="silence-row"]';
      const before = (await page.$$(rows)).length;
      await page.fill('[data-testid="silence-matchers"]', cfg.silence.matchers);
      await page.fill('[data-testid="silence-created-by"]', cfg.silence.createdBy);
      await page.fill('[data-testid="silence-comment"]', cfg.silence.comment || "");
      await page.click('[data-testid="silence-submit"]');
      const created = await page.waitForFunction((n) => document.querySelectorAll('[data-testid="silence-row"]').length === n + 1, before)
        .then(() => true, () => false);
      const text = created ? (await texts('[data-testid="silence-matchers-text"]')).join(" | ") : null;
      if (created) await page.click(`${rows}:last-child [data-testid="silence-expire"]`);
      const expired = created && await page.waitForFunction((n) => document.querySelectorAll('[data-testid="silence-row"]').length === n, before)
        .then(() => true, () => false);
      report.silence = { created, expired, text };
      if (!created) fail(`silence: no row appeared (${(await texts('[data-testid="silence-message"]'))[0] ?? ""})`);
      else if (!expired) fail("silence: expiring it left its row");
    }

    // 3. An optional funnel.
    if (cfg.funnel) {
      const steps = cfg.funnel.steps;
      while ((await page.$$('[data-testid="funnel-step-input"]')).length < steps.length) await page.click('[data-testid="funnel-add"]');
      while ((await page.$$('[data-testid="funnel-step-input"]')).length > steps.length) await page.click('[data-testid="funnel-remove"]');
      const inputs = await page.$$('[data-testid="funnel-step-input"]');
      for (let i = 0; i < steps.length; i++) await inputs[i].fill(steps[i]);
      if (cfg.funnel.window_s) await page.selectOption('[data-testid="funnel-window"]', String(cfg.funnel.window_s));
      await page.click('[data-testid="funnel-run"]');
      await page.waitForFunction((n) => {
        const el = document.querySelector('[data-testid="panel-funnel"]');
        return el && el.dataset.state !== "loading" && (el.dataset.state === "error" || document.querySelectorAll('[data-testid="funnel-step"]').length >= n);
      }, steps.length);
      report.funnelSteps = await page.$$eval('[data-testid="funnel-step"]', (els) => els.map((e) => ({
        event: e.dataset.event,
        persons: e.querySelector('[data-testid="funnel-step-persons"]')?.textContent,
        first: e.querySelector('[data-testid="funnel-step-first"]')?.textContent,
      })));
    }
    await shot("overview-light");

    // 4. The live panel follows new events without a reload.
    if (cfg.liveStep) {
      const before = (await texts('[data-testid="live-visitors"]'))[0];
      process.stdout.write("READY\n");
      const line = await stdin.next();
      let want = null;
      try { want = line ? JSON.parse(line)["live-visitors"] ?? null : null; } catch { want = null; }
      const changed = await page.waitForFunction(([b, w]) => {
        const t = document.querySelector('[data-testid="live-visitors"]')?.textContent?.trim();
        return w === null ? t !== b && t !== "—" : t === w;
      }, [before, want], { timeout }).then(() => true, () => false);
      const after = (await texts('[data-testid="live-visitors"]'))[0];
      report.live = { before, after, expected: want };
      if (line === null) fail("liveStep: stdin closed before the go-ahead line");
      else if (!changed) fail(`live-visitors stayed ${JSON.stringify(after)} (wanted ${want === null ? "a change" : JSON.stringify(want)})`);
    }

    // 5. A wrong key, typed and in the fragment.
    phase = "wrongKey";
    await page.click('[data-testid="sign-out"]');
    await page.waitForSelector('[data-testid="signin-form"]');
    if (await page.evaluate((k) => sessionStorage.getItem(k), KEY_STORAGE)) fail("sign-out left the key in sessionStorage");
    const wrong = cfg.wrongKey || "rk_not_a_valid_key";
    await page.fill('[data-testid="signin-key"]', wrong);
    await page.click('[data-testid="signin-submit"]');
    await page.waitForFunction((m) => document.querySelector('[data-testid="signin-error"]')?.textContent === m, INVALID_EN)
      .catch(() => undefined);
    report.signinError = (await texts('[data-testid="signin-error"]'))[0] ?? null;
    if (report.signinError !== INVALID_EN) fail(`wrong key: sign-in said ${JSON.stringify(report.signinError)}`);
    // Another query string: a new fragment alone would not load the page again.
    await page.goto(`${page0}&again=1#key=${encodeURIComponent(wrong)}`);
    await page.waitForSelector('[data-testid="signin-error"]:not([hidden])');
    report.fragmentSigninError = (await texts('[data-testid="signin-error"]'))[0] ?? null;
    if (report.fragmentSigninError !== INVALID_EN) fail(`wrong key in the fragment: ${JSON.stringify(report.fragmentSigninError)}`);
    if (await page.evaluate((k) => sessionStorage.getItem(k), KEY_STORAGE)) fail("a wrong key was kept");
    phase = "signin";
    await page.fill('[data-testid="signin-key"]', cfg.readKey);
    await page.click('[data-testid="signin-submit"]');
    await page.waitForSelector('[data-testid="dashboard"]');
    await settled();

    // 6. Dark theme, then Chinese.
    phase = "dark";
    await page.click('[data-testid="theme-switch"]');
    if ((await page.getAttribute("html", "data-theme")) !== "dark") fail("the theme switch did not turn dark");
    if ((await page.evaluate(() => localStorage.getItem("tracklane.theme"))) !== "dark") fail("the theme was not kept");
    await settled();
    await shot("overview-dark");
    await page.click('[data-testid="theme-switch"]');

    phase = "zh-CN";
    await page.selectOption('[data-testid="lang-switch"]', "zh-CN");
    await page.waitForFunction(({ testid, text }) => document.querySelector(`[data-testid="${testid}"]`)?.textContent === text, ZH_LABEL)
      .catch(() => undefined);
    report.zhLabel = (await texts(`[data-testid="${ZH_LABEL.testid}"]`))[0] ?? null;
    if (report.zhLabel !== ZH_LABEL.text) fail(`zh-CN: ${ZH_LABEL.testid} is ${JSON.stringify(report.zhLabel)}`);
    if ((await page.getAttribute("html", "lang")) !== "zh-CN") fail("html lang is not zh-CN");
    await settled();
    await shot("overview-zh-CN");
    await page.selectOption('[data-testid="lang-switch"]', "en");

    await cspSeen();
    report.storage.cookies = (await context.cookies()).length;
    if (report.storage.cookies) fail("a cookie was set");
    await context.close();
  } finally {
    await browser.close();
    stdin.close();
  }
  if (report.requests.foreign.length) fail(`requests to other origins: ${report.requests.foreign.join(", ")}`);
  if (report.consoleErrors.length) fail(`console errors: ${report.consoleErrors.length}`);
  if (report.pageErrors.length) fail(`page errors: ${report.pageErrors.length}`);
  if (report.cspViolations.length) fail(`CSP violations: ${report.cspViolations.length}`);
  return report;
}

main().then((report) => {
  console.log(JSON.stringify(report));
  process.exit(report.ok ? 0 : 1);
}, (e) => {
  console.log(JSON.stringify({ ok: false, failures: [String(e && e.stack || e)] }));
  process.exit(1);
});
