import { test } from "node:test";
import assert from "node:assert/strict";
import { loadCore, makeEnv, fakeTimers, tick, settle, res, KEY, T0 } from "./helpers.mjs";

const { createTracklane } = await loadCore();

/** A sendBeacon that, like browsers, refuses bodies over 64 KB. */
function beaconFake(env) {
  return (url, blob) => {
    env.beacons.push({ url, blob, size: blob.size });
    return blob.size <= 65536;
  };
}

test("pagehide beacon splits batches refused over 64 KB; oversize single message goes by fetch", async (t) => {
  fakeTimers(t);
  const env = makeEnv({ respond: () => new Promise(() => {}) }); // fetches never answer
  env.navigator.sendBeacon = beaconFake(env);
  const tl = createTracklane(env);
  tl.init({ ...KEY, autoPage: false, flushAt: 1000, flushInterval: 1e9 });
  const big = "x".repeat(10000);
  for (let i = 0; i < 12; i++) tl.track("e" + i, { big });
  tl.track("huge", { big: "y".repeat(70000) });
  env.document.visibilityState = "hidden";
  env.dispatch("visibilitychange");
  env.dispatch("pagehide"); // second trigger: nothing left to send twice
  const accepted = env.beacons.filter((b) => b.size <= 65536);
  assert.ok(env.beacons.length > accepted.length, "some beacons were refused");
  const sent = [];
  for (const b of accepted) {
    assert.equal(b.url, "https://collect.example/v1/batch");
    assert.equal(b.blob.type, "text/plain");
    const body = JSON.parse(await b.blob.text());
    assert.equal(body.writeKey, "wk_test");
    sent.push(...body.batch.map((m) => m.event));
  }
  assert.deepEqual(sent, Array.from({ length: 12 }, (_, i) => "e" + i), "each event beaconed exactly once, in order");
  assert.equal(env.requests.length, 1, "the refused single message fell back to fetch");
  assert.equal(env.requests[0].body.batch[0].event, "huge");
  assert.equal(env.requests[0].init.keepalive, false, "over 60000 bytes: no keepalive");
  assert.deepEqual(env.localStorage.json("tl_q").map((m) => m.event), ["huge"], "kept until a 2xx");
  await settle();
});

test("unsent events persist and are replayed with the same messageId on the next load", async (t) => {
  fakeTimers(t);
  const env = makeEnv({ respond: () => { throw new TypeError("offline"); } });
  const a = createTracklane(env);
  a.init({ ...KEY, autoPage: false });
  a.track("a");
  a.track("b");
  await a.flush();
  const ids = env.requests[0].body.batch.map((m) => m.messageId);
  assert.equal(env.localStorage.json("tl_q").length, 2);
  // next page load, now online; the old tab's lock is released or expired
  env.respond = () => res(200);
  const b = createTracklane(env);
  b.init({ ...KEY, autoPage: false });
  await tick(5000);
  const last = env.requests.at(-1).body.batch;
  assert.deepEqual(last.map((m) => m.messageId), ids);
  assert.deepEqual(env.localStorage.json("tl_q"), []);
});

test("cross-tab lock: a live lock held by another tab defers sending until it expires", async (t) => {
  fakeTimers(t);
  const env = makeEnv();
  env.localStorage.setItem("tl_lock", JSON.stringify({ id: "other-tab", exp: T0 + 12000 }));
  const tl = createTracklane(env);
  tl.init({ ...KEY, autoPage: false });
  tl.track("a");
  await tl.flush();
  assert.equal(env.requests.length, 0, "other tab holds the lock");
  await tick(5000);
  await tick(5000);
  assert.equal(env.requests.length, 0);
  await tick(5000); // lock expired at +12 s: take over
  assert.equal(env.requests.length, 1);
  assert.equal(env.localStorage.json("tl_lock"), null, "released after flushing");
});

