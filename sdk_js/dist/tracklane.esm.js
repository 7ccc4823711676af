// src/core.ts
var VERSION = true ? "0.1.0" : "0.0.0";
var MIN = 6e4;
var KEYS = ["q", "aid", "sid", "uid", "drops", "lock"];
var uuid7 = (c = crypto) => {
  const b = c.getRandomValues(new Uint8Array(16));
  let t = Date.now();
  for (let i = 6; i--; t = Math.floor(t / 256)) b[i] = t % 256;
  b[6] = b[6] & 15 | 112;
  b[8] = b[8] & 63 | 128;
  return Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("").replace(/(.{8})(.{4})(.{4})(.{4})/, "$1-$2-$3-$4-");
};
function createTracklane(w = globalThis) {
  let o = {};
  let cons = "pending";
  let store = 0;
  let mem = {};
  let held = [];
  let aid, uid, S, last, ref, pc;
  let timer, retry, busy = 0, n = 0, started = 0, gone = 0;
  const nav = w.navigator || {};
  const id = () => uuid7(w.crypto || crypto);
  const now = () => Date.now();
  const log = (...a) => o.debug && console.log("[tracklane]", ...a);
  const get = (k) => {
    if (store)
      try {
        return JSON.parse(w.localStorage.getItem("tl_" + k));
      } catch (e) {
      }
    return mem[k];
  };
  const set = (k, v) => {
    mem[k] = v;
    if (store)
      try {
        v == null ? w.localStorage.removeItem("tl_" + k) : w.localStorage.setItem("tl_" + k, JSON.stringify(v));
      } catch (e) {
      }
  };
  const sid = () => {
    const t = now();
    let s = get("sid") || S;
    if (!s || t - s.last > 18e5 || t - s.start > 864e5) s = { id: id(), start: t };
    s.last = t;
    set("sid", S = s);
    return s.id;
  };
  const pageCtx = () => {
    const l = w.location || {}, d = w.document || {};
    return { path: l.pathname, url: l.href, title: d.title, referrer: ref, search: l.search };
  };
  const msg = (type, f) => {
    if (cons == "denied") return;
    const l = w.location || {}, p = new URLSearchParams(l.search || ""), c = {};
    "source medium campaign term content gclid fbclid msclkid".split(" ").forEach((k, i) => {
      const v = p.get(i < 5 ? "utm_" + k : k);
      if (v) c[k == "campaign" ? "name" : k] = v;
    });
    let m = {
      type,
      ...f,
      userId: uid,
      anonymousId: aid,
      messageId: id(),
      timestamp: (/* @__PURE__ */ new Date()).toISOString(),
      context: {
        library: { name: "tracklane-js", version: VERSION },
        page: pageCtx(),
        userAgent: nav.userAgent,
        locale: nav.language,
        campaign: c,
        sessionId: sid()
      }
    };
    try {
      m = JSON.parse(JSON.stringify(m));
    } catch (e) {
      return log("not serializable", e);
    }
    cons == "pending" ? held.push(m) > (o.maxQueue || 1e3) && held.shift() : add(m);
  };
  const add = (m) => {
    const q = get("q") || [];
    q.push(m);
    const x = q.length - o.maxQueue;
    if (x > 0) {
      q.splice(0, x);
      set("drops", (get("drops") || 0) + x);
      log("queue full, dropped", x);
    }
    set("q", q);
    q.length >= o.flushAt ? flush() : sched();
  };
  const sched = () => timer || (timer = setTimeout(flush, o.flushInterval));
  const drop = (b) => {
    const ids = b.map((m) => m.messageId);
    set("q", (get("q") || []).filter((m) => ids.indexOf(m.messageId) < 0));
  };
  const url = () => o.endpoint + "/v1/batch";
  const body = (b) => JSON.stringify({ batch: b, sentAt: (/* @__PURE__ */ new Date()).toISOString(), writeKey: o.writeKey });
  const post = async (b) => {
    const s = body(b);
    if (!w.fetch) {
      if (nav.sendBeacon) return [nav.sendBeacon(url(), new Blob([s], { type: "text/plain" })) ? 200 : 0];
      b.forEach((m) => {
        const g = m.context.page || {};
        if (m.type != "identify")
          new w.Image().src = o.endpoint + "/p.gif?" + new URLSearchParams({
            k: o.writeKey,
            e: m.event || "page_view",
            mid: m.messageId,
            aid: m.anonymousId,
            uid: m.userId || "",
            sid: m.context.sessionId,
            ts: m.timestamp,
            url: g.url || "",
            ref: g.referrer || "",
            p: JSON.stringify(m.properties || {})
          });
      });
      return [200];
    }
    try {
      const r = await w.fetch(url(), {
        method: "POST",
        body: s,
        headers: { "Content-Type": "text/plain" },
        keepalive: new TextEncoder().encode(s).length <= MIN
      });
      return [r.status, parseFloat(r.headers && r.headers.get("Retry-After"))];
    } catch (e) {
      return [0];
    }
  };
  const me = id();
  const lock = () => {
    const l = get("lock"), t = now();
    if (l && l.id != me && l.exp > t) return 0;
    set("lock", { id: me, exp: t + 1e4 });
    return 1;
  };
  const send = async () => {
    for (; ; ) {
      const q = get("q") || [];
      if (!q.length || retry) break;
      if (!lock()) {
        sched();
        break;
      }
      let i = 0;
      for (let z = 0; i < q.length && i < 100; i++) if ((z += JSON.stringify(q[i]).length) > 5e4 && i) break;
      const b = q.slice(0, i);
      const [st, ra] = await post(b);
      if (st > 199 && st < 300) {
        drop(b);
        n = 0;
      } else if (st > 399 && st < 500 && st != 408 && st != 429) {
        log("batch rejected", st);
        drop(b);
      } else {
        const d = ra >= 0 ? ra * 1e3 : Math.random() * Math.min(MIN, 1e3 * 2 ** n);
        n++;
        log("retry in", d, "ms after", st);
        retry = setTimeout(() => {
          retry = 0;
          flush();
        }, d);
        break;
      }
    }
    const l = get("lock");
    l && l.id == me && set("lock", null);
  };
  const flush = () => {
    clearTimeout(timer);
    timer = 0;
    const f = () => void (busy = 0);
    return busy ? busy.then(flush) : busy = send().then(f, f);
  };
  const beacon = (b) => {
    if (nav.sendBeacon(url(), new Blob([body(b)], { type: "text/plain" }))) drop(b);
    else if (b.length > 1) {
      const h = b.length >> 1;
      beacon(b.slice(0, h));
      beacon(b.slice(h));
    } else
      post(b).then(([st]) => {
        st > 199 && st < 300 && drop(b);
      });
  };
  const bye = (e) => {
    if (e.type == "pagehide" || (w.document || {}).visibilityState == "hidden") {
      const q = get("q") || [];
      gone || !q.length || nav.onLine === false || (nav.sendBeacon ? beacon(q) : flush());
      gone = 1;
    } else gone = 0;
  };
  const setConsent = (c) => {
    if (o.respectDNT && (nav.doNotTrack == "1" || nav.globalPrivacyControl)) c = "denied";
    cons = c;
    store = 0;
    if (c == "denied") {
      held = [];
      try {
        KEYS.forEach((k) => w.localStorage.removeItem("tl_" + k));
      } catch (e) {
      }
      mem = {};
      clearTimeout(timer);
      clearTimeout(retry);
      timer = retry = 0;
      return;
    }
    if (c == "granted")
      try {
        w.localStorage.setItem("tl_t", "1");
        w.localStorage.removeItem("tl_t");
        store = 1;
      } catch (e) {
      }
    if (c != "pending") {
      set("aid", aid = get("aid") || aid || id());
      set("uid", uid = uid || get("uid"));
      const h = held;
      held = [];
      h.forEach((m) => add({ ...m, anonymousId: aid, userId: m.userId || uid }));
      (get("q") || []).length && sched();
    }
  };
  const page = (p) => {
    const l = w.location || {};
    if (last) ref = last;
    last = l.href;
    msg("page", { name: p && p.name, properties: { ...pageCtx(), ...p } });
  };
  const route = () => (w.location || {}).href != last && page();
  return {
    init(opts) {
      if (started) return;
      if (!opts || !opts.writeKey || !opts.endpoint) return console.warn("[tracklane] init: writeKey and endpoint required");
      started = 1;
      o = { flushAt: 20, flushInterval: 5e3, maxQueue: 1e3, autoPage: true, ...opts };
      o.endpoint = o.endpoint.replace(/\/+$/, "");
      aid = aid || id();
      ref = (w.document || {}).referrer;
      setConsent(pc || o.consent || "granted");
      const on = (t, f) => w.addEventListener && w.addEventListener(t, f);
      on("pagehide", bye);
      on("visibilitychange", bye);
      on("online", () => {
        clearTimeout(retry);
        retry = 0;
        flush();
      });
      if (o.autoPage) {
        const h = w.history;
        h && ["pushState", "replaceState"].forEach((k) => {
          const f = h[k];
          h[k] = function() {
            const r = f.apply(this, arguments);
            route();
            return r;
          };
        });
        on("popstate", route);
        on("hashchange", route);
        page();
      }
    },
    track: (event, properties) => msg("track", { event, properties: properties || {} }),
    page,
    identify(userId, traits) {
      if (cons == "denied") return;
      set("uid", uid = userId);
      msg("identify", { traits: traits || {} });
    },
    reset() {
      uid = S = void 0;
      set("uid", null);
      set("sid", null);
      set("aid", aid = id());
    },
    flush,
    consent: (c) => started ? setConsent(c) : pc = c,
    dropped: () => get("drops") || 0
  };
}
export {
  createTracklane,
  uuid7
};
