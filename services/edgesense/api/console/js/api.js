// The REST API, as customers call it: the key as a bearer header, errors as
// the API says them (google.rpc.Status "message"). The key lives in this
// tab's sessionStorage only: never in a URL, a cookie or the persistent storage.

const KEY_ITEM = "edgesense.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY_ITEM);
  },
  save(key) {
    sessionStorage.setItem(KEY_ITEM, key);
  },
  clear() {
    sessionStorage.removeItem(KEY_ITEM);
  },
};

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// Listeners told when the API refuses the key (401) mid-session.
const refusedListeners = [];
export function onKeyRefused(listener) {
  refusedListeners.push(listener);
}

/** Call the API; resolves to the parsed JSON, rejects with an ApiError. */
export async function api(path, { method = "GET", query, body, key = session.key } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json", Authorization: `Bearer ${key || ""}` };
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, `The API did not answer: ${error.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message =
      data && typeof data.message === "string" && data.message
        ? data.message
        : `${response.status} ${response.statusText || "error"}`;
    const error = new ApiError(response.status, message, data);
    if (response.status === 401 && key === session.key) refusedListeners.forEach((l) => l(error));
    throw error;
  }
  return data;
}

export const enc = encodeURIComponent;
