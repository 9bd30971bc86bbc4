// jobq dashboard: the shell (header, session, messages) and the hash router.
// Views live in overview.js, jobs.js, job.js, workflow.js and schedules.js; each renders into a fresh <section> and
// registers what to stop (streams, timers) when the user navigates away.

import { ApiError, fetchSession, onUnauthorized, post } from "./api.js";
import { h, refreshRelativeTimes } from "./dom.js";
import { renderOverview, renderQueues } from "./overview.js";
import { renderJobs, renderDead, renderScheduled } from "./jobs.js";
import { renderJob } from "./job.js";
import { renderSchedules } from "./schedules.js";
import { renderWorkflow } from "./workflow.js";

const NAV = [ // [view, label, what the session must be allowed (GET /ui/session "may"), if anything]
  ["overview", "Overview"],
  ["jobs", "Jobs", "see_jobs"],
  ["queues", "Queues"],
  ["dead", "Dead letters", "see_jobs"],
  ["scheduled", "Scheduled", "see_jobs"],
  ["schedules", "Schedules", "see_schedules"],
];

const ROUTES = {
  overview: renderOverview,
  jobs: renderJobs,
  job: renderJob,
  workflows: renderWorkflow,
  queues: renderQueues,
  dead: renderDead,
  scheduled: renderScheduled,
  schedules: renderSchedules,
  login: renderLogin,
};

// The session as GET /ui/session answers it; auth=false means no tokens, no login.
let session = { logged_in: false, name: null, role: null, read_only: false, auth: false };
let cleanups = [];

// ----- messages -----

