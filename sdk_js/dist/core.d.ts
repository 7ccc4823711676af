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
/** A UUIDv7: 48-bit Unix ms timestamp, version 7, variant 10, random rest. */
export declare const uuid7: (c?: Crypto) => string;
export declare function createTracklane(w?: any): Tracklane;
