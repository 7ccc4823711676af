// Real-browser scenarios for the SDK: Debian's chromium driven by playwright-core.
//
//   node e2e/scenarios.mjs <scenario> '<json config>'
//
// config: {collector, writeKey, readKey, url?}. Test pages are served from a second origin (a
// small static server here), so every send is cross-origin, as on a customer's site.
// The SDK is loaded by docs/sdk.md's loader snippet from the collector's /sdk/ path.
// Each scenario prints one JSON line describing what the browser saw; the pytest side
// reads the counts back from the pipeline and checks them.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TIMEOUT, args, delivered as counted, main, refuse } from "./browser.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { scenario, cfg } = args();

/** The loader snippet from dist/, pointed at the collector, with extra init options. */
function snippet(options = {}) {
  const text = readFileSync(join(root, "dist/snippet.txt"), "utf8");
  const init = JSON.stringify({ writeKey: cfg.writeKey, endpoint: cfg.collector, ...options });
  return text
    .replace(/tracklane\.init\(\{[^)]*\}\);/, `tracklane.init(${init});`)
    .replaceAll("https://COLLECTOR", cfg.collector);
}

/** Test pages: /app?o=<init options JSON>, /plain (no SDK), /pixel?src=<img URL>. */
function pages(req, res) {
  const url = new URL(req.url, "http://pages");
  let body;
  if (url.pathname.startsWith("/app")) {
    const options = JSON.parse(url.searchParams.get("o") || "{}");
    body = `<!doctype html><title>App</title>${snippet(options)}<a id="out" href="/plain">away</a>`;
  } else if (url.pathname === "/vitals") {
    // The Web Vitals add-on; the page's largest content appears only after `delay` ms.
    const delay = Number(url.searchParams.get("delay") || 0);
    body = `<!doctype html><title>Slow</title>${snippet({ flushInterval: 600_000 })}` +
      `<script src="${cfg.collector}/sdk/webvitals.min.js"></script>` +
      `<p>loading</p><button id="buy">Buy</button><a id="out" href="/plain">away</a>` +
      `<script>setTimeout(() => { const d = document.createElement("div"); d.id = "big"; ` +
      `d.textContent = "Our autumn catalogue ".repeat(200); document.body.prepend(d); }, ${delay});</script>`;
  } else if (url.pathname === "/plain") {
    body = "<!doctype html><title>Plain</title><p>no tracking here</p>";
  } else if (url.pathname === "/pixel") {
    const src = url.searchParams.get("src").replaceAll("&", "&amp;").replaceAll('"', "&quot;");
    body = `<!doctype html><title>Email</title><img id="px" src="${src}" width="1" height="1" alt="">`;
  } else {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(body);
}

/** Every request the page makes to the collector's ingest routes. */
function watch(page) {
  const seen = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.origin === new URL(cfg.collector).origin && (u.pathname === "/v1/batch" || u.pathname === "/p.gif"))
      seen.push({ path: u.pathname, type: r.resourceType(), at: Date.now() });
  });
  return seen;
}

const delivered = (event, n) => counted(cfg, event, n);

const loaded = (page) => page.waitForFunction(() => window.tracklane && !window.tracklane.q, null, { timeout: TIMEOUT });
/** Resolves once the SDK's stored queue is empty (everything acknowledged). */
const drained = (page) =>
  page.waitForFunction(() => JSON.parse(localStorage.getItem("tl_q") || "[]").length === 0, null, { timeout: TIMEOUT, polling: 50 });
const queued = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("tl_q") || "[]").length);
const tlKeys = (page) => page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("tl_")));