/** Shows a message under the header: kind "error" stays until closed, "info" fades after 6 s. */
export function flash(message, kind = "info") {
  const box = document.getElementById("flash");
  const item = h("div", { class: `flash flash-${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": "flash-message" },
    h("span", {}, message));
  const close = h("button", { type: "button", class: "flash-close", "aria-label": "dismiss" }, "×");
  close.addEventListener("click", () => item.remove());
  item.append(close);
  box.append(item);
  if (kind !== "error") setTimeout(() => item.remove(), 6000);
}

/** An error from an action: its problem detail, as text. */
export function flashError(error) {
  flash(error instanceof ApiError ? error.detail : String(error.message || error), "error");
}

// ----- routing -----

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const params = new URLSearchParams(cut < 0 ? "" : raw.slice(cut + 1));
  const [name, ...rest] = path.split("/");
  let arg = rest.join("/");
  try {
    arg = decodeURIComponent(arg);
  } catch {
    // a malformed escape: use the text as it is
  }
  return { name: name || "overview", arg, params };
}

export function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function needsLogin() {
  return session.auth && !session.logged_in;
}

function render() {
  for (const fn of cleanups.splice(0)) {
    try {
      fn();
    } catch (error) {
      console.warn("cleanup failed", error);
    }
  }
  // Errors belong to the view they came from; info messages (like "deleted") outlive a navigation.
  for (const el of document.querySelectorAll("#flash .flash-error")) el.remove();

  let { name, arg, params } = parseHash();
  if (needsLogin() && name !== "login") {
    // Remember where the user was going; the login view returns there.
    location.replace("#/login?" + new URLSearchParams({ next: location.hash || "#/overview" }));
    return;
  }
  const view = ROUTES[name] || renderNotFound;
  updateHeader(name === "job" || name === "workflows" ? "jobs" : name);

  const section = h("section", { class: "view", "data-view": name });
  document.getElementById("main").replaceChildren(section);
  document.title = `jobq · ${(NAV.find(([key]) => key === name) || [name, name])[1]}`;
  // The server says what this session may do ("may"), from the roles each route takes and --ui
  // read-only: the page offers only that (the server refuses the rest anyway).
  const may = new Set(session.may || []);
  const ctx = {
    root: section,
    arg,
    params,
    session,
    canAct: may.has("cancel"),
    canSeeNodes: may.has("see_nodes"),
    canRetry: may.has("retry"),
    canDelete: may.has("delete"),
    canManageQueues: may.has("manage_queues"),
    canManageSchedules: may.has("manage_schedules"),
    onCleanup: (fn) => cleanups.push(fn),
    navigate,
    flash,
    flashError,
  };
  try {
    view(ctx);
  } catch (error) {
    console.error(error);
    section.append(h("p", { class: "error" }, "This view failed: " + error.message));
  }
}

function renderNotFound({ root }) {
  root.append(h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/overview" }, "Go to the overview.")));
}

// ----- header -----

function updateHeader(current) {
  const nav = document.getElementById("nav");
  const may = new Set(session.may || []);
  nav.replaceChildren(...NAV.filter(([, , needs]) => !needs || may.has(needs)).map(([key, label]) =>
    h("a", { href: `#/${key}`, "data-testid": `nav-${key}`, "aria-current": key === current ? "page" : null }, label)));
  nav.hidden = needsLogin();

  const user = document.getElementById("user");
  user.replaceChildren();
  if (!session.auth) return; // no tokens: nobody logs in or out
  if (session.logged_in) {
    const logout = h("button", { type: "button", class: "small", "data-testid": "logout" }, "Log out");
    logout.addEventListener("click", doLogout);
    user.append(
      h("span", { class: "who", "data-testid": "user" },
        session.name || "(unnamed)", " ", h("span", { class: "role", "data-testid": "user-role" }, session.role || "")),
      ...(session.read_only ? [h("span", { class: "badge", "data-testid": "read-only" }, "read only")] : []),
      logout,
    );
  } else if (current !== "login") {
    user.append(h("a", { href: "#/login", "data-testid": "login-link" }, "Log in"));
  }
}

async function refreshSession() {
  try {
    session = await fetchSession();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) flashError(error);
  }
}

async function doLogout() {
  try {
    await post("/ui/logout");
  } catch (error) {
    flashError(error);
  }
  await refreshSession();
  session.logged_in = false;
  navigate("#/login");
}

// ----- login -----

function renderLogin({ root, params }) {
  root.append(h("h1", {}, "Log in"));
  if (!session.auth) {
    root.append(h("p", {}, "This server runs without tokens: no login is needed. ", h("a", { href: "#/overview" }, "Go to the overview.")));
    return;
  }
  if (session.logged_in) {
    root.append(h("p", {}, `Logged in as ${session.name || "(unnamed)"} (${session.role || "no role"}). `,
      h("a", { href: "#/overview" }, "Go to the overview.")));
    return;
  }
  // Only a route of this page: "next" comes from the URL, so never follow it elsewhere.
  const next = params.get("next");
  const target = next && next.startsWith("#/") && !next.startsWith("#/login") ? next : "#/overview";

  const token = h("input", {
    type: "password", id: "login-token", name: "token", autocomplete: "current-password",
    required: true, "data-testid": "login-token", spellcheck: "false",
  });
  const submit = h("button", { type: "submit", class: "primary", "data-testid": "login-submit" }, "Log in");
  const error = h("p", { class: "error", "data-testid": "login-error", role: "alert", hidden: true });
  const form = h("form", { class: "login", "data-testid": "login-form" },
    // Password managers (and Chrome's form check) expect a user name beside a password field.
    h("input", { type: "text", name: "username", autocomplete: "username", value: "jobq", hidden: true, "aria-hidden": "true", tabindex: "-1" }),
    h("label", { for: "login-token" }, "API token"),
    token,
    h("p", { class: "muted" }, "The token is sent once; the server keeps you logged in with a cookie."),
    submit,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.hidden = true;
    try {
      await post("/ui/login", { token: token.value });
      token.value = "";
      await refreshSession();
      navigate(target);
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.detail : String(e);
      error.hidden = false;
      submit.disabled = false;
      token.select();
    }
  });
  root.append(form);
  token.focus();
}

// ----- start -----

onUnauthorized(() => {
  // The cookie expired or was revoked: log in again, then come back here.
  if (!session.auth) return;
  session.logged_in = false;
  if (parseHash().name !== "login") render();
});

async function start() {
  await refreshSession();
  window.addEventListener("hashchange", render);
  // Relative times ("in 3m 20s") keep counting without re-rendering the view.
  setInterval(() => refreshRelativeTimes(), 1000);
  render();
}

start();
