/**
 * Tracklane browser SDK core.
 *
 * `createTracklane(w?)` builds an instance bound to a window-like object `w`
 * (globalThis by default), so tests can pass fakes. The IIFE build assigns one
 * instance to `window.tracklane` and replays the loader stub's queue.
 *
 * Storage: when consent is "granted" the queue and identity live in localStorage
 * (keys tl_q, tl_aid, tl_sid, tl_uid, tl_drops, tl_lock); otherwise (pending,
 * cookieless, storage unavailable) they live in memory only.
 */

declare const __VERSION__: string;

export type Consent = "granted" | "pending" | "denied" | "cookieless";

export interface Options {
  writeKey: string;
  endpoint: string;
  flushAt?: number;
  flushInterval?: number;
  maxQueue?: number;
  consent?: Consent;
  respectDNT?: boolean;
  autoPage?: boolean;
  debug?: boolean;
}

export type Props = Record<string, unknown>;

export interface Message {
  type: "track" | "page" | "identify";
  event?: string;
  name?: string;
  properties?: Props;
  traits?: Props;
  userId?: string;
  anonymousId: string;
  messageId: string;
  timestamp: string;
  context: Props;
}

export interface Tracklane {
  init(o: Options): void;
  track(event: string, properties?: Props): void;
  page(properties?: Props): void;
  identify(userId: string, traits?: Props): void;
  reset(): void;
  flush(): Promise<void>;
  /** "granted" | "denied" (also accepts "pending" and "cookieless"). */
  consent(c: Consent): void;
  dropped(): number;
}

const VERSION = typeof __VERSION__ == "string" ? __VERSION__ : "0.0.0";
const MIN = 6e4;
const KEYS = ["q", "aid", "sid", "uid", "drops", "lock"];

/** A UUIDv7: 48-bit Unix ms timestamp, version 7, variant 10, random rest. */
export const uuid7 = (c: Crypto = crypto): string => {
  const b = c.getRandomValues(new Uint8Array(16));
  let t = Date.now();
  for (let i = 6; i--; t = Math.floor(t / 256)) b[i] = t % 256;
  b[6] = (b[6] & 15) | 112;
  b[8] = (b[8] & 63) | 128;
  return Array.from(b, (x) => (x + 256).toString(16).slice(1))
    .join("")
    .replace(/(.{8})(.{4})(.{4})(.{4})/, "$1-$2-$3-$4-");
};

