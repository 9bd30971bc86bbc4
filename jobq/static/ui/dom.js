// DOM and formatting helpers.
//
// Every string that reaches the page goes through textContent or setAttribute: job payloads,
// errors, log lines, queue names and job types come from clients and may hold markup, so no
// HTML is ever parsed from data (no innerHTML anywhere in this UI).

// Properties set as DOM properties rather than attributes (their live state matters).
const PROPS = new Set(["value", "checked", "disabled", "hidden", "selected", "open", "indeterminate"]);

/**
 * Build an element: h("a", {href: "#/x", class: "link"}, "text", child, [more, children]).
 * Strings and numbers become text nodes; null/undefined/false children are skipped.
 * Event handlers are never attributes: attach them with el.addEventListener.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** The same for SVG elements (they need the SVG namespace). */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (/^on/i.test(key)) throw new Error(`h(): event handler attribute ${key} is not allowed`);
    if (key === "class") el.setAttribute("class", value);
    else if (PROPS.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children, with the same child rules as h(). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A button that runs onClick; data-testid given as testid. */
export function button(label, testid, onClick, attrs = {}) {
  const el = h("button", { type: "button", "data-testid": testid, ...attrs }, label);
  el.addEventListener("click", onClick);
  return el;
}

/** A link to a route of this page, e.g. link("#/job/" + encodeURIComponent(id), id). */
export function link(href, ...children) {
  return h("a", { href }, ...children);
}

/** The hash route of one job: ids are client-chosen, so always encoded. */
export function jobHref(id) {
  return "#/job/" + encodeURIComponent(id);
}

/** A hash route with query parameters, empty values dropped: route("#/jobs", {status: "dead"}). */
export function route(base, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") query.set(k, v);
  const qs = query.toString();
  return qs ? `${base}?${qs}` : base;
}

/** The hash route of one workflow. */
export function workflowHref(id) {
  return "#/workflows/" + encodeURIComponent(id);
}

// ----- job states -----

/** Every job status, in the order a job meets them (jobq/job.py JobStatus). */
export const STATUSES = ["waiting", "pending", "scheduled", "processing", "retrying", "completed", "failed", "dead", "cancelled"];
/** The statuses a job never leaves by itself. */
export const FINISHED = new Set(["completed", "failed", "dead", "cancelled"]);
/** The statuses a cancel accepts: every one a job has not finished in. */
export const CANCELLABLE = new Set(["waiting", "pending", "scheduled", "retrying", "processing"]);

/** A class-safe name for a status: one of STATUSES, else "unknown" (so odd values cannot inject class names). */
export function statusClass(status) {
  return STATUSES.includes(status) ? status : "unknown";
}

export function statusBadge(status) {
  return h("span", { class: `badge badge-${statusClass(status)}`, "data-testid": "job-status" }, status ?? "—");
}

// ----- time -----

/** "2026-12-01 19:06:33" in local time, or "—". */
export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A <time> element showing local time, with the exact UTC value as its tooltip. */
export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: iso }, fmtTime(iso));
}

/** Seconds as "3m 20s", "2h 5m", "450ms". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.abs(seconds);
  if (s === 0) return "0";
  if (s < 0.01) return `${Number((s * 1000).toFixed(2))}ms`;
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)}s`;
  const total = Math.round(s);
  const d = Math.floor(total / 86400), hr = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60), sec = total % 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  return `${m}m ${sec}s`;
}

/** "in 3m 20s" / "3m 20s ago" relative to now. */
export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return "";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return "";
  const diff = (t - now) / 1000;
  if (Math.abs(diff) < 1) return "now";
  return diff > 0 ? `in ${fmtDuration(diff)}` : `${fmtDuration(diff)} ago`;
}

/** Seconds between two timestamps, or null. */
export function secondsBetween(startIso, endIso) {
  if (!startIso || !endIso) return null;
  return (new Date(endIso).getTime() - new Date(startIso).getTime()) / 1000;
}

export function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined) return "—";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

// ----- JSON -----

const COLLAPSE_AT = 2048; // characters shown before "show all"

/**
 * Pretty JSON in a <pre>, via textContent. Values longer than ~2 kB show their start and a
 * "show all" button, so a megabyte payload does not freeze the page until asked for.
 */
export function jsonBlock(value, testid) {
  const text = value === undefined ? "undefined" : JSON.stringify(value, null, 2);
  const pre = h("pre", { class: "json", "data-testid": testid });
  if (text.length <= COLLAPSE_AT) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = text.slice(0, COLLAPSE_AT) + "\n…";
  const more = button(`show all (${fmtNumber(text.length)} characters)`, "show-all", () => {
    pre.textContent = text;
    more.remove();
  }, { class: "small" });
  return h("div", { class: "json-wrap" }, pre, more);
}

/**
 * "in 3m 20s" that keeps counting: app.js refreshes every .rel[data-at] once a second.
 */
export function relTime(iso, testid) {
  return h("span", { class: "rel", "data-at": iso || "", "data-testid": testid }, fmtRelative(iso));
}

export function refreshRelativeTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll(".rel[data-at]")) {
    const text = fmtRelative(el.getAttribute("data-at"), now);
    if (el.textContent !== text) el.textContent = text;
  }
}
