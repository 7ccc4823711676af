// src/webvitals.ts
function installWebVitals(t, w = globalThis) {
  const v = {};
  const seen = [];
  const watch = (type, f, extra) => {
    try {
      const o = new w.PerformanceObserver((l) => l.getEntries().forEach(f));
      o.observe({ type, buffered: true, ...extra });
      seen.push([o, f]);
    } catch (e) {
    }
  };
  const max = (k, x) => v[k] = Math.max(v[k] || 0, x);
  let s = 0, first = 0, last = 0, sent = 0;
  watch("largest-contentful-paint", (e) => v.lcp = e.startTime);
  watch("paint", (e) => e.name == "first-contentful-paint" && (v.fcp = e.startTime));
  watch("layout-shift", (e) => {
    if (e.hadRecentInput) return;
    s = s && e.startTime - last < 1e3 && e.startTime - first < 5e3 ? s + e.value : (first = e.startTime, e.value);
    last = e.startTime;
    max("cls", s);
  });
  watch("event", (e) => e.interactionId && max("inp", e.duration), { durationThreshold: 16 });
  watch("first-input", (e) => max("inp", e.duration));
  watch("navigation", (e) => e.responseStart > 0 && (v.ttfb = e.responseStart));
  const d = w.document;
  const hide = (e) => {
    if (sent || e.type != "pagehide" && d.visibilityState != "hidden") return;
    const x = t || w.tracklane;
    if (!x) return;
    sent = 1;
    seen.forEach(([o, f]) => o.takeRecords && o.takeRecords().forEach(f));
    const p = { path: w.location.pathname };
    for (const k in v) p[k] = k == "cls" ? Math.round(v[k] * 1e4) / 1e4 : Math.round(v[k]);
    x.track("web_vitals", p);
  };
  d.addEventListener("visibilitychange", hide, true);
  w.addEventListener("pagehide", hide, true);
  return () => {
    seen.forEach(([o]) => o.disconnect());
    d.removeEventListener("visibilitychange", hide, true);
    w.removeEventListener("pagehide", hide, true);
  };
}
export {
  installWebVitals
};
