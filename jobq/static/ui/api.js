// The JSON API and the live streams.
//
// Same origin only: the session cookie is HttpOnly and goes along by itself
// (credentials: "same-origin"). Writes always carry Content-Type: application/json, which
// a cross-site form cannot send without a CORS preflight.

/** An error answer (RFC 9457 problem+json): detail is what the user reads. */
export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail || title || `HTTP ${status}`);
    this.status = status;
    this.title = title;
    this.detail = detail || title || `HTTP ${status}`;
  }
}

// Called on any 401: the app sends the user to the login view.
let unauthorizedHandler = () => {};
export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

/** fetch() a JSON route; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    options.headers["Content-Type"] = "application/json";
    if (body !== undefined) options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch {
    throw new ApiError(0, "Network error", "the server could not be reached");
  }
  const text = response.status === 204 ? "" : await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null; // a proxy's HTML error page, say
  }
  if (!response.ok) {
    const problem = data && typeof data === "object" ? data : {};
    const error = new ApiError(response.status, problem.title || response.statusText, problem.detail);
    if (response.status === 401) unauthorizedHandler(error);
    throw error;
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);
export const del = (path, body) => api("DELETE", path, body);

/** Query string from an object, empty values dropped. */
export function qs(params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") query.set(k, v);
  const s = query.toString();
  return s ? `?${s}` : "";
}

export const jobPath = (id) => `/jobs/${encodeURIComponent(id)}`;
export const queuePath = (name) => `/queues/${encodeURIComponent(name)}`;

// ----- session -----

// What the page assumes when GET /ui/session does not exist (an older server): no login.
const OPEN_SESSION = { logged_in: false, name: null, role: null, read_only: false, auth: false };

export async function fetchSession() {
  try {
    return { ...OPEN_SESSION, ...(await get("/ui/session")) };
  } catch (error) {
    if (error.status === 404) return OPEN_SESSION;
    throw error;
  }
}

// ----- live streams -----

const RECONNECT_GRACE = 5000; // ms without a connection before the page says "reconnecting"

/**
 * An EventSource that sleeps while the tab is hidden (no server work for a background tab)
 * and reconnects when it is shown again.
 *
 * handlers: {eventName: (data) => void} with data parsed from JSON.
 * onState(state): "connecting" when this code connects, "open" each time the stream (re)opens,
 *   "live" once a message arrives, "reconnecting" while the browser retries,
 *   "paused" while hidden, "down" when the server refused the stream (404, 401, wrong type):
 *   the browser does not retry then, and neither do we until the tab is shown again.
 * Returns {close()}.
 */
export function openStream(url, handlers, onState = () => {}) {
  let source = null;
  let closed = false;

  // The server ends a feed every --max-wait seconds and the browser reconnects within ~2 s: only
  // a gap longer than RECONNECT_GRACE is worth telling the user about.
  let graceTimer = null;
  const calm = () => {
    clearTimeout(graceTimer);
    graceTimer = null;
  };

  function connect() {
    if (closed || source) return;
    onState("connecting");
    source = new EventSource(url, { withCredentials: true });
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return; // a malformed event is skipped, the stream goes on
        }
        calm();
        onState("live");
        fn(data);
      });
    }
    // Also after the browser's own reconnects (a feed ends after the server's --max-wait).
    source.addEventListener("open", () => {
      calm();
      onState("open");
    });
    source.addEventListener("error", () => {
      if (!source) return;
      if (source.readyState === EventSource.CLOSED) {
        calm();
        source = null;
        onState("down");
      } else if (graceTimer === null) {
        graceTimer = setTimeout(() => onState("reconnecting"), RECONNECT_GRACE);
      }
    });
  }

  function disconnect() {
    calm();
    if (source) source.close();
    source = null;
  }

  function onVisibility() {
    if (document.hidden) {
      disconnect();
      onState("paused");
    } else {
      connect();
    }
  }

  document.addEventListener("visibilitychange", onVisibility);
  if (!document.hidden) connect();
  else onState("paused");

  return {
    close() {
      closed = true;
      disconnect();
      document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}

/** Calls fn now and every `ms` while the tab is visible; returns {stop()}. */
export function poll(fn, ms) {
  let timer = null;
  let stopped = false;
  async function tick() {
    timer = null;
    if (stopped || document.hidden) return;
    try {
      await fn();
    } finally {
      if (!stopped && !document.hidden && timer === null) timer = setTimeout(tick, ms);
    }
  }
  function onVisibility() {
    if (!document.hidden && timer === null && !stopped) tick();
  }
  document.addEventListener("visibilitychange", onVisibility);
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}

/**
 * The overview feed shared by the Overview and Queues views:
 * `event: overview` on /ui/events, or, when the server has no such stream, GET /stats,
 * GET /queues and GET /nodes every 2 s (no trends or running jobs then: those exist only in the stream).
 * onData({stats, queues, nodes, trends, workers}); onState(state) as for openStream, plus "polling".
 * Returns {close()}.
 */
export function watchOverview(onData, onState, onError) {
  let poller = null;

  function startPolling() {
    poller = poll(async () => {
      try {
        const [stats, queues, nodes] = await Promise.all([get("/stats"), get("/queues"), get("/nodes").catch(() => null)]);
        onData({ stats, queues: queues.queues, nodes: nodes ? nodes.nodes : [], trends: null, workers: null });
      } catch (error) {
        onError(error);
      }
    }, 2000);
  }

  const stream = openStream("/ui/events", { overview: onData }, (state) => {
    if (state === "down") {
      if (!poller) startPolling();
      onState("polling");
      return;
    }
    if (state === "live" && poller) {
      // The stream came back (it is retried whenever the tab is shown again).
      poller.stop();
      poller = null;
    }
    if (!poller && state !== "open") onState(state);
  });

  return {
    close() {
      stream.close();
      if (poller) poller.stop();
    },
  };
}
