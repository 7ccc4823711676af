// The read API over fetch: same origin only, the read key as a Bearer token, typed answers.
// An error answer ({"error", "message"} with a status) becomes an ApiError.

export type Filters = Partial<Record<FilterDimension, string>>;
export const FILTER_DIMENSIONS = ["page", "referrer_domain", "utm_source", "utm_medium", "utm_campaign",
  "device", "browser", "os", "source", "country", "region", "city"] as const;
export type FilterDimension = (typeof FILTER_DIMENSIONS)[number];

export type Dimension = "page" | "entry_page" | "exit_page" | "referrer_domain" | "utm_source" | "utm_medium"
  | "utm_campaign" | "device" | "browser" | "os" | "source" | "country" | "region" | "city" | "event";
export type Grain = "minute" | "hour" | "day";
export const SERIES_METRICS = ["pageviews", "visitors", "sessions", "bounce_rate", "avg_duration_s", "orders",
  "revenue", "conversion_rate"] as const;
export type SeriesMetric = (typeof SERIES_METRICS)[number];
export const MODELS = ["first_touch", "last_touch", "linear", "time_decay", "position_based"] as const;
export type Model = (typeof MODELS)[number];
export const FUNNEL_BREAKDOWNS = ["referrer_domain", "utm_source", "utm_medium", "utm_campaign", "device",
  "browser", "os", "country"] as const;

export interface Range { from: string; to: string }

export interface CurrencyRevenue { currency: string; orders: number; revenue: number; aov: number }
export interface Kpis {
  pageviews: number; visitors: number; visitors_exact: number; sessions: number; bounce_rate: number;
  avg_duration_s: number; views_per_visit: number; order_events?: string[]; orders: number;
  currency: string | null; revenue: number | null; aov: number | null; currencies: CurrencyRevenue[];
  converted?: number; conversion_rate?: number;
}
export interface Customers {
  repurchase: { customers: number; repeat_customers: number; rate: number };
  visitors: { visitors: number; new: number; returning: number };
  time_to_first_order?: { customers: number; median_s: number | null };
}
export interface BreakdownRow {
  value: string; pageviews?: number; visitors?: number; sessions?: number; bounce_rate?: number; events?: number;
}
export interface SeriesPoint { time: string; value: number | null }
export interface TimeseriesPoint { time: string; events: number; visitors: number | null; revenue: number }
export interface FunnelStep { event: string; persons: number; from_previous: number; from_first: number }
export interface Funnel { segment: string; steps: FunnelStep[] }
export interface Cohort { day: string; size: number; retained: number[] }
export interface Retention { cohorts: Cohort[]; rates: Record<string, number>; as_of: string }
export interface Channel { channel: string; conversions: number; revenue: number; share: number }
export interface Finding { summary?: string; observed?: number | null; expected?: number | null }
export interface AlertState {
  rule: string; fingerprint: string; status: string; labels: Record<string, string>; incident: number;
  flapping: boolean; fired_at: string | null; resolved_at: string | null; finding: Finding | null;
}
export interface Transition {
  at: string; rule: string; fingerprint: string; kind: string; severity: string; labels: Record<string, string>;
  from: string; to: string; incident: number; flapping: boolean; summary: string;
}
export interface Silence {
  id: string; matchers: Record<string, string>; starts_at: string; ends_at: string; created_by: string;
  comment: string; created_at: string; state: string;
}
export interface Realtime {
  visitors: number; pageviews: number; window_s: number; pages: { path: string; visitors: number; pageviews: number }[];
  as_of: string;
}
export interface Pipeline {
  watermark_delay_s: number | null; lag: number | null; accepted_last_hour: number; rejected_last_hour: number;
  as_of: string;
}

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

let key: string | null = null;
let onUnauthorized: (err: ApiError) => void = () => undefined;

export const setKey = (k: string | null): void => { key = k; };
export const onAuthError = (handler: (err: ApiError) => void): void => { onUnauthorized = handler; };

