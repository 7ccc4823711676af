// The loader snippet, the IIFE global build and the outbound module, run in a vm context.
import { test } from "node:test";
import assert from "node:assert/strict";
import vm from "node:vm";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { iifeText, makeEnv, root, settle } from "./helpers.mjs";

const html = readFileSync(join(root, "snippet.html"), "utf8");
const snippetJs = html.match(/<script>([\s\S]*?)<\/script>/)[1].replaceAll("https://COLLECTOR", "https://collect.example");

function browserContext() {
  const env = makeEnv({ href: "https://shop.example/home" });
  const scripts = [];
  const listeners = {};
  Object.assign(env.document, {
    createElement: (tag) => ({ tag }),
    head: { appendChild: (s) => scripts.push(s) },
    addEventListener: (t, f) => (listeners[t] ||= []).push(f),
    removeEventListener: () => {},
    click: (target) => (listeners.click || []).forEach((f) => f({ type: "click", target })),
  });
  Object.assign(env, { window: env, setTimeout, clearTimeout, URLSearchParams, TextEncoder, Blob, console });
  return { env, scripts, ctx: vm.createContext(env) };
}

test("snippet stub queues calls, never throws, and the SDK replays them", async () => {
  const { env, scripts, ctx } = browserContext();
  vm.runInContext(snippetJs, ctx);
  assert.equal(scripts.length, 1);
  assert.equal(scripts[0].src, "https://collect.example/sdk/tracklane.min.js");
  assert.equal(scripts[0].async, true);
  const stub = env.tracklane;
  vm.runInContext('tracklane.track("Clicked", {a: 1}); tracklane.identify("u1"); tracklane.flush(); tracklane.consent("granted"); tracklane.dropped()', ctx);
  assert.deepEqual(JSON.parse(JSON.stringify(stub.q.map((c) => c[0]))), ["init", "track", "identify", "flush", "consent", "dropped"]);
  // script blocked: the stub keeps working; now it loads
  vm.runInContext(await iifeText("global.ts"), ctx);
  assert.notEqual(env.tracklane, stub);
  await env.tracklane.flush();
  await settle();
  const batch = env.requests.flatMap((r) => r.body.batch);
  assert.deepEqual(batch.map((m) => m.type + ":" + (m.event || "")), ["page:", "track:Clicked", "identify:"]);
  assert.equal(env.requests[0].url, "https://collect.example/v1/batch");
  assert.equal(env.requests[0].body.writeKey, "WRITE_KEY");
  assert.equal(batch[2].userId, "u1");
});

test("IIFE without a stub exposes window.tracklane with the full API", async () => {
  const { env, ctx } = browserContext();
  vm.runInContext(await iifeText("global.ts"), ctx);
  for (const k of ["init", "track", "page", "identify", "reset", "flush", "consent", "dropped"])
    assert.equal(typeof env.tracklane[k], "function", k);
});

test("outbound module tracks clicks on links to other hosts only", async () => {
  const { env, ctx } = browserContext();
  const calls = [];
  env.tracklane = { track: (e, p) => calls.push([e, p]) };
  vm.runInContext(await iifeText("outbound.global.ts"), ctx);
  const link = (href, text) => {
    const u = new URL(href);
    const a = { href: u.href, host: u.host, protocol: u.protocol, textContent: text };
    return { closest: () => a };
  };
  env.document.click(link("https://other.example/x", " Partner "));
  env.document.click(link("https://shop.example/cart", "Cart"));
  env.document.click(link("mailto:a@b.c", "Mail"));
  env.document.click({ closest: () => null });
  assert.deepEqual(JSON.parse(JSON.stringify(calls)), [["Outbound Link Clicked", { href: "https://other.example/x", text: "Partner", host: "other.example" }]]);
});

test("loading the SDK twice keeps the first instance", async () => {
  const { env, ctx } = browserContext();
  const code = await iifeText("global.ts");
  vm.runInContext(code, ctx);
  const first = env.tracklane;
  vm.runInContext(code, ctx);
  assert.equal(env.tracklane, first);
});

test("web vitals add-on sends one web_vitals event when the page is first hidden", async () => {
  const { env, ctx } = browserContext();
  const calls = [];
  env.tracklane = { track: (e, p) => calls.push([e, p]) };
  const observers = {};
  env.PerformanceObserver = class {
    constructor(cb) { this.cb = cb; }
    observe({ type }) { observers[type] = this; }
    takeRecords() { return this.pending || []; }
    disconnect() {}
  };
  const feed = (type, entries) => observers[type].cb({ getEntries: () => entries });
  const winListeners = {};
  env.addEventListener = (t, f) => (winListeners[t] ||= []).push(f);
  const docListeners = {};
  env.document.addEventListener = (t, f) => (docListeners[t] ||= []).push(f);
  vm.runInContext(await iifeText("webvitals.global.ts"), ctx);
  feed("navigation", [{ responseStart: 212.4 }]);
  feed("paint", [{ name: "first-paint", startTime: 300 }, { name: "first-contentful-paint", startTime: 412.6 }]);
  feed("largest-contentful-paint", [{ startTime: 900 }, { startTime: 3210.2 }]);
  // Two session windows: 0.05 + 0.1 (under 1 s apart), then 0.2 alone 2 s later.
  feed("layout-shift", [{ startTime: 1000, value: 0.05 }, { startTime: 1500, value: 0.1 },
    { startTime: 3600, value: 0.2 }, { startTime: 3700, value: 0.5, hadRecentInput: true }]);
  feed("event", [{ interactionId: 0, duration: 500 }, { interactionId: 7, duration: 120 }, { interactionId: 8, duration: 88 }]);
  observers["layout-shift"].pending = [{ startTime: 3900, value: 0.03 }];
  env.document.visibilityState = "visible";
  docListeners.visibilitychange.forEach((f) => f({ type: "visibilitychange" }));
  assert.equal(calls.length, 0);
  env.document.visibilityState = "hidden";
  docListeners.visibilitychange.forEach((f) => f({ type: "visibilitychange" }));
  winListeners.pagehide.forEach((f) => f({ type: "pagehide" }));
  assert.deepEqual(JSON.parse(JSON.stringify(calls)), [["web_vitals",
    { path: "/home", ttfb: 212, fcp: 413, lcp: 3210, cls: 0.23, inp: 120 }]]);
});