test("lock is held (and refreshed) while a flush is in flight", async (t) => {
  fakeTimers(t);
  let release;
  const env = makeEnv({ respond: () => new Promise((r) => (release = r)) });
  const tl = createTracklane(env);
  tl.init({ ...KEY, autoPage: false });
  tl.track("a");
  const p = tl.flush();
  await settle();
  const lock = env.localStorage.json("tl_lock");
  assert.ok(lock.id && lock.exp > T0);
  release(res(200));
  await p;
  assert.equal(env.localStorage.json("tl_lock"), null);
});

test("pixel fallback when neither fetch nor sendBeacon exist", async (t) => {
  fakeTimers(t);
  const env = makeEnv({ fetch: false });
  const tl = createTracklane(env);
  tl.init({ ...KEY });
  tl.track("Signup", { plan: "pro" });
  await tl.flush();
  assert.equal(env.images.length, 2);
  const [pg, tr] = env.images.map((s) => new URL(s));
  assert.equal(tr.origin + tr.pathname, "https://collect.example/p.gif");
  assert.equal(tr.searchParams.get("k"), "wk_test");
  assert.equal(tr.searchParams.get("e"), "Signup");
  assert.equal(pg.searchParams.get("e"), "page_view");
  assert.equal(tr.searchParams.get("url"), env.location.href);
  assert.equal(tr.searchParams.get("aid"), env.localStorage.json("tl_aid"));
  assert.ok(tr.searchParams.get("mid"));
  assert.equal(tr.searchParams.get("sid"), env.localStorage.json("tl_sid").id);
  assert.deepEqual(JSON.parse(tr.searchParams.get("p")), { plan: "pro" });
  assert.equal(tr.searchParams.get("ts"), new Date(T0).toISOString());
  assert.deepEqual(env.localStorage.json("tl_q"), []);
});

test("hide flushes once per hide and again after becoming visible", async (t) => {
  fakeTimers(t);
  const env = makeEnv();
  env.navigator.sendBeacon = (url, blob) => (env.beacons.push(blob), true);
  const tl = createTracklane(env);
  tl.init({ ...KEY, autoPage: false, flushInterval: 1e9 });
  tl.track("a");
  env.document.visibilityState = "hidden";
  env.dispatch("visibilitychange");
  env.dispatch("pagehide");
  assert.equal(env.beacons.length, 1);
  assert.deepEqual(env.localStorage.json("tl_q"), [], "accepted beacon removes the events");
  env.document.visibilityState = "visible";
  env.dispatch("visibilitychange");
  tl.track("b");
  env.document.visibilityState = "hidden";
  env.dispatch("visibilitychange");
  assert.equal(env.beacons.length, 2);
  assert.equal(JSON.parse(await env.beacons[1].text()).batch[0].event, "b");
});

test("offline: hiding keeps the queue for the next load; going online sends at once", async (t) => {
  fakeTimers(t);
  let up = false;
  const env = makeEnv({ respond: () => { if (!up) throw new TypeError("Failed to fetch"); return res(200); } });
  env.navigator.sendBeacon = (url, blob) => (env.beacons.push(blob), true);
  env.navigator.onLine = false;
  const tl = createTracklane(env);
  tl.init({ ...KEY, autoPage: false, flushInterval: 1e9 });
  tl.track("a");
  tl.track("b");
  await tl.flush();
  assert.equal(env.requests.length, 1, "tried once, failed, backing off");
  env.document.visibilityState = "hidden";
  env.dispatch("visibilitychange");
  env.dispatch("pagehide");
  assert.equal(env.beacons.length, 0, "no beacon while offline: it would be lost");
  assert.equal(env.localStorage.json("tl_q").length, 2, "queue kept for the next load");
  up = true;
  env.navigator.onLine = true;
  env.dispatch("online");
  await settle();
  assert.equal(env.requests.length, 2, "sent on 'online' without waiting out the backoff");
  assert.deepEqual(env.requests[1].body.batch.map((m) => m.event), ["a", "b"]);
  assert.deepEqual(env.requests[1].body.batch.map((m) => m.messageId), env.requests[0].body.batch.map((m) => m.messageId));
  assert.deepEqual(env.localStorage.json("tl_q"), []);
});
