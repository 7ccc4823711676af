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
export declare function installWebVitals(t?: {
    track(e: string, p?: Record<string, unknown>): void;
}, w?: any): () => void;
