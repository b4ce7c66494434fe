// Alerts the rules raised, the rules, and a rule's form (create and edit).

import { api, enc } from "./api.js";
import { add, badge, confirmButton, field, h, list, notice, pager, replace, submitting, table, when } from "./dom.js";

const OPERATORS = [
  ["gt", "greater than"],
  ["gte", "at least"],
  ["lt", "less than"],
  ["lte", "at most"],
  ["outside", "outside the range"],
  ["inside", "inside the range"],
];
const SEVERITIES = ["info", "warning", "critical"];

export async function alertsView(main, context, _params, query) {
  const state = h("select", { id: "alert-state", name: "state" }, ["active", "resolved", ""].map((s) => h("option", { value: s, selected: s === (query.get("state") ?? "active") }, s || "all")));
  const body = h("div", { "aria-live": "polite" });
  const messages = notice();
  const ruleId = query.get("ruleId") || "";
  const deviceId = query.get("deviceId") || "";
  let pageToken = "";
  state.addEventListener("change", () => load(""));
  add(
    main,
    h("div", { class: "title-row" }, h("h1", { tabindex: "-1" }, "Alerts"), h("div", { class: "inline-form" }, h("label", { for: "alert-state" }, "State"), state)),
    ruleId ? h("p", {}, "Only the alerts of ", h("a", { href: `#/rules/${enc(ruleId)}` }, ruleId), " · ", h("a", { href: "#/alerts" }, "every rule's")) : null,
    deviceId ? h("p", {}, "Only the alerts of device ", h("a", { href: `#/devices/${enc(deviceId)}` }, deviceId), " · ", h("a", { href: "#/alerts" }, "every device's")) : null,
    messages,
    body,
  );
  let shown = "";
  async function load(token = pageToken) {
    pageToken = token;
    let answer;
    try {
      answer = await api("/api/alerts", { query: { state: state.value, ruleId, deviceId, pageSize: 50, pageToken } });
    } catch (error) {
      messages.error(error);
      return;
    }
    if (!context.alive) return;
    messages.clear();
    const json = JSON.stringify(answer);
    if (json === shown) return;
    shown = json;
    const alerts = answer.alerts || [];
    replace(
      body,
      alerts.length
        ? table(
            ["Severity", "Rule", "Device", "Value", "Triggered", "Since", "Resolved"],
            alerts.map((a) => [
              badge(a.severity),
              h("a", { href: `#/rules/${enc(a.ruleId)}` }, a.ruleName || a.ruleId),
              h("a", { href: `#/devices/${enc(a.deviceId)}` }, a.deviceId),
              `${a.field} = ${a.value}`,
              when(a.triggeredAt),
              when(a.since),
              a.state === "active" ? badge("active") : [when(a.resolvedAt), a.resolvedReason ? ` (${a.resolvedReason})` : ""],
            ]),
            "Alerts",
          )
        : h("p", { class: "empty" }, state.value === "active" ? "No active alert." : "No alert.", " ", h("a", { href: "#/rules" }, "Rules"), " raise them."),
      pager(pageToken, answer.nextPageToken, load),
    );
  }
  await load("");
  context.every(() => load());
}

export async function rulesView(main, context) {
  const body = h("div");
  const messages = notice();
  main.append(
    h("div", { class: "title-row" }, h("h1", { tabindex: "-1" }, "Rules"), h("a", { class: "button primary", href: "#/rules/new" }, "New rule")),
    messages,
    body,
  );
  async function load(pageToken = "") {
    let answer;
    try {
      answer = await api("/api/rules", { query: { pageSize: 50, pageToken } });
    } catch (error) {
      messages.error(error);
      return;
    }
    if (!context.alive) return;
    const rules = answer.rules || [];
    replace(
      body,
      rules.length
        ? table(
            ["Rule", "Condition", "Severity", "Enabled", "Devices", "Updated"],
            rules.map((r) => [
              h("a", { href: `#/rules/${enc(r.ruleId)}` }, r.name),
              condition(r),
              badge(r.severity),
              r.enabled ? "yes" : "no",
              list(r.deviceIds) === "—" ? "every device" : list(r.deviceIds),
              when(r.updatedAt),
            ]),
            "Rules",
          )
        : h("p", { class: "empty" }, "No rules yet. ", h("a", { href: "#/rules/new" }, "Create one"), ": a device.alert event when a reading crosses a threshold."),
      pager(pageToken, answer.nextPageToken, load),
    );
  }
  await load();
}

function condition(r) {
  const range = r.operator === "outside" || r.operator === "inside";
  const bound = range ? `[${r.threshold}, ${r.thresholdHigh}]` : String(r.threshold);
  const times = r.count > 1 ? ` ${r.count} times` : "";
  const lasting = r.forSeconds ? ` for ${r.forSeconds} s` : "";
  return h("code", { class: "small" }, `${r.field} ${r.operator} ${bound}${times}${lasting}`);
}

function numberOrUndefined(input) {
  return input.value.trim() === "" ? undefined : Number(input.value);
}

