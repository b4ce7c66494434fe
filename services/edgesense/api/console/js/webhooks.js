// Webhooks: the list, one webhook's page (settings, stats, delivery log,
// recovery) and one delivery's page (body, attempts, redeliver).

import { api, enc } from "./api.js";
import { deliveriesChart, latencyChart, trendChart } from "./charts.js";
import {
  badge,
  busy,
  confirmButton,
  field,
  h,
  list,
  ms,
  notice,
  pager,
  percent,
  pre,
  prettyJson,
  replace,
  submitting,
  table,
  when,
} from "./dom.js";
import { windowSwitch } from "./overview.js";

// A new webhook's stats: asked again this often, this many times, while delivery
// does not know it yet (a 404).
const STATS_RETRY_MS = 500;
const STATS_RETRIES = 10;

const FALLBACK_EVENTS = ["device.data", "device.alert", "device.status", "config.update", "webhook.disabled", "webhook.enabled"];
const STATUSES = ["", "pending", "succeeded", "failed", "held"];
let eventTypes = null;

async function eventNames() {
  if (!eventTypes) {
    try {
      const answer = await api("/api/event-types");
      eventTypes = (answer.eventTypes || []).map((t) => t.name);
    } catch {
      return FALLBACK_EVENTS;
    }
  }
  return eventTypes.length ? eventTypes : FALLBACK_EVENTS;
}

function splitList(text) {
  return text
    .split(/[\s,]+/)
    .map((x) => x.trim())
    .filter(Boolean);
}

function parseHeaders(text) {
  const headers = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf(":");
    if (at <= 0) throw new Error(`headers: "${line.trim()}" is not "Name: value"`);
    headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return headers;
}

function randomSecret() {
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
}

function eventsFieldset(names, chosen, legend = "Events") {
  return h(
    "fieldset",
    { class: "checks" },
    h("legend", {}, legend),
    names.map((name) =>
      h("label", {}, h("input", { type: "checkbox", name: "events", value: name, checked: chosen.includes(name) }), ` ${name}`),
    ),
  );
}

function checkedEvents(form) {
  return [...form.querySelectorAll('input[name="events"]:checked')].map((x) => x.value);
}

export function registerCurl() {
  const origin = window.location.origin;
  return pre(
    `KEY=…   # your API key (make run: var/dev-api-key)\n` +
      `curl -s ${origin}/api/webhooks/register -H "Authorization: Bearer $KEY" \\\n` +
      `  -d '{"url": "https://your-server.com/webhook-receiver",\n` +
      `       "events": ["device.data", "device.alert"], "secret": "your_shared_secret"}'`,
    "curl to register a webhook",
  );
}

// ---------------------------------------------------------------- the list

export async function webhooksView(main, context) {
  const status = notice();
  const body = h("div");
  const names = await eventNames();
  main.append(h("h1", { tabindex: "-1" }, "Webhooks"), status, registerForm(names, () => load()), body);
  const trends = [];
  context.onLeave(() => trends.forEach((t) => t.destroy()));
  let pageToken = "";

  async function load(token = "") {
    pageToken = token;
    let answer;
    try {
      answer = await api("/api/webhooks", { query: { pageSize: 25, pageToken } });
    } catch (error) {
      status.error(error);
      return;
    }
    if (!context.alive) return;
    trends.splice(0).forEach((t) => t.destroy());
    const webhooks = answer.webhooks || [];
    if (!webhooks.length && !pageToken) {
      replace(
        body,
        h(
          "div",
          { class: "empty card" },
          h("h2", {}, "No webhooks yet"),
          h("p", {}, "Register one with the form above, or with curl:"),
          registerCurl(),
        ),
      );
      return;
    }
    const rows = webhooks.map((w) => {
      const rate = h("span", {}, "…");
      const trend = h("div", { class: "trend" });
      return {
        w,
        rate,
        trend,
        cells: [
          h("a", { href: `#/webhooks/${enc(w.webhookId)}` }, w.description || w.url),
          badge(w.status),
          list(w.events),
          rate,
          trend,
          h("code", { class: "small" }, w.webhookId),
        ],
      };
    });
    replace(
      body,
      table(
        ["Webhook", "Status", "Events", "Success (24h)", "Trend (24h)", "Id"],
        rows.map((r) => r.cells),
        "Webhooks",
      ),
      pager(pageToken, answer.nextPageToken, load),
    );
    // Each webhook's stats, a few at a time. Delivery learns of a webhook
    // from the registry's change stream, a moment after it is registered:
    // until then its stats are a 404, asked again a little later.
    const queue = rows.map((row) => ({ ...row, tries: 0 }));
    const worker = async () => {
      while (queue.length && context.alive) {
        const row = queue.shift();
        try {
          const stats = await api(`/api/webhooks/${enc(row.w.webhookId)}/stats`, { query: { window: "24h" } });
          if (!context.alive) return;
          replace(row.rate, percent(stats.successRate), h("span", { class: "muted" }, ` of ${stats.attempts || 0}`));
          const chart = trendChart(row.trend, { title: `Attempts over 24 h of ${row.w.webhookId}` });
          trends.push(chart);
          chart.update(stats);
        } catch (error) {
          if (error.status === 404 && row.tries < STATS_RETRIES) {
            row.tries += 1;
            await new Promise((resolve) => setTimeout(resolve, STATS_RETRY_MS));
            queue.push(row);
            continue;
          }
          replace(row.rate, h("span", { class: "error" }, error.message));
        }
      }
    };
    // In the background: the page is usable before every trend is in.
    Promise.all([worker(), worker(), worker()]);
  }

  await load();
}

