// The console's shell: sign-in, hash routing, polling while a view is shown.

import { api, onKeyRefused, session } from "./api.js";
import { field, h, notice, replace } from "./dom.js";
import { alertsView, ruleView, rulesView } from "./alerts.js";
import { deviceView, devicesView } from "./devices.js";
import { overviewView } from "./overview.js";
import { deliveryView, webhookView, webhooksView } from "./webhooks.js";

const POLL_MS = 5000;
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOutButton = document.getElementById("signout");

const routes = [
  [/^\/overview$/, overviewView],
  [/^\/webhooks$/, webhooksView],
  [/^\/webhooks\/([^/]+)$/, webhookView],
  [/^\/deliveries\/([^/]+)$/, deliveryView],
  [/^\/devices$/, devicesView],
  [/^\/devices\/([^/]+)$/, deviceView],
  [/^\/alerts$/, alertsView],
  [/^\/rules$/, rulesView],
  [/^\/rules\/([^/]+)$/, ruleView],
];

let current = null; // the shown view's context

/** What a view gets: where to draw, and polling/cleanup tied to its lifetime. */
class ViewContext {
  constructor() {
    this.alive = true;
    this.cleanups = [];
    this.pollers = [];
  }
  onLeave(cleanup) {
    this.cleanups.push(cleanup);
  }
  /** Run `refresh` every POLL_MS while the view is shown and the tab visible. */
  every(refresh, ms = POLL_MS) {
    const poller = { refresh, ms, timer: null, running: false };
    this.pollers.push(poller);
    this.schedule(poller);
  }
  /** Refresh now, then again POLL_MS after it ends (never two at once). */
  async run(poller) {
    poller.running = true;
    try {
      await poller.refresh();
    } catch (error) {
      console.warn("refresh failed:", error.message);
    } finally {
      poller.running = false;
      this.schedule(poller);
    }
  }
  schedule(poller) {
    clearTimeout(poller.timer);
    if (!this.alive || document.hidden) return;
    poller.timer = setTimeout(() => {
      if (this.alive && !document.hidden && !poller.running) this.run(poller);
    }, poller.ms);
  }
  /** The tab is visible again: refresh at once rather than in POLL_MS. */
  resume() {
    for (const poller of this.pollers) {
      clearTimeout(poller.timer);
      if (!poller.running) this.run(poller);
    }
  }
  leave() {
    this.alive = false;
    for (const poller of this.pollers) clearTimeout(poller.timer);
    for (const cleanup of this.cleanups) cleanup();
  }
}

document.addEventListener("visibilitychange", () => {
  if (current && !document.hidden) current.resume();
});

function path() {
  const hash = window.location.hash.replace(/^#/, "");
  return hash.startsWith("/") ? hash.split("?")[0] : "/overview";
}

function query() {
  const hash = window.location.hash;
  const at = hash.indexOf("?");
  return new URLSearchParams(at >= 0 ? hash.slice(at + 1) : "");
}

async function render() {
  if (current) current.leave();
  current = null;
  if (!session.key) {
    showSignIn();
    return;
  }
  nav.hidden = false;
  signOutButton.hidden = false;
  const where = path();
  for (const link of nav.querySelectorAll("a")) {
    const active = where === link.hash.slice(1) || where.startsWith(`${link.hash.slice(1)}/`);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const context = new ViewContext();
  current = context;
  const focused = document.activeElement;
  // Each view draws into a container of its own: a view left while it still
  // awaits the API draws, when the answer comes, into a detached element,
  // never into the page shown after it.
  const page = h("div", { class: "page" });
  replace(main, page);
  for (const [pattern, view] of routes) {
    const match = pattern.exec(where);
    if (match) {
      let params;
      try {
        params = match.slice(1).map(decodeURIComponent);
      } catch {
        break; // a malformed %-escape (#/webhooks/%E0): no such page
      }
      try {
        await view(page, context, params, query());
      } catch (error) {
        if (context.alive) page.append(h("p", { class: "error", role: "alert" }, error.message));
      }
      // To the new page's heading, unless the user moved the focus meanwhile.
      if (context.alive && (document.activeElement === focused || document.activeElement === document.body)) {
        focusHeading();
      }
      return;
    }
  }
  page.append(h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/overview" }, "Overview")));
  focusHeading();
}

function focusHeading() {
  const heading = main.querySelector("h1");
  if (heading) heading.focus({ preventScroll: true });
}

function showSignIn(message) {
  nav.hidden = true;
  signOutButton.hidden = true;
  // A text field masked by CSS, not a password field: a browser's password
  // manager offers to save what a password field held, and a saved key
  // would outlive the tab (README, Console).
  const key = h("input", {
    type: "text",
    name: "api-key",
    class: "secret",
    autocomplete: "off",
    autocapitalize: "off",
    spellcheck: "false",
    required: true,
  });
  const status = notice();
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (event) => {
        event.preventDefault();
        const value = key.value.trim();
        if (!value) return;
        submit.disabled = true;
        status.clear();
        try {
          // Any call the key may make proves it; this one is cheap.
          await api("/api/webhooks", { query: { pageSize: 1 }, key: value });
          session.save(value);
          key.value = "";
          await render();
        } catch (error) {
          status.error(error);
          key.select();
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", { tabindex: "-1" }, "Sign in"),
    h(
      "p",
      {},
      "With an API key of your project (EDGESENSE_API_KEYS; `make run` writes the development key to var/dev-api-key). ",
      "It is kept for this tab only and sent as the Authorization header.",
    ),
    field("API key", key),
    submit,
    status,
  );
  replace(main, form);
  if (message) status.error(message);
  key.focus();
}

signOutButton.addEventListener("click", () => {
  session.clear();
  if (current) current.leave();
  current = null;
  window.location.hash = "#/overview";
  showSignIn();
});

onKeyRefused((error) => {
  session.clear();
  if (current) current.leave();
  current = null;
  showSignIn(error);
});

window.addEventListener("hashchange", render);
render();
