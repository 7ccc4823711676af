/**
 * Optional Web Vitals (not in the core bundle): the page view's LCP, INP, CLS, FCP and
 * TTFB from the browser's PerformanceObserver, sent once when the page is first hidden as
 * `track("web_vitals", {lcp, inp, cls, fcp, ttfb, path})`, in the SDK's own batch.
 *
 * Times are milliseconds, CLS is unitless; a metric the browser did not report (no
 * interaction: no INP; Safari: no LCP) is left out. CLS is the largest session window
 * (shifts under 1 s apart, at most 5 s) without recent input; INP is the longest
 * interaction, which is the 98th percentile a page with under 50 interactions has.
 * The listener sits on the document, so it runs before the core's window listener
 * beacons the queue. The tracker is looked up at hide time (`t`, else `w.tracklane`).
 */
export function installWebVitals(t?: { track(e: string, p?: Record<string, unknown>): void }, w: any = globalThis): () => void {
  const v: Record<string, number> = {};
  const seen: any[] = [];
  const watch = (type: string, f: (e: any) => void, extra?: object) => {
    try {
      const o = new w.PerformanceObserver((l: any) => l.getEntries().forEach(f));
      o.observe({ type, buffered: true, ...extra });
      seen.push([o, f]);
    } catch (e) {}
  };
  const max = (k: string, x: number) => (v[k] = Math.max(v[k] || 0, x));
  let s = 0, first = 0, last = 0, sent = 0;
  watch("largest-contentful-paint", (e) => (v.lcp = e.startTime));
  watch("paint", (e) => e.name == "first-contentful-paint" && (v.fcp = e.startTime));
  watch("layout-shift", (e) => {
    if (e.hadRecentInput) return;
    s = s && e.startTime - last < 1000 && e.startTime - first < 5000 ? s + e.value : ((first = e.startTime), e.value);
    last = e.startTime;
    max("cls", s);
  });
  watch("event", (e) => e.interactionId && max("inp", e.duration), { durationThreshold: 16 });
  watch("first-input", (e) => max("inp", e.duration));
  watch("navigation", (e) => e.responseStart > 0 && (v.ttfb = e.responseStart));
  const d = w.document;
  const hide = (e: any) => {
    if (sent || (e.type != "pagehide" && d.visibilityState != "hidden")) return;
    const x = t || w.tracklane;
    if (!x) return;
    sent = 1;
    // Entries the observers hold but have not delivered yet (the last shift, say).
    seen.forEach(([o, f]) => o.takeRecords && o.takeRecords().forEach(f));
    const p: Record<string, unknown> = { path: w.location.pathname };
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