function registerForm(names, onRegistered) {
  const status = notice();
  const url = h("input", { type: "url", name: "url", required: true, placeholder: "https://your-server.com/webhook-receiver" });
  const secret = h("input", { type: "text", name: "secret", required: true, autocomplete: "off", spellcheck: "false" });
  const description = h("input", { type: "text", name: "description" });
  const devices = h("input", { type: "text", name: "deviceIds", placeholder: "every device" });
  const headers = h("textarea", { name: "headers", rows: 2, placeholder: "Authorization: Bearer token" });
  const rate = h("input", { type: "number", name: "rateLimitPerSecond", min: 0, max: 10000, value: "0" });
  const ordered = h("input", { type: "checkbox", name: "ordered" });
  const submit = h("button", { type: "submit", class: "primary" }, "Register");
  const form = h(
    "form",
    {
      class: "grid-form",
      onsubmit: submitting(submit, status, async () => {
        const body = {
          url: url.value.trim(),
          events: checkedEvents(form),
          secret: secret.value,
          description: description.value,
          deviceIds: splitList(devices.value),
          headers: parseHeaders(headers.value),
          rateLimitPerSecond: Number(rate.value || 0),
          ordered: ordered.checked,
        };
        const answer = await api("/api/webhooks/register", { method: "POST", body });
        status.ok(`Registered ${answer.webhookId}.`);
        status.append(h("p", {}, h("a", { href: `#/webhooks/${enc(answer.webhookId)}` }, `Open ${answer.webhookId}`)));
        form.reset();
        await onRegistered();
      }),
    },
    field("URL", url),
    eventsFieldset(names, ["device.data"]),
    field(
      "Signing secret",
      secret,
      "1 to 256 bytes; a whsec_ secret is used base64-decoded (Standard Webhooks). Keep a copy: it is never shown again.",
    ),
    h("button", { type: "button", onclick: () => (secret.value = randomSecret()) }, "Generate a secret"),
    field("Description", description),
    field("Device ids", devices, "Comma separated; empty for every device."),
    field("Headers", headers, "One \"Name: value\" a line, sent with every request."),
    field("Rate limit (requests/s, 0: none)", rate),
    h("label", { class: "inline" }, ordered, " Ordered per device"),
    h("div", {}, submit),
    status,
  );
  return h("details", { class: "card" }, h("summary", {}, "Register a webhook"), form);
}

// ---------------------------------------------------------------- one webhook

