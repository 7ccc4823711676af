import { test } from "node:test";
import assert from "node:assert/strict";
import { loadCore, makeEnv, fakeTimers, tick, settle, KEY } from "./helpers.mjs";

const { createTracklane } = await loadCore();
const tlKeys = (env) => [...env.localStorage.map.keys()].filter((k) => k.startsWith("tl_"));

test("consent pending: held in memory, sent on consent('granted')", async (t) => {
  fakeTimers(t);
  const env = makeEnv();
  const tl = createTracklane(env);
  tl.init({ ...KEY, consent: "pending" });
  tl.track("held", { n: 1 });
  await tl.flush();
  await tick(60000);
  assert.equal(env.requests.length, 0, "nothing sent while pending");
  assert.deepEqual(tlKeys(env), [], "nothing stored while pending");
  tl.consent("granted");
  await tick(5000);
  assert.equal(env.requests.length, 1);
  const batch = env.requests[0].body.batch;
  assert.deepEqual(batch.map((m) => m.type + ":" + (m.event || "")), ["page:", "track:held"]);
  const aid = env.localStorage.json("tl_aid");
  assert.ok(aid);
  assert.ok(batch.every((m) => m.anonymousId === aid), "held events carry the persisted anonymousId");
});

test("consent pending then denied: dropped and storage cleared", async (t) => {
  fakeTimers(t);
  const env = makeEnv();
  env.localStorage.setItem("tl_q", JSON.stringify([{ type: "track", event: "old", messageId: "m" }]));
  env.localStorage.setItem("tl_aid", '"old-aid"');
  const tl = createTracklane(env);
  tl.init({ ...KEY, consent: "pending" });
  tl.track("x");
  tl.consent("denied");
  tl.track("y");
  tl.identify("u");
  await tl.flush();
  await tick(60000);
  assert.equal(env.requests.length, 0);
  assert.deepEqual(tlKeys(env), []);
});

test("granted then denied: stops sending and clears storage", async (t) => {
  fakeTimers(t);
  const env = makeEnv();
  const tl = createTracklane(env);
  tl.init({ ...KEY, autoPage: false, flushAt: 2 });
  tl.track("a");
  assert.ok(tlKeys(env).includes("tl_q"));
  tl.consent("denied");
  assert.deepEqual(tlKeys(env), []);
  tl.track("b");
  tl.track("c");
  await tick(60000);
  assert.equal(env.requests.length, 0);
  tl.consent("granted");
  tl.track("d");
  await tl.flush();
  assert.deepEqual(env.requests[0].body.batch.map((m) => m.event), ["d"]);
});

test("respectDNT: DNT or GPC behaves as denied", async (t) => {
  fakeTimers(t);
  for (const navigator of [{ doNotTrack: "1" }, { globalPrivacyControl: true }]) {
    const env = makeEnv({ navigator });
    const tl = createTracklane(env);
    tl.init({ ...KEY, respectDNT: true });
    tl.track("a");
    tl.consent("granted");
    tl.track("b");
    await tl.flush();
    await tick(10000);
    assert.equal(env.requests.length, 0);
    assert.deepEqual(tlKeys(env), []);
  }
  const env = makeEnv({ navigator: { doNotTrack: "1" } });
  const tl = createTracklane(env);
  tl.init({ ...KEY, autoPage: false });
  tl.track("a");
  await tl.flush();
  assert.equal(env.requests.length, 1, "DNT ignored without respectDNT");
});

test("cookieless: no storage access, per-load anonymousId, events still sent", async (t) => {
  fakeTimers(t);
  const env = makeEnv();
  const tl = createTracklane(env);
  tl.init({ ...KEY, consent: "cookieless" });
  tl.track("a");
  tl.identify("u1");
  await tl.flush();
  assert.equal(env.localStorage.calls, 0, "localStorage never touched");
  const batch = env.requests[0].body.batch;
  assert.equal(batch.length, 3);
  assert.equal(new Set(batch.map((m) => m.anonymousId)).size, 1);
  const tl2 = createTracklane(env);
  tl2.init({ ...KEY, consent: "cookieless" });
  await tl2.flush();
  assert.notEqual(env.requests[1].body.batch[0].anonymousId, batch[0].anonymousId);
  assert.equal(env.localStorage.calls, 0);
});

test("calls before init are held and sent after init", async (t) => {
  fakeTimers(t);
  const env = makeEnv();
  const tl = createTracklane(env);
  tl.track("early");
  tl.init({ ...KEY, autoPage: false });
  await tl.flush();
  const m = env.requests[0].body.batch[0];
  assert.equal(m.event, "early");
  assert.equal(m.anonymousId, env.localStorage.json("tl_aid"));
  await settle();
});
