// Test helpers: builds src/ in memory with esbuild (no dependence on dist/) and
// provides minimal fakes for window, localStorage, navigator, document, history, fetch.
import { build } from "esbuild";
import { mock } from "node:test";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const define = { __VERSION__: '"0.1.0-test"' };

let core;
/** The ESM core bundle, transpiled from src/core.ts. */
export async function loadCore() {
  if (!core) {
    const r = await build({ entryPoints: [join(root, "src/core.ts")], bundle: true, format: "esm", write: false, define, target: "es2019" });
    core = await import("data:text/javascript;base64," + Buffer.from(r.outputFiles[0].text).toString("base64"));
  }
  return core;
}

/** Source text of the minified IIFE build of src/<entry> (as build.mjs makes it). */
export async function iifeText(entry) {
  const r = await build({ entryPoints: [join(root, "src", entry)], bundle: true, format: "iife", minify: true, write: false, define, target: "es2019" });
  return r.outputFiles[0].text;
}

export function fakeStorage() {
  const m = new Map();
  const s = {
    calls: 0,
    getItem: (k) => (s.calls++, m.has(k) ? m.get(k) : null),
    setItem: (k, v) => (s.calls++, void m.set(k, String(v))),
    removeItem: (k) => (s.calls++, void m.delete(k)),
    map: m,
    json: (k) => JSON.parse(m.get(k) ?? "null"),
  };
  return s;
}

/** A response for the fake fetch. */
export const res = (status, headers = {}) => ({ status, headers: { get: (k) => headers[k] ?? null } });

/**
 * A fake window. `respond(req)` returns a response, a Promise of one, or throws
 * (network error). Every fetch is recorded in `env.requests` with its parsed body.
 */
export function makeEnv(opts = {}) {
  const listeners = {};
  const location = {};
  const go = (url) => {
    const u = new URL(url, location.href);
    Object.assign(location, { href: u.href, pathname: u.pathname, search: u.search, hash: u.hash, host: u.host });
  };
  go(opts.href || "https://shop.example/landing?utm_source=news&utm_medium=email&utm_campaign=spring&gclid=G1");
  const env = {
    requests: [],
    beacons: [],
    images: [],
    respond: opts.respond || (() => res(200)),
    localStorage: opts.localStorage || fakeStorage(),
    navigator: { userAgent: "TestAgent/1.0", language: "en-GB", ...(opts.navigator || {}) },
    document: { title: "Landing", referrer: "https://ref.example/", visibilityState: "visible" },
    location,
    go,
    history: {
      pushState(_s, _t, url) { if (url != null) go(url); },
      replaceState(_s, _t, url) { if (url != null) go(url); },
    },
    crypto: globalThis.crypto,
    Image: class { set src(v) { env.images.push(v); } },
    addEventListener(t, f) { (listeners[t] ||= []).push(f); },
    dispatch(t) { (listeners[t] || []).forEach((f) => f({ type: t })); },
  };
  if (opts.fetch !== false)
    env.fetch = async (url, init) => {
      env.requests.push({ url, init, body: JSON.parse(init.body) });
      return env.respond(env.requests[env.requests.length - 1]);
    };
  if (opts.beacon) env.navigator.sendBeacon = opts.beacon;
  return env;
}

/** Let pending promise callbacks run (setImmediate is not mocked). */
export async function settle(n = 5) {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

export const T0 = Date.UTC(2024, 0, 15, 12, 0, 0);
export function fakeTimers(t) {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: T0 });
  t.after(() => mock.timers.reset());
}

/** Advance fake time and let the resulting async work settle. */
export async function tick(ms) {
  mock.timers.tick(ms);
  await settle();
}

export const KEY = { writeKey: "wk_test", endpoint: "https://collect.example/" };
export const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