/** Only the key's own requests: a 401 of a key being checked is not a sign-out. */
async function request<T>(method: string, path: string, body?: unknown, withKey = key): Promise<T> {
  const headers: Record<string, string> = {};
  if (withKey) headers.Authorization = `Bearer ${withKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit", redirect: "error",
    });
  } catch (e) {
    throw new ApiError(0, "network", e instanceof Error ? e.message : String(e));
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON: reported below by status */
  }
  if (!res.ok) {
    const d = (data && typeof data === "object" ? data : {}) as { error?: string; message?: string };
    const err = new ApiError(res.status, d.error || `http_${res.status}`, d.message || d.error || `HTTP ${res.status}`);
    if (res.status === 401 && withKey === key) onUnauthorized(err);
    throw err;
  }
  return data as T;
}

const post = <T>(path: string, body: object): Promise<T> => request<T>("POST", path, body);
const get = <T>(path: string): Promise<T> => request<T>("GET", path);
/** `filters` only when there are some: an older server refuses the unknown field. */
const withFilters = <B extends object>(body: B, filters?: Filters) =>
  filters && Object.keys(filters).length ? { ...body, filters } : body;

/** Resolves when the server takes `k` as a read key; a 401 rejects with its ApiError. */
export async function checkKey(k: string): Promise<void> {
  const now = Date.now();
  const q = new URLSearchParams({ event: "page_view", from: new Date(now - 60_000).toISOString(), to: new Date(now).toISOString() });
  try {
    await request("GET", `/v1/stats/minutes?${q}`, undefined, k);
  } catch (e) {
    // Only an authentication failure means a bad key; a busy store does not.
    if (e instanceof ApiError && (e.status === 401 || e.status === 0)) throw e;
  }
}

export const kpis = (r: Range, filters?: Filters) => post<Kpis>("/v1/query/kpis", withFilters(r, filters));
export const customers = (r: Range, tz: string) => post<Customers>("/v1/query/customers", { ...r, tz });
export const VITALS = ["lcp", "inp", "cls", "fcp", "ttfb"] as const;
export type Vital = (typeof VITALS)[number];
export interface VitalAnswer { property: Vital; stat: string; q: number; value: number | null; samples: number }
/** The 75th percentile of a Web Vitals property over a range (the SDK's add-on). */
export const vital = (r: Range, property: Vital) => post<VitalAnswer>("/v1/query/vitals", { ...r, property, q: 0.75 });
export const breakdown = (r: Range, dimension: Dimension, limit: number, filters?: Filters) =>
  post<{ rows: BreakdownRow[] }>("/v1/query/breakdown", withFilters({ ...r, dimension, limit }, filters));
export const series = (r: Range, metric: SeriesMetric, grain: Grain, tz: string, filters?: Filters) =>
  post<{ points: SeriesPoint[] }>("/v1/query/series", withFilters({ ...r, metric, grain, tz }, filters));
export const timeseries = (r: Range, grain: Grain, tz: string) =>
  post<{ points: TimeseriesPoint[] }>("/v1/query/timeseries", { ...r, grain, tz, visitors: false });
export const funnel = (r: Range, steps: string[], windowS: number, by: string | null, filters?: Filters) =>
  post<{ funnels: Funnel[] }>("/v1/query/funnel",
    withFilters({ ...r, steps, window_s: windowS, ...(by ? { breakdown: by } : {}) }, filters));
export const retention = (fromDay: string, toDay: string, tz: string, maxDay: number, filters?: Filters) =>
  post<Retention>("/v1/query/retention", withFilters({ from_day: fromDay, to_day: toDay, tz, max_day: maxDay }, filters));
export const attribution = (r: Range, event: string, model: Model, lookbackDays: number) =>
  post<{ channels: Channel[] }>("/v1/query/attribution", { ...r, conversion_event: event, model, lookback_days: lookbackDays });
export const alerts = () => get<{ alerts: AlertState[]; transitions: Transition[] }>("/v1/alerts");
export const silences = () => get<{ silences: Silence[] }>("/v1/silences");
export const createSilence = (body: { matchers: Record<string, string>; duration_minutes: number; created_by: string; comment: string }) =>
  post<Silence>("/v1/silences", body);
export const expireSilence = (id: string) => request<void>("DELETE", `/v1/silences/${encodeURIComponent(id)}`);
export const realtime = () => get<Realtime>("/v1/stats/realtime");
export const pipeline = () => get<Pipeline>("/v1/stats/pipeline");
