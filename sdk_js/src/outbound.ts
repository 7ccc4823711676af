/**
 * Optional outbound-link tracking (not in the core bundle).
 *
 * Sends `track("Outbound Link Clicked", {href, text, host})` when a link to another
 * host is clicked. The tracker is looked up at click time (`t`, else
 * `w.tracklane`), so it works with the loader stub as well as the real SDK; delivery
 * survives the navigation through fetch keepalive and the pagehide beacon.
 */
export function installOutbound(t?: { track(e: string, p?: Record<string, unknown>): void }, w: any = globalThis): () => void {
  const f = (e: any) => {
    const a = e.target && e.target.closest && e.target.closest("a[href]");
    if (a && /^https?:$/.test(a.protocol) && a.host != w.location.host) {
      const x = t || w.tracklane;
      x && x.track("Outbound Link Clicked", { href: a.href, text: (a.textContent || "").trim().slice(0, 200), host: a.host });
    }
  };
  w.document.addEventListener("click", f, true);
  return () => w.document.removeEventListener("click", f, true);
}