export async function webhookView(main, context, [webhookId]) {
  const base = `/api/webhooks/${enc(webhookId)}`;
  let webhook = await api(base);
  if (!context.alive) return;
  const names = await eventNames();
  const status = notice();
  const heading = h("div", { class: "title-row" });
  const summary = h("div");
  const actions = h("div", { class: "actions" });
  main.append(heading, status, summary, actions);

  function drawHeader() {
    replace(
      heading,
      h("h1", { tabindex: "-1" }, webhook.description || "Webhook", " ", badge(webhook.status)),
      h("a", { href: "#/webhooks" }, "All webhooks"),
    );
    replace(
      summary,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Id"),
        h("dd", {}, h("code", {}, webhook.webhookId)),
        h("dt", {}, "URL"),
        h("dd", {}, h("code", {}, webhook.url)),
        h("dt", {}, "Events"),
        h("dd", {}, list(webhook.events)),
        h("dt", {}, "Devices"),
        h("dd", {}, list(webhook.deviceIds) === "—" ? "every device" : list(webhook.deviceIds)),
        h("dt", {}, "Rate limit"),
        h("dd", {}, webhook.rateLimitPerSecond ? `${webhook.rateLimitPerSecond}/s` : "none"),
        h("dt", {}, "Ordered"),
        h("dd", {}, webhook.ordered ? "yes, per device" : "no"),
        h("dt", {}, "Created"),
        h("dd", {}, when(webhook.createdAt)),
        webhook.secretRotationEndsAt ? [h("dt", {}, "Previous secret signs until"), h("dd", {}, when(webhook.secretRotationEndsAt))] : null,
        webhook.status === "disabled"
          ? [
              h("dt", {}, "Disabled"),
              h("dd", { class: "error" }, when(webhook.disabledAt), " — ", webhook.disabledReason || "no reason given"),
            ]
          : null,
      ),
    );
    replace(actions, ...actionButtons());
  }

  function actionButtons() {
    const buttons = [];
    if (webhook.status === "disabled") {
      const enable = h("button", { type: "button", class: "primary" }, "Enable");
      enable.addEventListener("click", () =>
        busy(enable, status, async () => {
          await api(`${base}/enable`, { method: "POST" });
          status.ok("Enabled: held deliveries are being sent, oldest first.");
          await reload();
        }),
      );
      buttons.push(enable);
    }
    const testEvent = h("select", { name: "test-event" }, names.map((n) => h("option", { value: n }, n)));
    const send = h("button", { type: "submit" }, "Send test event");
    buttons.push(
      h(
        "form",
        {
          class: "inline-form",
          onsubmit: submitting(send, status, async () => {
            const record = await api(`${base}/test`, { method: "POST", body: { event: testEvent.value } });
            status.ok(`Test ${record.event} queued as ${record.deliveryId}.`);
            await refreshLog();
          }),
        },
        h("label", { for: (testEvent.id = "test-event") }, "Test"),
        testEvent,
        send,
      ),
    );
    buttons.push(
      confirmButton("Delete", "Really delete? Click again", async () => {
        try {
          await api(base, { method: "DELETE" });
          window.location.hash = "#/webhooks";
        } catch (error) {
          status.error(error);
        }
      }),
    );
    return buttons;
  }

  async function reload() {
    const fresh = await api(base);
    if (!context.alive || JSON.stringify(fresh) === JSON.stringify(webhook)) return;
    webhook = fresh;
    drawHeader();
  }

  drawHeader();
  main.append(settingsForm(), rotateForm());

  // Stats
  let statsWindow = "1h";
  const figures = h("div", { class: "stats" });
  const chartBox = h("div", { class: "charts" });
  main.append(
    h("section", { "aria-labelledby": "stats-h" },
      h("div", { class: "title-row" }, h("h2", { id: "stats-h" }, "Stats"),
        windowSwitch(["1h", "24h", "7d"], statsWindow, (w) => { statsWindow = w; refreshStats(); })),
      figures, chartBox),
  );
  const chart = deliveriesChart(chartBox, { title: "Attempts per minute" });
  const latency = latencyChart(chartBox, { title: "Attempt latency (p50, p99)" });
  context.onLeave(() => {
    chart.destroy();
    latency.destroy();
  });

  async function refreshStats() {
    const shown = statsWindow;
    try {
      const s = await api(`${base}/stats`, { query: { window: shown } });
      if (!context.alive || shown !== statsWindow) return; // the window changed meanwhile: its own refresh draws
      const c = s.deliveries || {};
      replace(
        figures,
        ...[
          [`deliveries (${shown})`, c.total ?? 0],
          ["succeeded", c.succeeded ?? 0],
          ["failed", c.failed ?? 0],
          ["held", c.held ?? 0],
          ["pending", c.pending ?? 0],
          ["attempt success", percent(s.successRate)],
          ["p50", ms(s.p50DurationMs)],
          ["p95", ms(s.p95DurationMs)],
          ["p99", ms(s.p99DurationMs)],
        ].map(([label, value]) => h("div", { class: "stat" }, h("span", { class: "stat-value" }, value), h("span", { class: "stat-label" }, label))),
      );
      chart.update(s);
      latency.update(s);
    } catch (error) {
      replace(figures, h("p", { class: "error", role: "alert" }, error.message));
    }
  }

  // Recover a window
  main.append(recoverForm());

  // Delivery log
  const filter = h("select", { id: "log-status", name: "status" }, STATUSES.map((s) => h("option", { value: s }, s || "all")));
  const log = h("div", { "aria-live": "polite" });
  let extraPages = false;
  let shownLog = "";
  filter.addEventListener("change", () => refreshLog());
  main.append(
    h("section", { "aria-labelledby": "log-h" },
      h("div", { class: "title-row" }, h("h2", { id: "log-h" }, "Deliveries"),
        h("div", { class: "inline-form" }, h("label", { for: "log-status" }, "Delivery status"), filter)),
      log),
  );

  async function refreshLog(pageToken = "") {
    let answer;
    try {
      answer = await api(`${base}/deliveries`, { query: { status: filter.value, pageSize: 50, pageToken } });
    } catch (error) {
      replace(log, h("p", { class: "error", role: "alert" }, error.message));
      return;
    }
    if (!context.alive) return;
    extraPages = Boolean(pageToken);
    const json = JSON.stringify([filter.value, answer]);
    if (json === shownLog) return; // unchanged: keep the focus where it is
    shownLog = json;
    const deliveries = answer.deliveries || [];
    const rows = deliveries.map((d) => {
      const last = (d.attempts || [])[d.attempts.length - 1];
      return [
        h("a", { href: `#/deliveries/${enc(d.deliveryId)}` }, d.deliveryId),
        badge(d.status),
        d.event,
        d.deviceId || "—",
        when(d.createdAt),
        String((d.attempts || []).length),
        last ? (last.statusCode ? String(last.statusCode) : last.error || "—") : "—",
      ];
    });
    replace(
      log,
      deliveries.length
        ? table(["Delivery", "Status", "Event", "Device", "Created", "Attempts", "Last answer"], rows, "Deliveries")
        : h("p", { class: "empty" }, filter.value ? `No ${filter.value} deliveries.` : "No deliveries yet: they appear here as events arrive (or send a test event)."),
      pager(pageToken, answer.nextPageToken, refreshLog, { first: "Newest", next: "Older" }),
    );
  }

  function settingsForm() {
    const form = h("form", { class: "grid-form" });
    const url = h("input", { type: "url", name: "url", required: true, value: webhook.url });
    const description = h("input", { type: "text", name: "description", value: webhook.description || "" });
    const devices = h("input", { type: "text", name: "deviceIds", value: (webhook.deviceIds || []).join(", ") });
    const rate = h("input", { type: "number", name: "rateLimitPerSecond", min: 0, max: 10000, value: String(webhook.rateLimitPerSecond || 0) });
    const ordered = h("input", { type: "checkbox", name: "ordered", checked: Boolean(webhook.ordered) });
    const headerNames = Object.keys(webhook.headers || {});
    const headers = h("textarea", { name: "headers", rows: 2, placeholder: headerNames.length ? `unchanged (${headerNames.join(", ")})` : "none" });
    const status = notice();
    const save = h("button", { type: "submit", class: "primary" }, "Save");
    form.addEventListener("submit", submitting(save, status, async () => {
      const body = {
        url: url.value.trim(),
        events: checkedEvents(form),
        description: description.value,
        deviceIds: splitList(devices.value),
        rateLimitPerSecond: Number(rate.value || 0),
        ordered: ordered.checked,
      };
      if (headers.value.trim()) body.headers = parseHeaders(headers.value);
      const mask = Object.keys(body).join(",");
      webhook = await api(base, { method: "PATCH", query: { updateMask: mask }, body });
      headers.value = "";
      status.ok("Saved.");
      drawHeader();
    }));
    form.append(
      field("URL", url),
      eventsFieldset(names, webhook.events || []),
      field("Description", description),
      field("Device ids", devices, "Comma separated; empty for every device."),
      field("Headers", headers, "Replaces every custom header: one \"Name: value\" a line. Leave empty to keep them."),
      field("Rate limit (requests/s, 0: none)", rate),
      h("label", { class: "inline" }, ordered, " Ordered per device"),
      h("div", {}, save),
      status,
    );
    return h("details", { class: "card" }, h("summary", {}, "Settings"), form);
  }

  function rotateForm() {
    const secret = h("input", { type: "text", name: "secret", required: true, autocomplete: "off", spellcheck: "false" });
    const overlap = h("input", { type: "number", name: "overlapSeconds", min: 0, max: 604800, value: "86400" });
    const status = notice();
    const submit = h("button", { type: "submit", class: "primary" }, "Rotate");
    const form = h(
      "form",
      {
        class: "grid-form",
        onsubmit: submitting(submit, status, async () => {
          webhook = await api(`${base}/rotate-secret`, {
            method: "POST",
            body: { secret: secret.value, overlapSeconds: Number(overlap.value || 0) },
          });
          secret.value = "";
          status.ok("Rotated: the new secret signs now.");
          drawHeader();
        }),
      },
      field("New secret", secret, "Give it to the receiver first: both secrets sign during the overlap."),
      h("button", { type: "button", onclick: () => (secret.value = randomSecret()) }, "Generate a secret"),
      field("Overlap (seconds; 0 switches at once)", overlap),
      h("div", {}, submit),
      status,
    );
    return h("details", { class: "card" }, h("summary", {}, "Rotate the signing secret"), form);
  }

  function recoverForm() {
    const local = (date) => new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    const since = h("input", { type: "datetime-local", name: "since", required: true, value: local(new Date(Date.now() - 3600_000)) });
    const until = h("input", { type: "datetime-local", name: "until" });
    const status = notice();
    const submit = h("button", { type: "submit", class: "primary" }, "Recover");
    const form = h(
      "form",
      {
        class: "grid-form",
        onsubmit: submitting(submit, status, async () => {
          const body = { since: new Date(since.value).toISOString() };
          if (until.value) body.until = new Date(until.value).toISOString();
          const answer = await api(`${base}/recover`, { method: "POST", body });
          status.ok(
            `Sent again: ${answer.recovered} failed ${answer.recovered === 1 ? "delivery" : "deliveries"}.` +
              (answer.more ? ` More remain: recover again from ${answer.nextSince}.` : ""),
          );
          await refreshLog();
        }),
      },
      h("p", { class: "muted" }, "Sends again every delivery that failed in the window (held instead while the webhook is disabled)."),
      field("Failed since (local time)", since),
      field("Until (empty: now)", until),
      h("div", {}, submit),
      status,
    );
    return h("details", { class: "card" }, h("summary", {}, "Recover failed deliveries"), form);
  }

  await Promise.all([refreshStats(), refreshLog()]);
  context.every(async () => {
    await Promise.all([reload(), refreshStats(), extraPages ? null : refreshLog()]);
  });
}

