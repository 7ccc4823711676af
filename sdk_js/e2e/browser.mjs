// What every real-browser script here shares: Debian's chromium driven by playwright-core,
// a second origin to serve test pages from, and reading counts back from the collector.
import { chromium } from "playwright-core";
import { createServer } from "node:http";

export const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
// A desktop Chrome user agent: HeadlessChrome is (rightly) flagged as a bot.
export const USER_AGENT =
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
export const TIMEOUT = 20_000;

/** The script's arguments: `<scenario> '<json config>'`. */
export function args() {
  const [scenario, rawConfig] = process.argv.slice(2);
  return { scenario, cfg: JSON.parse(rawConfig || "{}") };
}

/** A page server on its own loopback port: a second origin, as a customer's site is. */
export function serve(handler) {
  const server = createServer(handler);
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

/** Polls the read API until `event` has been counted `n` times (the browser stays open). */
export async function delivered(cfg, event, n, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  const from = new Date(Date.now() - 3_600_000).toISOString();
  const to = new Date(Date.now() + 3_600_000).toISOString();
  for (;;) {
    const r = await fetch(`${cfg.collector}/v1/stats/minutes?` + new URLSearchParams({ event, from, to }), {
      headers: { Authorization: `Bearer ${cfg.readKey}` },
    });
    const rows = r.ok ? (await r.json()).rows : [];
    if (rows.reduce((a, row) => a + row.count, 0) >= n) return;
    if (Date.now() > deadline) throw new Error(`${event} was not counted ${n} times`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** The collector's own 503 answer, for a route that stands in for it during an outage. */
export async function refuse(route) {
  const origin = (await route.request().headerValue("origin")) || "*";
  return route.fulfill({
    status: 503,
    headers: {
      "Retry-After": "1",
      "Access-Control-Allow-Origin": origin,
      "Access-Control-Expose-Headers": "Retry-After",
      "Content-Type": "application/json",
    },
    body: JSON.stringify({ success: false, error: "broker_unavailable", message: "events were not accepted; retry later" }),
  });
}

/** Runs `run({page, context, base})` in a fresh chromium with pages served by `handler`;
 * prints its report as one JSON line. */
export async function main(run, handler) {
  const server = await serve(handler);
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: CHROMIUM_FLAGS });
  try {
    const context = await browser.newContext({ userAgent: USER_AGENT });
    context.setDefaultTimeout(TIMEOUT);
    const page = await context.newPage();
    if (process.env.E2E_DEBUG) {
      page.on("console", (m) => console.error(`console.${m.type()}: ${m.text()}`));
      page.on("response", (r) => console.error(`${r.status()} ${r.request().method()} ${r.url()}`));
      page.on("requestfailed", (r) => console.error(`failed ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
    }
    const report = await run({ page, context, base });
    await context.close();
    console.log(JSON.stringify(report));
  } finally {
    await browser.close();
    server.close();
  }
}