const scenarios = {
  /** Load, three SPA navigations (push, hash, back) and one no-op replaceState, five events. */
  async spa({ page, app }) {
    const seen = watch(page);
    await page.goto(app({}));
    await loaded(page);
    await page.evaluate(() => history.pushState({}, "", "/app/pricing"));
    await page.evaluate(() => { location.hash = "#plans"; });
    await page.waitForFunction(() => location.hash === "#plans");
    await page.evaluate(() => history.back());
    await page.waitForFunction(() => location.pathname === "/app/pricing" && !location.hash);
    // Frameworks store state with replaceState on the same URL: not a navigation.
    await page.evaluate(() => history.replaceState({ scroll: 1 }, ""));
    await page.evaluate(() => { for (let i = 0; i < 5; i++) tracklane.track("Clicked", { i }); });
    await page.evaluate(() => tracklane.flush());
    await drained(page);
    return { requests: seen.length };
  },

  /** An event tracked right before leaving the page arrives through sendBeacon. */
  async beacon({ page, app }) {
    // Playwright does not report beacons as page requests, so the page records them.
    await page.addInitScript(() => {
      const send = navigator.sendBeacon.bind(navigator);
      navigator.sendBeacon = (url, data) => {
        const ok = send(url, data);
        const log = JSON.parse(sessionStorage.getItem("beacons") || "[]");
        sessionStorage.setItem("beacons", JSON.stringify([...log, { url, ok }]));
        return ok;
      };
    });
    const seen = watch(page);
    await page.goto(app({ flushInterval: 600_000 }));
    await loaded(page);
    await page.evaluate(() => tracklane.track("Leaving"));
    await page.click("#out");
    await page.waitForURL("**/plain");
    const beacons = await page.evaluate(() => JSON.parse(sessionStorage.getItem("beacons") || "[]"));
    // Keep the browser open until the beacon has landed.
    await delivered("Leaving", 1);
    return { fetches: seen.length, beacons };
  },

  /** Events tracked offline are kept and sent once the browser is online and the page reloads. */
  async offline_reload({ page, context, app }) {
    await page.goto(app({}));
    await loaded(page);
    await page.evaluate(() => tracklane.flush());
    await drained(page);
    await context.setOffline(true);
    await page.evaluate(() => { for (let i = 0; i < 5; i++) tracklane.track("OfflineEvent", { i }); });
    await page.evaluate(() => tracklane.flush());
    const whileOffline = await queued(page);
    await context.setOffline(false);
    await page.reload();
    await loaded(page);
    await page.evaluate(() => tracklane.flush());
    await drained(page);
    return { queuedOffline: whileOffline };
  },

  /** Offline, the page is left (no beacon can work); the next load online replays the queue. */
  async offline_replay({ page, context, app }) {
    await page.goto(app({}));
    await loaded(page);
    await page.evaluate(() => tracklane.flush());
    await drained(page);
    await context.setOffline(true);
    await page.evaluate(() => { for (let i = 0; i < 3; i++) tracklane.track("Replayed", { i }); });
    await page.evaluate(() => tracklane.flush());
    const whileOffline = await queued(page);
    const seen = watch(page);
    await page.goto("about:blank");
    const sentWhileAway = seen.length;
    await context.setOffline(false);
    await page.goto(app({}));
    await loaded(page);
    await page.evaluate(() => tracklane.flush());
    await drained(page);
    return { queuedOffline: whileOffline, sentWhileAway };
  },

  /** The collector answers 503 with Retry-After for a while; the SDK waits and resends. */
  async retry_after({ page, app }) {
    const attempts = [];
    await page.route(`${cfg.collector}/v1/batch`, async (route) => {
      const refused = attempts.length < 3;
      attempts.push({ at: Date.now(), refused });
      if (!refused) return route.continue();
      return refuse(route);
    });
    await page.goto(app({ flushAt: 5 }));
    await loaded(page);
    await page.evaluate(() => { for (let i = 0; i < 10; i++) tracklane.track("Retried", { i }); });
    await drained(page);
    const gaps = attempts.slice(1).map((a, i) => a.at - attempts[i].at);
    return { attempts: attempts.length, refused: attempts.filter((a) => a.refused).length, gaps };
  },

  /** Consent pending, then denied: nothing leaves the browser and nothing is stored. */
  async consent_denied({ page, app }) {
    const seen = watch(page);
    await page.goto(app({ consent: "pending", flushAt: 1 }));
    await loaded(page);
    await page.evaluate(() => { for (let i = 0; i < 3; i++) tracklane.track("Held", { i }); });
    await page.evaluate(() => tracklane.consent("denied"));
    await page.evaluate(() => tracklane.track("AfterDenied"));
    await page.evaluate(() => tracklane.flush());
    const keys = await tlKeys(page);
    await page.click("#out");
    await page.waitForURL("**/plain");
    return { requests: seen.length, storageKeys: keys };
  },

  /** Consent pending, then granted: the held page view and events are sent. */
  async consent_granted({ page, app }) {
    const seen = watch(page);
    await page.goto(app({ consent: "pending", flushAt: 1 }));
    await loaded(page);
    await page.evaluate(() => { for (let i = 0; i < 3; i++) tracklane.track("Held", { i }); });
    const beforeConsent = seen.length;
    await page.evaluate(() => tracklane.consent("granted"));
    await page.evaluate(() => tracklane.flush());
    await drained(page);
    return { beforeConsent, requests: seen.length };
  },

  /** A 1x1 pixel in an <img> tag, as in an email; loaded twice with the same message id. */
  async pixel({ page, pages: base }) {
    const src = `${cfg.collector}/p.gif?` + new URLSearchParams({
      k: cfg.writeKey, e: "email_open", mid: "nl-2026-11-u1", uid: "u1",
    });
    const sizes = [];
    for (let i = 0; i < 2; i++) {
      await page.goto(`${base}/pixel?` + new URLSearchParams({ src }));
      await page.waitForFunction(() => document.getElementById("px").complete, null, { timeout: TIMEOUT });
      sizes.push(await page.evaluate(() => document.getElementById("px").naturalWidth));
    }
    return { naturalWidths: sizes };
  },

  /** A page whose main content comes late: its Web Vitals leave with the page, once. */
  async vitals({ page, pages: base }) {
    // Playwright does not show beacons, and a beacon's Blob is read asynchronously, too
    // late on a page being left: the page keeps each text/plain body as it is made.
    await page.addInitScript(() => {
      const Made = window.Blob;
      window.Blob = class extends Made {
        constructor(parts, options) {
          super(parts, options);
          if (options && options.type === "text/plain")
            sessionStorage.setItem("sent", (sessionStorage.getItem("sent") || "") + parts.join("") + "\n");
        }
      };
    });
    await page.goto(`${base}/vitals?delay=${cfg.delay}`);
    await loaded(page);
    await page.waitForSelector("#big", { timeout: TIMEOUT });
    // The add-on reads entries as the browser reports them; give the late paint a frame.
    await page.waitForTimeout(300);
    await page.click("#buy");
    await page.click("#out");
    await page.waitForURL("**/plain");
    const sent = await page.evaluate(() => sessionStorage.getItem("sent") || "");
    const vitals = sent.split("\n").filter(Boolean).flatMap((t) => JSON.parse(t).batch)
      .filter((m) => m.event === "web_vitals").map((m) => m.properties);
    // What the page sent, when the event does not arrive: tells a page that never sent
    // it from a send that was lost.
    await delivered("web_vitals", 1).catch((e) => {
      throw new Error(`${e.message}; the page's beacon bodies: ${sent || "none"}`);
    });
    return { vitals };
  },

  /** A page given by URL (docs/sdk.md's snippet on another static server); waits for delivery. */
  async visit({ page }) {
    const seen = watch(page);
    const ok = page.waitForResponse((r) => r.url().endsWith("/v1/batch") && r.status() === 200, { timeout: TIMEOUT });
    await page.goto(cfg.url);
    await ok;
    await drained(page);
    return { requests: seen.length };
  },
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}; one of: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
await main(({ page, context, base }) => {
  const app = (options) => `${base}/app?` + new URLSearchParams({ o: JSON.stringify(options) });
  return run({ page, context, app, pages: base });
}, pages);
