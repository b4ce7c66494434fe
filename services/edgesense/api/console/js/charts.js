// Charts with uPlot (vendor/uplot, loaded as a classic script: window.uPlot).
// A chart follows its container's width and is fed new data in place.

import { h } from "./dom.js";

const COLORS = { succeeded: "#1b7f3b", retried: "#b35c00", failed: "#c62828", p50: "#1f5fbf", p99: "#7b3fb3" };

function sizeOf(el, height) {
  return { width: Math.max(260, Math.floor(el.clientWidth || 600)), height };
}

/**
 * A time series chart in `el`. `series`: [{label, key}], `rows(stats)` gives
 * [times, ...values]. Returns {update(stats), destroy()}.
 */
function timeChart(el, { title, yLabel, series, rows, height = 220, small = false }) {
  const U = window.uPlot;
  const box = h("div", { class: small ? "chart chart-small" : "chart", role: "img", "aria-label": title });
  el.append(box);
  if (!U) {
    box.append(h("p", { class: "muted" }, "Charts need vendor/uplot (not loaded)."));
    return { update() {}, destroy() {} };
  }
  const options = {
    ...sizeOf(box, height),
    title: small ? undefined : title,
    legend: { show: !small },
    cursor: { show: !small },
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.1] } },
    axes: small
      ? [{ show: false }, { show: false }]
      : [{ stroke: "#444" }, { stroke: "#444", label: yLabel, size: 56 }],
    series: [
      {},
      ...series.map((s) => ({
        label: s.label,
        stroke: COLORS[s.key] || "#333",
        width: small ? 1.5 : 2,
        fill: small ? undefined : `${COLORS[s.key] || "#333333"}14`,
        points: { show: false },
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
      box.setAttribute("aria-label", `${title}: ${summary(series, last)}`);
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
export function deliveriesChart(el, { small = false, title = "Attempts per minute" } = {}) {
  const perMinute = (stats) => 60 / (stats.bucketSeconds || 60);
  const keys = ["succeeded", "retried", "failed"];
  return timeChart(el, {
    title,
    small,
    height: small ? 36 : 220,
    yLabel: "per minute",
    series: keys.map((key) => ({ key, label: key })),
    rows: (stats) => [
      times(stats),
      ...keys.map((key) => (stats.series || []).map((b) => round((b[key] || 0) * perMinute(stats)))),
    ],
  });
}

function round(x) {
  return Math.round(x * 100) / 100;
}
