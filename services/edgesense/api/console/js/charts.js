// Charts with uPlot (vendor/uplot, loaded as a classic script: window.uPlot).
// A chart follows its container's width and is fed new data in place.

import { h } from "./dom.js";

const COLORS = { succeeded: "#1b7f3b", retried: "#b35c00", failed: "#c62828", p50: "#1f5fbf", p99: "#7b1fa2" };

function sizeOf(el, height) {
  return { width: Math.max(260, Math.floor(el.clientWidth || 600)), height };
}

/**
 * A time series chart in `el`. `series`: [{label, key, points?}] (points: uPlot's
 * options for the series' dots, default none), `rows(stats)` gives
 * [times, ...values] (null: no value, a gap), `describe(series, rows)` the
 * chart's accessible summary (default: each series' sum). Each series'
 * values are also on the chart's `data-<key>` attribute, comma-separated
 * (empty for null), what a test compares with the API's figures. Returns
 * {update(stats), destroy()}.
 */
function timeChart(el, { title, yLabel, series, rows, describe = summary, height = 220 }) {
  const U = window.uPlot;
  const box = h("div", { class: "chart", role: "img", "aria-label": title });
  el.append(box);
  if (!U) {
    box.append(h("p", { class: "muted" }, "Charts need vendor/uplot (not loaded)."));
    return { update() {}, destroy() {} };
  }
  const options = {
    ...sizeOf(box, height),
    title,
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.1] } },
    axes: [{ stroke: "#444" }, { stroke: "#444", label: yLabel, size: 56 }],
    series: [
      {},
      ...series.map((s) => ({
        label: s.label,
        stroke: COLORS[s.key] || "#333",
        width: 2,
        fill: `${COLORS[s.key] || "#333333"}1f`,
        // Steps: each bucket a flat run over its own minutes, so one busy bucket shows.
        paths: U.paths.stepped({ align: 1 }),
        points: s.points || { show: false },
      })),
    ],
  };
  let plot = null;
  let last = null;
  const observer = new ResizeObserver(() => {
    if (plot) plot.setSize(sizeOf(box, height));
  });
  observer.observe(box);
  return {
    update(stats) {
      last = rows(stats);
      if (!plot) plot = new U(options, last, box);
      else plot.setData(last);
      box.setAttribute("aria-label", `${title}: ${describe(series, last)}`);
      series.forEach((s, i) => box.setAttribute(`data-${s.key}`, last[i + 1].map((v) => v ?? "").join(",")));
    },
    destroy() {
      observer.disconnect();
      if (plot) plot.destroy();
    },
  };
}

function summary(series, data) {
  return series.map((s, i) => `${s.label} ${data[i + 1].reduce((a, b) => a + (b || 0), 0)}`).join(", ");
}

function times(stats) {
  return (stats.series || []).map((b) => Date.parse(b.start) / 1000);
}

/** Deliveries' attempts per minute: succeeded, retried, failed. */
export function deliveriesChart(el, { title = "Attempts per minute" } = {}) {
  const perMinute = (stats) => 60 / (stats.bucketSeconds || 60);
  const keys = ["succeeded", "retried", "failed"];
  return timeChart(el, {
    title,
    yLabel: "per minute",
    series: keys.map((key) => ({ key, label: key })),
    rows: (stats) => [
      times(stats),
      ...keys.map((key) => (stats.series || []).map((b) => round((b[key] || 0) * perMinute(stats)))),
    ],
  });
}

/** Each bucket's attempt latency, p50 and p99 (ms); a bucket without attempts is a gap. */
export function latencyChart(el, { title = "Attempt latency" } = {}) {
  const keys = ["p50", "p99"];
  return timeChart(el, {
    title,
    yLabel: "ms",
    // Dots too: a bucket alone between empty ones has no step to draw.
    series: keys.map((key) => ({ key, label: key, points: { show: true, size: 5 } })),
    rows: (stats) => [
      times(stats),
      ...keys.map((key) => (stats.series || []).map((b) => b[`${key}DurationMs`] ?? null)),
    ],
    describe: latest,
  });
}

/** The latest bucket with attempts: "p50 12 ms, p99 80 ms at 14:05", or that none had any. */
function latest(series, data) {
  for (let i = data[0].length - 1; i >= 0; i--) {
    if (data[1][i] == null) continue;
    const at = new Date(data[0][i] * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return `${series.map((s, j) => `${s.label} ${data[j + 1][i]} ms`).join(", ")} at ${at}`;
  }
  return "no attempts";
}

/**
 * A small trend: the window's buckets summed into `groups` bars, succeeded
 * (green) beside not succeeded (red), so a single busy bucket still shows.
 */
export function trendChart(el, { title, groups = 24 } = {}) {
  const U = window.uPlot;
  const box = h("div", { class: "chart-small", role: "img", "aria-label": title });
  el.append(box);
  if (!U) return { update() {}, destroy() {} };
  let plot = null;
  const options = {
    width: 160,
    height: 36,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false, range: (_u, min, max) => [min - 0.5, max + 0.5] }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
    axes: [{ show: false }, { show: false }],
    series: [
      {},
      { stroke: COLORS.succeeded, fill: COLORS.succeeded, paths: U.paths.bars({ size: [0.45, 3], align: -1 }), points: { show: false } },
      { stroke: COLORS.failed, fill: COLORS.failed, paths: U.paths.bars({ size: [0.45, 3], align: 1 }), points: { show: false } },
    ],
  };
  return {
    update(stats) {
      const buckets = stats.series || [];
      const per = Math.max(1, Math.ceil(buckets.length / groups));
      const xs = [];
      const ok = [];
      const bad = [];
      for (let i = 0; i < buckets.length; i += per) {
        const slice = buckets.slice(i, i + per);
        xs.push(xs.length);
        ok.push(slice.reduce((a, b) => a + (b.succeeded || 0), 0));
        bad.push(slice.reduce((a, b) => a + (b.retried || 0) + (b.failed || 0), 0));
      }
      const data = [xs, ok, bad];
      if (!plot) plot = new U(options, data, box);
      else plot.setData(data);
      const sum = (xs_) => xs_.reduce((a, b) => a + b, 0);
      box.setAttribute("aria-label", `${title}: ${sum(ok)} succeeded, ${sum(bad)} failed or retried`);
    },
    destroy() {
      if (plot) plot.destroy();
    },
  };
}

function round(x) {
  return Math.round(x * 100) / 100;
}
