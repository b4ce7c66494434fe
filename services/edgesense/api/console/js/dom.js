// A few DOM helpers. Text always goes in as text nodes (never as HTML), so
// nothing the API returns can become markup.

/** h("a", {href: "#/x", class: "c", onclick: f}, "text", child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "value" || name === "checked" || name === "selected") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

// Appends `children` to `el` as h() does: null, undefined and false are
// skipped (the DOM's own append would show them as text), arrays flattened.
export function add(el, ...children) {
  append(el, children);
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let unique = 0;
export function uid(prefix = "f") {
  unique += 1;
  return `${prefix}-${unique}`;
}

/** A labelled form field: the label points at the control by id. */
export function field(label, control, hint) {
  control.id = control.id || uid();
  const hintEl = hint ? h("small", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
}

export function badge(status) {
  return h("span", { class: `badge badge-${String(status || "unknown").toLowerCase()}` }, status || "unknown");
}

/** Where messages of a form or a view go; errors in role=alert so they are announced. */
export function notice() {
  const el = h("div", { class: "notice", "aria-live": "polite" });
  el.error = (error) => {
    const status = error && error.status ? ` (HTTP ${error.status})` : "";
    replace(el, h("p", { class: "error", role: "alert" }, `${error.message || error}${status}`));
  };
  el.ok = (text) => replace(el, h("p", { class: "ok", role: "status" }, text));
  el.clear = () => replace(el);
  return el;
}

export function table(headers, rows, caption) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))),
    ),
  );
}

/**
 * The buttons under a page of a listing: back to the first page (when not on
 * it) and on to the next (when the API gave a nextPageToken). `load(token)`
 * shows the page of that token ("" for the first).
 */
export function pager(pageToken, nextPageToken, load, { first = "First page", next = "Next page" } = {}) {
  return h(
    "div",
    { class: "pager" },
    pageToken ? h("button", { type: "button", onclick: () => load("") }, first) : null,
    nextPageToken ? h("button", { type: "button", onclick: () => load(nextPageToken) }, next) : null,
  );
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return h("time", { datetime: iso, title: date.toISOString() }, `${date.toLocaleString()} (${ago(date)})`);
}

export function ago(date) {
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  const abs = Math.abs(seconds);
  const [n, unit] =
    abs < 60 ? [abs, "s"] : abs < 3600 ? [abs / 60, "min"] : abs < 86400 ? [abs / 3600, "h"] : [abs / 86400, "d"];
  const text = `${Math.floor(n)} ${unit}`;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

export function percent(rate) {
  return rate === undefined || rate === null ? "—" : `${(rate * 100).toFixed(rate >= 0.9995 || rate === 0 ? 0 : 1)}%`;
}

export function ms(value) {
  return value === undefined || value === null ? "—" : `${value} ms`;
}

export function list(values) {
  return values && values.length ? values.join(", ") : "—";
}

export function pre(text, label) {
  return h("pre", { class: "code", tabindex: "0", "aria-label": label }, text);
}

/** Pretty JSON of a string that may hold JSON. */
export function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** A button that asks once more before `action` (no window.confirm). */
export function confirmButton(label, question, action, cls = "danger") {
  const button = h("button", { type: "button", class: cls }, label);
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = question;
      button.setAttribute("aria-pressed", "true");
      return;
    }
    armed = false;
    button.textContent = label;
    button.removeAttribute("aria-pressed");
    await action();
  });
  button.addEventListener("blur", () => {
    armed = false;
    button.textContent = label;
    button.removeAttribute("aria-pressed");
  });
  return button;
}

/**
 * Run `work` (an action's API calls) with `button` disabled meanwhile; what it
 * throws (the API's refusal, a field the form could not read) is shown in
 * `status`, a notice(), as the API words it.
 */
export async function busy(button, status, work) {
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    status.error(error);
  } finally {
    button.disabled = false;
  }
}

/** A form's submit handler: no page load, the last message cleared, then busy(). */
export function submitting(button, status, work) {
  return (event) => {
    event.preventDefault();
    status.clear();
    return busy(button, status, work);
  };
}
