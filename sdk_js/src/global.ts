// IIFE entry (dist/tracklane.min.js): replaces the loader stub `window.tracklane`
// with a real instance and replays the stub's queued calls in order.
import { createTracklane } from "./core";

const w: any = window,
  s = w.tracklane;
// loaded twice: keep the live instance
if (!s || s.q) {
  const t: any = createTracklane(w);
  w.tracklane = t;
  s && s.q.forEach((c: any) => t[c[0]] && t[c[0]].apply(t, c[1]));
}
