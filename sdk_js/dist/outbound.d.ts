/**
 * Optional outbound-link tracking (not in the core bundle).
 *
 * Sends `track("Outbound Link Clicked", {href, text, host})` when a link to another
 * host is clicked. The tracker is looked up at click time (`t`, else
 * `w.tracklane`), so it works with the loader stub as well as the real SDK; delivery
 * survives the navigation through fetch keepalive and the pagehide beacon.
 */
export declare function installOutbound(t?: {
    track(e: string, p?: Record<string, unknown>): void;
}, w?: any): () => void;