export async function ruleView(main, context, [ruleId]) {
  const creating = ruleId === "new";
  const rule = creating ? { enabled: true, severity: "warning", operator: "gt", count: 1, forSeconds: 0 } : await api(`/api/rules/${enc(ruleId)}`);
  if (!context.alive) return;
  const input = (name, type, value, extra = {}) => h("input", { type, name, value: value ?? "", ...extra });
  const name = input("name", "text", rule.name, { required: true, maxlength: 200 });
  const description = h("textarea", { name: "description", rows: 2, maxlength: 1000 }, rule.description || "");
  const fieldPath = input("field", "text", rule.field, { required: true, placeholder: "temperature" });
  const operator = h("select", { name: "operator" }, OPERATORS.map(([v, label]) => h("option", { value: v, selected: v === rule.operator }, `${v} (${label})`)));
  const threshold = input("threshold", "number", rule.threshold, { required: true, step: "any" });
  const thresholdHigh = input("thresholdHigh", "number", rule.thresholdHigh, { step: "any" });
  const clear = input("clearThreshold", "number", rule.operator === "outside" || rule.operator === "inside" ? "" : rule.clearThreshold, { step: "any" });
  const count = input("count", "number", rule.count ?? 1, { min: 1, max: 10000 });
  const forSeconds = input("forSeconds", "number", rule.forSeconds ?? 0, { min: 0, max: 604800 });
  const severity = h("select", { name: "severity" }, SEVERITIES.map((s) => h("option", { value: s, selected: s === rule.severity }, s)));
  const devices = input("deviceIds", "text", (rule.deviceIds || []).join(", "), { placeholder: "every device" });
  const gateways = input("gatewayIds", "text", (rule.gatewayIds || []).join(", "), { placeholder: "every gateway" });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: rule.enabled !== false });
  const messages = notice();
  const save = h("button", { type: "submit", class: "primary" }, creating ? "Create rule" : "Save");
  const split = (text) => text.split(/[\s,]+/).filter(Boolean);
  const ranged = () => operator.value === "outside" || operator.value === "inside";
  const showRange = () => {
    thresholdHigh.closest(".field").hidden = !ranged();
    clear.closest(".field").hidden = ranged();
  };
  const form = h(
    "form",
    {
      class: "grid-form card",
      onsubmit: submitting(save, messages, async () => {
        const spec = {
          name: name.value,
          description: description.value,
          field: fieldPath.value.trim(),
          operator: operator.value,
          threshold: numberOrUndefined(threshold),
          thresholdHigh: ranged() ? numberOrUndefined(thresholdHigh) : undefined,
          clearThreshold: ranged() ? undefined : numberOrUndefined(clear),
          count: numberOrUndefined(count),
          forSeconds: numberOrUndefined(forSeconds) ?? 0,
          severity: severity.value,
          deviceIds: split(devices.value),
          gatewayIds: split(gateways.value),
          enabled: enabled.checked,
        };
        const saved = creating
          ? await api("/api/rules", { method: "POST", body: spec })
          : // Every field: one the form left empty is cleared (updateMask "*").
            await api(`/api/rules/${enc(ruleId)}`, { method: "PATCH", query: { updateMask: "*" }, body: spec });
        if (creating) {
          window.location.hash = `#/rules/${enc(saved.ruleId)}`;
        } else {
          messages.ok(`Saved (version ${saved.version}).`);
        }
      }),
    },
    field("Name", name),
    field("Description", description),
    field("Reading field", fieldPath, "A dotted path into a reading, e.g. temperature or motor.rpm."),
    field("Operator", operator),
    field("Threshold", threshold),
    field("Upper threshold", thresholdHigh, "For outside/inside: the range's upper end."),
    field("Clear threshold", clear, "Hysteresis: an active alert resolves at this value (default: the threshold)."),
    field("Consecutive readings", count),
    field("Lasting at least (seconds)", forSeconds),
    field("Severity", severity),
    field("Device ids", devices, "Comma separated; empty for every device."),
    field("Gateway ids", gateways, "Comma separated; empty for every gateway."),
    h("label", { class: "inline" }, enabled, " Enabled"),
    h("div", {}, save),
    messages,
  );
  operator.addEventListener("change", showRange);
  add(
    main,
    h(
      "div",
      { class: "title-row" },
      h("h1", { tabindex: "-1" }, creating ? "New rule" : rule.name),
      h("a", { href: "#/rules" }, "All rules"),
    ),
    creating ? null : h("p", { class: "muted" }, `${rule.ruleId} · version ${rule.version} · updated `, when(rule.updatedAt)),
    form,
    creating
      ? null
      : h(
          "div",
          { class: "actions" },
          h("a", { href: `#/alerts?state=&ruleId=${enc(rule.ruleId)}` }, "This rule's alerts"),
          confirmButton("Delete rule", "Really delete? Click again", async () => {
            try {
              await api(`/api/rules/${enc(ruleId)}`, { method: "DELETE" });
              window.location.hash = "#/rules";
            } catch (error) {
              messages.error(error);
            }
          }),
        ),
  );
  showRange();
}
