// Devices and gateways seen: online/offline (device.status, Last Will), last
// seen, last readings; one device's recent events.

import { api, enc } from "./api.js";
import { badge, field, h, notice, pager, pre, replace, table, when } from "./dom.js";

const STATUSES = ["", "online", "offline", "unknown"];

export function readings(values) {
  const entries = Object.entries(values || {});
  if (!entries.length) return "—";
  const shown = entries.slice(0, 6).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  return h("code", { class: "small" }, shown.join("  ") + (entries.length > 6 ? "  …" : ""));
}

export async function devicesView(main, context, _params, query) {
  const status = h("select", { name: "status" }, STATUSES.map((s) => h("option", { value: s, selected: s === (query.get("status") || "") }, s || "any")));
  const gateway = h("input", { type: "text", name: "gatewayId", value: query.get("gatewayId") || "" });
  const totals = h("p", { class: "muted", "aria-live": "polite" });
  const messages = notice();
  const body = h("div");
  let pageToken = "";
  const form = h(
    "form",
    {
      class: "inline-form filters",
      onsubmit: (event) => {
        event.preventDefault();
        load("");
      },
    },
    field("Status", status),
    field("Gateway id", gateway),
    h("button", { type: "submit" }, "Filter"),
  );
  status.addEventListener("change", () => load(""));
  main.append(h("h1", { tabindex: "-1" }, "Devices"), form, totals, messages, body);

  let shown = "";
  async function load(token = pageToken) {
    pageToken = token;
    let answer;
    try {
      answer = await api("/api/devices", { query: { status: status.value, gatewayId: gateway.value.trim(), pageSize: 50, pageToken } });
    } catch (error) {
      messages.error(error);
      return;
    }
    if (!context.alive) return;
    messages.clear();
    const json = JSON.stringify(answer);
    if (json === shown) return;
    shown = json;
    replace(totals, `${answer.online ?? 0} online · ${answer.offline ?? 0} offline · ${answer.unknown ?? 0} unknown`);
    const devices = answer.devices || [];
    replace(
      body,
      devices.length
        ? table(
            ["Device", "Kind", "Status", "Gateway", "Last seen", "Last event", "Last readings"],
            devices.map((d) => [
              h("a", { href: `#/devices/${enc(d.deviceId)}` }, d.deviceId),
              d.kind || "device",
              badge(d.status),
              d.gatewayId || "—",
              when(d.lastSeenAt),
              d.lastEvent || "—",
              d.lastReadingsOmitted ? h("span", { class: "muted" }, "too large to show") : readings(d.lastReadings),
            ]),
            "Devices",
          )
        : h(
            "div",
            { class: "empty card" },
            h("p", {}, status.value || gateway.value ? "No device matches." : "No device seen yet: devices appear once their gateway publishes, for example:"),
            status.value || gateway.value
              ? null
              : pre(
                  "mosquitto_pub -t 'edgesense/<project>/<gateway>/<device>/data' \\\n  -m '{\"timestamp\": \"2025-07-24T10:35:17Z\", \"temperature\": 21.5}'",
                  "Publishing a reading",
                ),
          ),
      pager(pageToken, answer.nextPageToken, load),
    );
  }

  await load("");
  context.every(() => load());
}

export async function deviceView(main, context, [deviceId]) {
  const body = h("div");
  main.append(
    h("div", { class: "title-row" }, h("h1", { tabindex: "-1" }, "Device ", h("code", {}, deviceId)), h("a", { href: "#/devices" }, "All devices")),
    body,
  );
  let shown = "";
  async function load() {
    const answer = await api(`/api/devices/${enc(deviceId)}`);
    if (!context.alive) return;
    const json = JSON.stringify(answer);
    if (json === shown) return;
    shown = json;
    const d = answer.device || answer;
    const events = answer.recentEvents || [];
    replace(
      body,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Status"),
        h("dd", {}, badge(d.status), d.statusChangedAt ? [" since ", when(d.statusChangedAt)] : " (never reported)"),
        h("dt", {}, "Kind"),
        h("dd", {}, d.kind || "device"),
        h("dt", {}, "Gateway"),
        h("dd", {}, d.gatewayId || "—"),
        h("dt", {}, "Last seen"),
        h("dd", {}, when(d.lastSeenAt)),
        h("dt", {}, "Last event"),
        h("dd", {}, d.lastEvent || "—", d.lastEventAt ? [" at ", when(d.lastEventAt)] : ""),
        h("dt", {}, "First seen"),
        h("dd", {}, when(d.firstSeenAt)),
        h("dt", {}, "Alerts"),
        h("dd", {}, h("a", { href: `#/alerts?state=&deviceId=${enc(deviceId)}` }, "This device's alerts")),
      ),
      h("h2", {}, "Last readings"),
      d.lastReadingsOmitted
        ? h("p", { class: "muted" }, "The last reading was too large to keep; at ", when(d.lastReadingsAt))
        : Object.keys(d.lastReadings || {}).length
        ? [
            table(
              ["Reading", "Value"],
              Object.entries(d.lastReadings).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]),
              "Last readings",
            ),
            h("p", { class: "muted" }, "At ", when(d.lastReadingsAt)),
          ]
        : h("p", { class: "empty" }, "No reading yet."),
      h("h2", {}, `Recent events (${events.length})`),
      events.length
        ? table(
            ["Time", "Event", "Payload", "Event id"],
            events.map((e) => [
              when(e.timestamp),
              e.event,
              e.payloadOmitted ? h("span", { class: "muted" }, "too large to keep") : e.payload === undefined ? "—" : h("code", { class: "small" }, JSON.stringify(e.payload)),
              h("code", { class: "small" }, e.eventId),
            ]),
            "Recent events",
          )
        : h("p", { class: "empty" }, "No event kept."),
    );
  }
  await load();
  context.every(load);
}
