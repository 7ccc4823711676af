// Time zone arithmetic without a library: offsets come from Intl.DateTimeFormat.

const MIN = 60_000;
export const HOUR = 3_600_000;
export const DAY = 86_400_000;

const partsFmt = new Map<string, Intl.DateTimeFormat>();

function parts(ms: number, tz: string): number[] {
  let f = partsFmt.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric",
      hour: "numeric", minute: "numeric", second: "numeric",
    });
    partsFmt.set(tz, f);
  }
  const out: Record<string, number> = {};
  for (const p of f.formatToParts(ms)) if (p.type !== "literal") out[p.type] = Number(p.value);
  return [out.year, out.month, out.day, out.hour % 24, out.minute, out.second];
}

/** The zone's offset from UTC at `ms`, in milliseconds (local = UTC + offset). */
export function tzOffset(ms: number, tz: string): number {
  const [y, mo, d, h, mi, s] = parts(ms, tz);
  return Date.UTC(y, mo - 1, d, h, mi, s) - Math.floor(ms / 1000) * 1000;
}

/** "YYYY-MM-DD" of `ms` in the zone. */
export function dateIn(ms: number, tz: string): string {
  const [y, mo, d] = parts(ms, tz);
  return `${String(y).padStart(4, "0")}-${String(mo).padStart(2, "0")}-${String(d).padStart(2, "0")}`;
}

/** A calendar date `n` days after `day` ("YYYY-MM-DD"). */
export function addDays(day: string, n: number): string {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

/** The instant the local date `day` starts in the zone. */
export function midnight(day: string, tz: string): number {
  const [y, m, d] = day.split("-").map(Number);
  const wall = Date.UTC(y, m - 1, d);
  let t = wall - tzOffset(wall, tz);
  t = wall - tzOffset(t, tz); // once more, for a DST change between the guesses
  return t;
}

export const startOfDay = (ms: number, tz: string): number => midnight(dateIn(ms, tz), tz);

/** Bucket starts covering [from, to) at a grain, as the server buckets them in `tz`. */
export function buckets(from: number, to: number, grain: Grain, tz: string): number[] {
  const out: number[] = [];
  const floorHour = (t: number) => {
    const off = tzOffset(t, tz);
    return Math.floor((t + off) / HOUR) * HOUR - off;
  };
  let t = grain === "minute" ? Math.floor(from / MIN) * MIN : grain === "hour" ? floorHour(from) : startOfDay(from, tz);
  while (t < to && out.length < 5000) {
    out.push(t);
    t = grain === "minute" ? t + MIN : grain === "hour" ? floorHour(t + HOUR + MIN) : startOfDay(t + 26 * HOUR, tz);
  }
  return out;
}

export type Grain = "minute" | "hour" | "day";

export const ceilMinute = (ms: number): number => Math.ceil(ms / MIN) * MIN;
export const floorMinute = (ms: number): number => Math.floor(ms / MIN) * MIN;

export function browserTz(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

export function timeZones(): string[] {
  try {
    const zones = Intl.supportedValuesOf("timeZone");
    return zones.includes("UTC") ? zones : ["UTC", ...zones];
  } catch {
    return ["UTC"];
  }
}
