import { test } from "node:test";
import assert from "node:assert/strict";
import { loadCore, makeEnv, fakeTimers, tick, settle, res, KEY, UUID7, T0 } from "./helpers.mjs";

const { createTracklane, uuid7 } = await loadCore();

function setup(t, init = {}, envOpts = {}) {
  fakeTimers(t);
  const env = makeEnv(envOpts);
  const tl = createTracklane(env);
  tl.init({ ...KEY, autoPage: false, ...init });
  return { env, tl };
}

test("uuid7: format, embedded timestamp, unique", (t) => {
  fakeTimers(t);
  const a = uuid7();
  assert.match(a, UUID7);
  assert.equal(parseInt(a.replace(/-/g, "").slice(0, 12), 16), T0);
  const ids = new Set(Array.from({ length: 1000 }, () => uuid7()));
  assert.equal(ids.size, 1000);
});

test("batch is sent when flushAt events are queued", async (t) => {
  const { env, tl } = setup(t, { flushAt: 3 });
  tl.track("a", { x: 1 });
  tl.track("b");
  await settle();
  assert.equal(env.requests.length, 0);
  assert.equal(env.localStorage.json("tl_q").length, 2);
  tl.track("c");
  await settle();
  assert.equal(env.requests.length, 1);
  const { url, init, body } = env.requests[0];
  assert.equal(url, "https://collect.example/v1/batch");
  assert.equal(init.method, "POST");
  assert.equal(init.headers["Content-Type"], "text/plain");
  assert.equal(init.keepalive, true);
  assert.equal(body.writeKey, "wk_test");
  assert.equal(body.sentAt, new Date(T0).toISOString());
  assert.deepEqual(body.batch.map((m) => m.event), ["a", "b", "c"]);
  const m = body.batch[0];
  assert.equal(m.type, "track");
  assert.deepEqual(m.properties, { x: 1 });
  assert.match(m.messageId, UUID7);
  assert.match(m.anonymousId, UUID7);
  assert.equal(m.timestamp, new Date(T0).toISOString());
  assert.deepEqual(m.context.library, { name: "tracklane-js", version: "0.1.0-test" });
  assert.deepEqual(m.context.campaign, { source: "news", medium: "email", name: "spring", gclid: "G1" });
  assert.equal(m.context.page.path, "/landing");
  assert.equal(m.context.page.referrer, "https://ref.example/");
  assert.equal(m.context.page.title, "Landing");
  assert.equal(m.context.userAgent, "TestAgent/1.0");
  assert.equal(m.context.locale, "en-GB");
  assert.match(m.context.sessionId, UUID7);
  assert.deepEqual(env.localStorage.json("tl_q"), [], "removed after 2xx");
});

test("batch is sent after flushInterval", async (t) => {
  const { env, tl } = setup(t, { flushInterval: 5000 });
  tl.track("a");
  await tick(4999);
  assert.equal(env.requests.length, 0);
  await tick(1);
  assert.equal(env.requests.length, 1);
  tl.track("b");
  await tick(5000);
  assert.equal(env.requests.length, 2);
});

test("flush() sends now and resolves after the response", async (t) => {
  const { env, tl } = setup(t);
  tl.track("a");
  await tl.flush();
  assert.equal(env.requests.length, 1);
  assert.deepEqual(env.localStorage.json("tl_q"), []);
});

test("retry: Retry-After honoured, then full-jitter exponential backoff, same messageId", async (t) => {
  const statuses = [res(503, { "Retry-After": "7" }), res(500), res(429), null, res(502), res(200)];
  const { env, tl } = setup(t, {}, {
    respond: () => {
      const r = statuses.shift();
      if (!r) throw new TypeError("Failed to fetch");
      return r;
    },
  });
  t.mock.method(Math, "random", () => 0.5);
  tl.track("a");
  await tl.flush();
  assert.equal(env.requests.length, 1);
  const times = [];
  // expected delays: Retry-After 7 s, then 0.5 * 1000 * 2^n for n = 1, 2, 3, 4
  for (const d of [7000, 1000, 2000, 4000, 8000]) {
    await tick(d - 1);
    const before = env.requests.length;
    await tick(1);
    assert.equal(env.requests.length, before + 1, `retry after ${d} ms`);
    times.push(d);
  }
  assert.equal(env.requests.length, 6);
  const ids = new Set(env.requests.map((r) => r.body.batch[0].messageId));
  assert.equal(ids.size, 1, "one messageId across all retries");
  assert.deepEqual(env.localStorage.json("tl_q"), []);
  // success resets the backoff
  statuses.push(res(500), res(200));
  tl.track("b");
  await tl.flush();
  await tick(499);
  assert.equal(env.requests.length, 7);
  await tick(1);
  assert.equal(env.requests.length, 8);
});

test("backoff is capped at 60 s", async (t) => {
  const { env, tl } = setup(t, {}, { respond: () => res(500) });
  t.mock.method(Math, "random", () => 0.999999);
  tl.track("a");
  await tl.flush();
  for (let i = 0; i < 8; i++) await tick(60000);
  const n = env.requests.length;
  await tick(60000);
  assert.equal(env.requests.length, n + 1, "no wait longer than 60 s");
});

