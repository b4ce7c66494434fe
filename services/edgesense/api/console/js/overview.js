// Overview: the project's deliveries and attempt latency (p50, p99) over the last hour or day,
// and the counts that say whether anything needs a look.

import { api } from "./api.js";
import { deliveriesChart, latencyChart } from "./charts.js";
import { h, ms, notice, percent, replace } from "./dom.js";

export function windowSwitch(windows, chosen, onChange) {
  const group = h("div", { class: "segmented", role: "group", "aria-label": "Time window" });
  for (const value of windows) {
    const button = h("button", { type: "button", "aria-pressed": String(value === chosen) }, value);
    button.addEventListener("click", () => {
      for (const b of group.children) b.setAttribute("aria-pressed", String(b === button));
      onChange(value);
    });
    group.append(button);
  }
  return group;
}

function stat(label, value, href, tone) {
  const body = [h("span", { class: "stat-value" }, value), h("span", { class: "stat-label" }, label)];
  return href
    ? h("a", { class: `stat ${tone || ""}`, href }, body)
    : h("div", { class: `stat ${tone || ""}` }, body);
}

export async function overviewView(main, context) {
  let window_ = "1h";
  const counts = h("div", { class: "stats", "aria-live": "polite" });
  const figures = h("div", { class: "stats" });
  const charts = h("div", { class: "charts" });
  const status = notice();
  main.append(
    h("div", { class: "title-row" }, h("h1", { tabindex: "-1" }, "Overview"), windowSwitch(["1h", "24h"], window_, change)),
    status,
    counts,
    figures,
    charts,
  );
  const deliveries = deliveriesChart(charts, { title: "Attempts per minute (succeeded, retried, failed)" });
  const latency = latencyChart(charts, { title: "Attempt latency (p50, p99)" });
  context.onLeave(() => {
    deliveries.destroy();
    latency.destroy();
  });

  async function change(value) {
    window_ = value;
    await refresh();
  }

  async function refresh() {
    const shown = window_;
    const [stats, devices] = await Promise.allSettled([
      api("/api/stats", { query: { window: shown } }),
      api("/api/devices", { query: { pageSize: 1 } }),
    ]);
    if (!context.alive || shown !== window_) return; // the window changed meanwhile: its own refresh draws
    const problems = [stats, devices].filter((r) => r.status === "rejected").map((r) => r.reason);
    if (problems.length) status.error(problems[0]);
    else status.clear();
    const value = (r) => (r.status === "fulfilled" ? r.value : null);
    const s = value(stats);
    const d = value(devices);
    const webhooks = (s && s.webhooks) || {};
    replace(
      counts,
      stat("active webhooks", s ? webhooks.active ?? 0 : "—", "#/webhooks"),
      stat("disabled webhooks", s ? webhooks.disabled ?? 0 : "—", "#/webhooks", s && webhooks.disabled ? "warn" : ""),
      stat("held deliveries", s ? s.held ?? 0 : "—", "#/webhooks", s && s.held ? "warn" : ""),
      stat("active alerts", s ? s.alertsActive ?? 0 : "—", "#/alerts", s && s.alertsActive ? "bad" : ""),
      stat("devices online", d ? Number(d.online ?? 0) : "—", "#/devices?status=online"),
      stat("devices offline", d ? Number(d.offline ?? 0) : "—", "#/devices?status=offline", d && Number(d.offline) ? "warn" : ""),
    );
    if (!s) return;
    const c = s.deliveries || {};
    replace(
      figures,
      stat(`deliveries (${window_})`, c.total ?? 0),
      stat("succeeded", c.succeeded ?? 0),
      stat("failed", c.failed ?? 0, null, c.failed ? "bad" : ""),
      stat("pending", c.pending ?? 0),
      stat("attempt success", percent(s.successRate)),
      stat("p50 latency", ms(s.p50DurationMs)),
      stat("p99 latency", ms(s.p99DurationMs)),
    );
    deliveries.update(s);
    latency.update(s);
  }

  await refresh();
  context.every(refresh);
}