export function createTracklane(w: any = globalThis): Tracklane {
  let o: any = {};
  let cons: Consent = "pending"; // until init: calls are held
  let store = 0; // 1: localStorage, 0: memory
  let mem: any = {};
  let held: Message[] = [];
  let aid: string, uid: string, S: any, last: string, ref: string, pc: Consent;
  let timer: any, retry: any, busy: Promise<void> | 0 = 0, n = 0, started = 0, gone = 0;
  const nav = w.navigator || {};
  const id = () => uuid7(w.crypto || crypto);
  const now = () => Date.now();
  const log = (...a: any[]) => o.debug && console.log("[tracklane]", ...a);

  const get = (k: string): any => {
    if (store)
      try {
        return JSON.parse(w.localStorage.getItem("tl_" + k));
      } catch (e) {}
    return mem[k];
  };
  const set = (k: string, v: any) => {
    mem[k] = v;
    if (store)
      try {
        v == null ? w.localStorage.removeItem("tl_" + k) : w.localStorage.setItem("tl_" + k, JSON.stringify(v));
      } catch (e) {}
  };

  const sid = (): string => {
    const t = now();
    let s = get("sid") || S;
    if (!s || t - s.last > 18e5 || t - s.start > 864e5) s = { id: id(), start: t };
    s.last = t;
    set("sid", (S = s));
    return s.id;
  };

  const pageCtx = () => {
    const l = w.location || {},
      d = w.document || {};
    return { path: l.pathname, url: l.href, title: d.title, referrer: ref, search: l.search };
  };

  const msg = (type: Message["type"], f: any) => {
    if (cons == "denied") return;
    const l = w.location || {},
      p = new URLSearchParams(l.search || ""),
      c: any = {};
    "source medium campaign term content gclid fbclid msclkid".split(" ").forEach((k, i) => {
      const v = p.get(i < 5 ? "utm_" + k : k);
      if (v) c[k == "campaign" ? "name" : k] = v;
    });
    let m: Message = {
      type,
      ...f,
      userId: uid,
      anonymousId: aid,
      messageId: id(),
      timestamp: new Date().toISOString(),
      context: {
        library: { name: "tracklane-js", version: VERSION },
        page: pageCtx(),
        userAgent: nav.userAgent,
        locale: nav.language,
        campaign: c,
        sessionId: sid(),
      },
    };
    try {
      m = JSON.parse(JSON.stringify(m)); // snapshot; rejects circular / BigInt properties
    } catch (e) {
      return log("not serializable", e);
    }
    cons == "pending" ? held.push(m) > (o.maxQueue || 1e3) && held.shift() : add(m);
  };

  const add = (m: Message) => {
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

  /** Remove sent messages (by messageId) from the stored queue. */
  const drop = (b: Message[]) => {
    const ids = b.map((m) => m.messageId);
    set("q", (get("q") || []).filter((m: Message) => ids.indexOf(m.messageId) < 0));
  };

  const url = () => o.endpoint + "/v1/batch";
  const body = (b: Message[]) => JSON.stringify({ batch: b, sentAt: new Date().toISOString(), writeKey: o.writeKey });

  /** POST one batch; resolves to [status (0: network error), Retry-After seconds]. */
  const post = async (b: Message[]): Promise<[number, number?]> => {
    const s = body(b);
    if (!w.fetch) {
      if (nav.sendBeacon) return [nav.sendBeacon(url(), new Blob([s], { type: "text/plain" })) ? 200 : 0];
      b.forEach((m) => {
        const g: any = m.context.page || {};
        if (m.type != "identify")
          new w.Image().src =
            o.endpoint +
            "/p.gif?" +
            new URLSearchParams({
              k: o.writeKey,
              e: m.event || "page_view",
              mid: m.messageId,
              aid: m.anonymousId,
              uid: m.userId || "",
              sid: m.context.sessionId as string,
              ts: m.timestamp,
              url: g.url || "",
              ref: g.referrer || "",
              p: JSON.stringify(m.properties || {}),
            });
      });
      return [200];
    }
    try {
      const r = await w.fetch(url(), {
        method: "POST",
        body: s,
        headers: { "Content-Type": "text/plain" },
        keepalive: new TextEncoder().encode(s).length <= MIN,
      });
      return [r.status, parseFloat(r.headers && r.headers.get("Retry-After"))];
    } catch (e) {
      return [0];
    }
  };

  /** Take the cross-tab lock (or refresh ours); 0 when another live tab holds it. */
  const me = id();
  const lock = () => {
    const l = get("lock"),
      t = now();
    if (l && l.id != me && l.exp > t) return 0;
    set("lock", { id: me, exp: t + 1e4 });
    return 1;
  };

  const send = async () => {
    for (;;) {
      const q: Message[] = get("q") || [];
      if (!q.length || retry) break;
      if (!lock()) {
        sched();
        break;
      }
      // up to 100 messages and ~50 kB per request
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
        const d = ra! >= 0 ? ra! * 1e3 : Math.random() * Math.min(MIN, 1e3 * 2 ** n);
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

  const flush = (): Promise<void> => {
    clearTimeout(timer);
    timer = 0;
    const f = () => void (busy = 0);
    return busy ? busy.then(flush) : (busy = send().then(f, f));
  };

  /** Beacon a batch; halve it while sendBeacon refuses; a single refused message goes by fetch. */
  const beacon = (b: Message[]) => {
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

  // once per hide (pagehide and visibilitychange->hidden both fire); re-armed when visible
  const bye = (e: any) => {
    if (e.type == "pagehide" || (w.document || {}).visibilityState == "hidden") {
      const q = get("q") || [];
      // Offline, a beacon would be "queued" and then lost: keep the queue for the next load.
      gone || !q.length || nav.onLine === false || (nav.sendBeacon ? beacon(q) : flush());
      gone = 1;
    } else gone = 0;
  };

  const setConsent = (c: Consent) => {
    if (o.respectDNT && (nav.doNotTrack == "1" || nav.globalPrivacyControl)) c = "denied";
    cons = c;
    store = 0;
    if (c == "denied") {
      held = [];
      try {
        KEYS.forEach((k) => w.localStorage.removeItem("tl_" + k));
      } catch (e) {}
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
      } catch (e) {}
    if (c != "pending") {
      // persist identity now that storage is allowed (keep a stored one)
      set("aid", (aid = get("aid") || aid || id()));
      set("uid", (uid = uid || get("uid")));
      const h = held;
      held = [];
      h.forEach((m) => add({ ...m, anonymousId: aid, userId: m.userId || uid }));
      (get("q") || []).length && sched();
    }
  };

  const page = (p?: Props) => {
    const l = w.location || {};
    if (last) ref = last;
    last = l.href;
    msg("page", { name: p && (p.name as string), properties: { ...pageCtx(), ...p } });
  };

  const route = () => (w.location || {}).href != last && page();

  return {
    init(opts: Options) {
      if (started) return;
      if (!opts || !opts.writeKey || !opts.endpoint) return console.warn("[tracklane] init: writeKey and endpoint required");
      started = 1;
      o = { flushAt: 20, flushInterval: 5e3, maxQueue: 1e3, autoPage: true, ...opts };
      o.endpoint = o.endpoint.replace(/\/+$/, "");
      aid = aid || id();
      ref = (w.document || {}).referrer;
      setConsent(pc || o.consent || "granted");
      const on = (t: string, f: any) => w.addEventListener && w.addEventListener(t, f);
      on("pagehide", bye);
      on("visibilitychange", bye); // fired at document, bubbles to window
      on("online", () => {
        clearTimeout(retry);
        retry = 0;
        flush();
      });
      if (o.autoPage) {
        const h = w.history;
        h &&
          ["pushState", "replaceState"].forEach((k) => {
            const f = h[k];
            h[k] = function (this: any) {
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
      set("uid", (uid = userId));
      msg("identify", { traits: traits || {} });
    },
    reset() {
      uid = S = undefined as any;
      set("uid", null);
      set("sid", null);
      set("aid", (aid = id()));
    },
    flush,
    consent: (c) => (started ? setConsent(c) : (pc = c)),
    dropped: () => get("drops") || 0,
  };
}