test("4xx other than 408/429 drops the batch without retry", async (t) => {
  const { env, tl } = setup(t, {}, { respond: () => res(400) });
  tl.track("a");
  await tl.flush();
  await tick(120000);
  assert.equal(env.requests.length, 1);
  assert.deepEqual(env.localStorage.json("tl_q"), []);
});

test("bounded queue evicts the oldest and counts drops", async (t) => {
  const { env, tl } = setup(t, { maxQueue: 5, flushAt: 100, flushInterval: 1e9 });
  for (let i = 0; i < 8; i++) tl.track("e" + i);
  const q = env.localStorage.json("tl_q");
  assert.deepEqual(q.map((m) => m.event), ["e3", "e4", "e5", "e6", "e7"]);
  assert.equal(tl.dropped(), 3);
  assert.equal(env.localStorage.json("tl_drops"), 3);
});

test("session rolls after 30 min idle and after 24 h", async (t) => {
  const { env, tl } = setup(t, { flushAt: 1 });
  const sid = () => env.requests.at(-1).body.batch[0].context.sessionId;
  tl.track("a");
  await settle();
  const s1 = sid();
  assert.deepEqual(Object.keys(env.localStorage.json("tl_sid")).sort(), ["id", "last", "start"]);
  await tick(29 * 60e3);
  tl.track("b");
  await settle();
  assert.equal(sid(), s1, "29 min idle: same session");
  await tick(30 * 60e3 + 1);
  tl.track("c");
  await settle();
  const s2 = sid();
  assert.notEqual(s2, s1, "30 min idle: new session");
  for (let i = 0; i < 51; i++) {
    await tick(29 * 60e3);
    tl.track("x");
  }
  await settle();
  assert.notEqual(sid(), s2, "over 24 h: new session despite activity");
});

test("identity: anonymousId persists across loads; identify and reset", async (t) => {
  const { env, tl } = setup(t, { flushAt: 1 });
  const aid = env.localStorage.json("tl_aid");
  assert.match(aid, UUID7);
  const tl2 = createTracklane(env);
  tl2.init({ ...KEY, autoPage: false, flushAt: 1 });
  assert.equal(env.localStorage.json("tl_aid"), aid, "same anonymousId on the next page load");
  tl.identify("user-1", { plan: "pro" });
  await settle();
  const m = env.requests.at(-1).body.batch[0];
  assert.equal(m.type, "identify");
  assert.equal(m.userId, "user-1");
  assert.deepEqual(m.traits, { plan: "pro" });
  assert.equal(m.anonymousId, aid);
  assert.equal(env.localStorage.json("tl_uid"), "user-1");
  tl.track("after");
  await settle();
  assert.equal(env.requests.at(-1).body.batch[0].userId, "user-1");
  const sidBefore = env.requests.at(-1).body.batch[0].context.sessionId;
  tl.reset();
  assert.equal(env.localStorage.json("tl_uid"), null);
  tl.track("anon");
  await settle();
  const a = env.requests.at(-1).body.batch[0];
  assert.equal(a.userId, undefined);
  assert.notEqual(a.anonymousId, aid);
  assert.equal(env.localStorage.json("tl_aid"), a.anonymousId);
  assert.notEqual(a.context.sessionId, sidBefore);
});

test("auto page views: init, pushState, hash/popstate; no duplicates", async (t) => {
  const { env, tl } = setup(t, { autoPage: true, flushAt: 1 });
  await settle();
  const pages = () => env.requests.map((r) => r.body.batch[0]).filter((m) => m.type == "page");
  assert.equal(pages().length, 1);
  assert.equal(pages()[0].properties.url, env.location.href);
  const first = env.location.href;
  env.history.pushState({}, "", "/products?id=2");
  await settle();
  assert.equal(pages().length, 2);
  assert.equal(pages()[1].properties.path, "/products");
  assert.equal(pages()[1].context.page.referrer, first, "SPA referrer is the previous page");
  env.history.replaceState({}, "", "/products?id=2");
  env.history.pushState({}, "", "/products?id=2");
  env.dispatch("popstate");
  await settle();
  assert.equal(pages().length, 2, "same URL: no page view");
  env.go("#reviews");
  env.dispatch("hashchange");
  env.dispatch("popstate");
  await settle();
  assert.equal(pages().length, 3, "one page view for hashchange + popstate");
  env.history.replaceState({}, "", "/other");
  await settle();
  assert.equal(pages().length, 4);
  tl.page({ name: "Manual" });
  await settle();
  assert.equal(pages()[4].name, "Manual");
});

test("non-serializable properties are rejected without breaking delivery", async (t) => {
  const { env, tl } = setup(t);
  const circ = {};
  circ.self = circ;
  tl.track("bad", circ);
  const props = { n: 1 };
  tl.track("good", props);
  props.n = 2; // mutation after track() does not change the event
  await tl.flush();
  assert.deepEqual(env.requests[0].body.batch.map((m) => [m.event, m.properties.n]), [["good", 1]]);
});