// ---------------------------------------------------------------- one delivery

export async function deliveryView(main, context, [deliveryId]) {
  const base = `/api/deliveries/${enc(deliveryId)}`;
  const status = notice();
  const body = h("div");
  main.append(h("div", { class: "title-row" }, h("h1", { tabindex: "-1" }, "Delivery"), h("code", {}, deliveryId)), status, body);

  let shown = "";
  async function load() {
    const d = await api(base);
    if (!context.alive) return;
    const json = JSON.stringify(d);
    if (json === shown) return; // unchanged: keep the focus where it is
    shown = json;
    const redeliver = h("button", { type: "button", class: "primary" }, "Redeliver");
    redeliver.addEventListener("click", () =>
      busy(redeliver, status, async () => {
        const record = await api(`${base}/redeliver`, { method: "POST" });
        status.ok(`Sent again: now ${record.status}${record.statusReason ? ` (${record.statusReason})` : ""}.`);
        await load();
      }),
    );
    const attempts = d.attempts || [];
    const headers = Object.entries(d.headers || {});
    replace(
      body,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Status"),
        h("dd", {}, badge(d.status), d.statusReason ? ` ${d.statusReason}` : ""),
        h("dt", {}, "Webhook"),
        h("dd", {}, h("a", { href: `#/webhooks/${enc(d.webhookId)}` }, d.webhookId)),
        h("dt", {}, "Event"),
        h("dd", {}, d.event, " ", h("code", { class: "small" }, d.eventId)),
        h("dt", {}, "Device"),
        h("dd", {}, d.deviceId ? h("a", { href: `#/devices/${enc(d.deviceId)}` }, d.deviceId) : "—"),
        h("dt", {}, "Created"),
        h("dd", {}, when(d.createdAt)),
      ),
      h("div", { class: "actions" }, redeliver),
      h("h2", {}, `Attempts (${attempts.length})`),
      attempts.length
        ? table(
            ["#", "Started", "Duration", "Status code", "Error", "Response (start)"],
            attempts.map((a) => [
              String(a.attempt),
              when(a.startedAt),
              ms(a.durationMs),
              a.statusCode ? String(a.statusCode) : "—",
              a.error || "—",
              a.responseBody ? h("code", { class: "response" }, a.responseBody) : "—",
            ]),
            "Attempts",
          )
        : h("p", { class: "empty" }, "No attempt yet."),
      h("h2", {}, "Body sent"),
      d.body !== undefined && d.body !== "" ? pre(prettyJson(d.body), "Body sent") : h("p", { class: "muted" }, "The API gave no body for this delivery."),
      headers.length ? [h("h2", {}, "Headers"), table(["Header", "Value"], headers.map(([n, v]) => [h("code", {}, n), h("code", {}, v)]), "Headers")] : null,
    );
  }

  await load();
  context.every(load);
}
