// Segment's and RudderStack's own libraries, unchanged from npm, against the collector:
// in chromium from a page on another origin, and (analytics-node) in node.
//
//   node e2e/switching.mjs <scenario> '<json config>'
//
// config: {collector, writeKey, readKey, code, global, event} and, for `outage`,
// {requests, resends, reload}. `code` is
// one of docs/switching.md's blocks, host and key substituted; it is bundled by esbuild as
// a site would bundle it, and `global` names what it exports (analytics, rudderAnalytics).
// Each scenario prints one JSON line; the pytest side checks the exact counts.
import { build } from "esbuild";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { TIMEOUT, args, delivered, main, refuse } from "./browser.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { scenario, cfg } = args();
const collector = new URL(cfg.collector).origin;

/** docs/switching.md's block bundled for the page, as a site's build would: `window.vendor` holds
 * what it exports. */
async function bundle() {
  const result = await build({
    stdin: { contents: cfg.code, resolveDir: root, loader: "js" },
    bundle: true, write: false, platform: "browser", logLevel: "silent",
    format: "iife", globalName: "vendor",
  });
  return result.outputFiles[0].text;
}

/** /page loads the bundle (or is the snippet); /plain has no tracking (somewhere to
 * navigate away to). */
function pages(script) {
  return (req, res) => {
    const path = new URL(req.url, "http://pages").pathname;
    if (path === "/vendor.js") {
      res.writeHead(200, { "Content-Type": "text/javascript" }).end(script);
    } else if (path === "/page" || path === "/plain") {
      const loader = script === null ? cfg.code : '<script src="/vendor.js"></script>';
      const tags = path === "/page" ? `${loader}<a id="out" href="/plain">away</a>` : "";
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" })
        .end(`<!doctype html><title>Shop</title>${tags}`);
    } else {
      res.writeHead(404).end();
    }
  };
}

/** What a site does: a page view (Segment's snippet makes its own), `event` five times,
 * then the visitor logs in. */
function calls(page) {
  return page.evaluate(({ global, event, snippet }) => {
    const lib = snippet ? window[global] : window.vendor[global];
    if (!snippet) lib.page();
    for (let i = 0; i < 5; i++) lib.track(event, { i });
    lib.identify("user-1", { plan: "pro" });
  }, { global: cfg.global, event: cfg.event, snippet: scenario === "snippet" });
}

/** Resolves once everything `calls` sent is counted (exactness is checked by pytest). */
async function allDelivered() {
  await delivered(cfg, "page_view", 1, 40_000);
  await delivered(cfg, cfg.event, 5, 40_000);
  await delivered(cfg, "identify", 1, 40_000);
}

/** Every request the page makes to the collector, as "METHOD /path". */
function watch(page) {
  const seen = new Set();
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.origin === collector) seen.add(`${r.method()} ${u.pathname}`);
  });
  return seen;
}

async function until(check, what) {
  // RudderStack takes an abandoned queue over only after 10 s, then backs off.
  const deadline = Date.now() + 2 * TIMEOUT;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((ok) => setTimeout(ok, 50));
  }
}

const browserScenarios = {
  /** Load, call, and wait until the collector has counted it all. */
  async calls({ page, base }) {
    const seen = watch(page);
    await page.goto(`${base}/page`);
    await calls(page);
    await allDelivered();
    return { requests: [...seen].sort() };
  },

  /** The collector answers 503 until the library has tried `requests` times; every other
   * one of those did reach it (the answer was lost on the way back, so the library's resend
   * is a duplicate the pipeline must drop). With `reload`, the page is reloaded during the
   * outage and only the library's persisted queue can deliver. Returns once the library has
   * resent at least `resends` requests and each was answered. */
  async outage({ page, base }) {
    const log = { forwarded: 0, refused: 0, afterOutage: 0 };
    let outage = true;
    let attempts = 0;
    await page.route((url) => url.origin === collector, async (route) => {
      if (route.request().method() !== "POST") return route.continue();
      if (!outage) {
        await route.fulfill({ response: await route.fetch() });
        log.afterOutage++;
        return;
      }
      if (attempts++ % 2 === 0) {
        await route.fetch();
        log.forwarded++;
      } else {
        log.refused++;
      }
      await refuse(route);
    });
    await page.goto(`${base}/page`);
    await calls(page);
    await until(() => log.forwarded + log.refused >= cfg.requests, "the calls were refused");
    if (cfg.reload) {
      await page.reload({ waitUntil: "commit" });
    }
    outage = false;
    await until(() => log.afterOutage >= cfg.resends, "the library resent what was refused");
    await allDelivered();
    return log;
  },

  /** Segment's snippet, as docs/switching.md shows it, on a page reached from a campaign link
   * (`ajs_event`), which makes analytics.js load its query-string bundle. The snippet
   * loads analytics.js from Segment's CDN: here that is the npm package's own build. */
  async snippet({ page, context, base }) {
    const standalone = join(root, "node_modules/@segment/analytics-next/dist/umd/standalone.js");
    await context.route("https://cdn.segment.com/analytics.js/v1/*/analytics.min.js",
      (route) => route.fulfill({ path: standalone, contentType: "text/javascript" }));
    const seen = watch(page);
    await page.goto(`${base}/page?ajs_event=Promo%20Opened`);
    await calls(page);
    await allDelivered();
    await delivered(cfg, "Promo Opened", 1);
    return { requests: [...seen].sort() };
  },

  /** RudderStack's beacon delivery: the calls leave by sendBeacon as the page is left. */
  async beacon({ page, base }) {
    const seen = watch(page);
    await page.goto(`${base}/page`);
    await page.evaluate((g) => new Promise((ok) => window.vendor[g].ready(ok)), cfg.global);
    await calls(page);
    await page.click("#out");
    await page.waitForURL("**/plain");
    await allDelivered();
    return { requests: [...seen].sort() };
  },
};

/** A backend's calls through analytics-node: every message type, then closeAndFlush. */
async function node() {
  // Inside sdk_js/, so the block's imports resolve to sdk_js/node_modules as in an app.
  const dir = mkdtempSync(join(root, ".switching-"));
  try {
    const file = join(dir, "analytics.mjs");
    writeFileSync(file, cfg.code);
    const { [cfg.global]: analytics } = await import(pathToFileURL(file).href);
    const errors = [];
    analytics.on("error", (err) => errors.push(String(err.reason ?? err.code ?? err)));
    analytics.page({ userId: "user-1", name: "Home" });
    for (let i = 0; i < 5; i++) analytics.track({ userId: "user-1", event: cfg.event, properties: { i } });
    analytics.identify({ userId: "user-1", traits: { plan: "pro" } });
    analytics.group({ userId: "user-1", groupId: "acme" });
    analytics.alias({ userId: "user-1", previousId: "anon-1" });
    await analytics.closeAndFlush();
    await allDelivered();
    return { errors };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (scenario === "node") {
  console.log(JSON.stringify(await node()));
} else if (browserScenarios[scenario]) {
  const script = scenario === "snippet" ? null : await bundle();
  await main((ctx) => browserScenarios[scenario](ctx), pages(script));
} else {
  console.error(`unknown scenario ${scenario}; one of: node, ${Object.keys(browserScenarios).join(", ")}`);
  process.exit(2);
}
