// Time charts with uPlot, themed from the page's CSS variables and read in the chosen
// zone and language. The legend is our own readout line (uPlot's is left out).

import uPlot from "uplot";
import { h } from "./dom";
import { when } from "./format";
import { state } from "./state";
import type { Grain } from "./time";

export interface SeriesSpec {
  label: string;
  values: (number | null)[];
  style: "line" | "dashed" | "bars";
}
export interface ChartSpec {
  label: string; // what the chart shows, for screen readers
  x: number[]; // bucket starts, ms
  series: SeriesSpec[];
  grain: Grain;
  fmt: (v: number | null) => string;
  height?: number;
}
export interface Chart { destroy(): void }

const cssVar = (name: string): string => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function xFormat(spec: ChartSpec): Intl.DateTimeFormatOptions {
  const span = spec.x.length ? spec.x[spec.x.length - 1] - spec.x[0] : 0;
  if (spec.grain !== "day" && span <= 36 * 3_600_000) return { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (spec.grain === "hour") return { month: "numeric", day: "numeric", hour: "2-digit", hourCycle: "h23" };
  return { month: "short", day: "numeric" };
}

/** Draws `spec` into `host` (emptied first), sized to the host's width and kept so. */
export function chart(host: HTMLElement, spec: ChartSpec): Chart {
  drawn.get(host)?.destroy();
  const plotBox = h("div", { class: "chart-plot", role: "img", "aria-label": spec.label });
  const readout = h("p", { class: "chart-readout", "aria-hidden": "true" }, "\u00a0");
  host.replaceChildren(plotBox, readout);
  const text = cssVar("--muted");
  const grid = cssVar("--grid");
  const colors = [cssVar("--chart-1"), cssVar("--chart-2")];
  const xOpts = xFormat(spec);
  const tz = state.tz;
  const font = `12px ${cssVar("--font") || "system-ui, sans-serif"}`;
  const axis = (values: uPlot.Axis["values"], size?: number, incrs?: number[]): uPlot.Axis => ({
    stroke: text, font, values, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 },
    ...(size ? { size } : {}), ...(incrs ? { incrs } : {}),
  });
  // Counts get whole-number ticks: "0 1 1 1 2" from 0.25 steps would read as nonsense.
  const counts = spec.series.every((s) => s.values.every((v) => v === null || Number.isInteger(v)));
  const opts: uPlot.Options = {
    width: Math.max(200, host.clientWidth || 600),
    height: spec.height || 220,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), tz),
    legend: { show: false },
    cursor: { drag: { x: false, y: false, setScale: false }, points: { size: 7 } },
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [
      // Room for a whole label ("12/4, 08") between ticks, so none overlap.
      { ...axis((_u, splits) => splits.map((s) => when(s * 1000, xOpts))), space: 90 },
      axis((_u, splits) => splits.map((s) => spec.fmt(s)), 64, counts ? WHOLE : undefined),
    ],
    series: [{}, ...spec.series.map((s, i): uPlot.Series => ({
      label: s.label,
      stroke: colors[i % 2],
      width: s.style === "bars" ? 0 : 2,
      dash: s.style === "dashed" ? [6, 4] : undefined,
      fill: s.style === "bars" ? colors[i % 2] : undefined,
      paths: s.style === "bars" ? uPlot.paths.bars!({ size: [0.7, 24], align: 1 }) : undefined,
      points: { show: false },
      spanGaps: false,
    }))],
    hooks: {
      setCursor: [(u) => {
        const i = u.cursor.idx;
        readout.textContent = i === null || i === undefined ? "\u00a0" : [when(spec.x[i], spec.grain === "day" ? { dateStyle: "medium" } : { dateStyle: "medium", timeStyle: "short" }),
          ...spec.series.map((s) => `${s.label}: ${spec.fmt(s.values[i])}`)].join(" · ");
      }],
    },
  };
  const data: uPlot.AlignedData = [spec.x.map((ms) => ms / 1000), ...spec.series.map((s) => s.values)];
  const plot = new uPlot(opts, data, plotBox);
  let width = host.clientWidth;
  const ro = new ResizeObserver(() => {
    if (host.clientWidth && host.clientWidth !== width) {
      width = host.clientWidth;
      plot.setSize({ width: Math.max(200, width), height: opts.height });
    }
  });
  ro.observe(host);
  const made = { spec, destroy() { ro.disconnect(); plot.destroy(); drawn.delete(host); } };
  drawn.set(host, made);
  return made;
}

const WHOLE = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7].map((p) => m * p)).sort((a, b) => a - b);

const drawn = new Map<HTMLElement, Chart & { spec: ChartSpec }>();

/** Draws every chart on the page again (after a theme change: colours are read once). */
export function redrawAll(): void {
  for (const [host, c] of [...drawn]) {
    if (host.isConnected) chart(host, c.spec);
    else c.destroy();
  }
}

/** Zero-fills (or null-fills) server points onto the expected buckets: a bucket the server
 * gave at another instant is kept too. */
export function align(expected: number[], points: { time: string; value: number | null }[], fill: number | null): { x: number[]; y: (number | null)[] } {
  const got = new Map<number, number | null>();
  for (const p of points) {
    const t = Date.parse(p.time);
    if (Number.isFinite(t)) got.set(t, p.value);
  }
  const x = [...new Set([...expected, ...got.keys()])].sort((a, b) => a - b);
  return { x, y: x.map((t) => (got.has(t) ? got.get(t)! : fill)) };
}
