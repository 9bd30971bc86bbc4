// Job lists: Jobs (filters, search, paging, selection, bulk actions), Dead letters (dead and
// failed tabs) and Scheduled (when each job runs). The filters live in the URL hash, so a
// list can be bookmarked and the back button returns to the previous page of results.
// A list may be narrowed to one workflow's jobs (?workflow=) or one job's children (?parent=).

import { del, get, jobPath, post, qs } from "./api.js";
import {
  CANCELLABLE, STATUSES, button, fmtNumber, h, jobHref, relTime, route, statusBadge, timeEl, workflowHref,
} from "./dom.js";

const PAGE_SIZE = 50;

// What each per-job action allows (the server checks again; this only spares pointless calls).
const ALLOWED = {
  retry: (s) => s === "failed" || s === "dead",
  cancel: (s) => CANCELLABLE.has(s),
  delete: (s) => s !== "processing",
};

export function renderJobs(ctx) {
  jobList(ctx, { title: "Jobs", base: "#/jobs", status: ctx.params.get("status") || "" });
}

export function renderDead(ctx) {
  const status = ctx.params.get("status") === "failed" ? "failed" : "dead";
  jobList(ctx, {
    title: "Dead letters", base: "#/dead", status, fixedStatus: true,
    tabs: [["dead", "Dead"], ["failed", "Failed"]],
    intro: "Dead jobs used every attempt (or were lost too often); failed jobs had a single attempt. Retry runs them again.",
  });
}

export function renderScheduled(ctx) {
  jobList(ctx, {
    title: "Scheduled", base: "#/scheduled", status: "scheduled", fixedStatus: true, scheduled: true,
    intro: "Jobs waiting for their time; each becomes pending within a second of it.",
  });
}

/**
 * One list view. opts: title, base (hash route), status, fixedStatus (no status select),
 * tabs ([[status, label]]), scheduled (show next run), intro.
 */
function jobList(ctx, opts) {
  const p = ctx.params;
  const filters = {
    status: opts.status, queue: p.get("queue") || "", type: p.get("type") || "", q: p.get("q") || "",
    workflow: p.get("workflow") || "", parent: p.get("parent") || "",
  };
  const cursor = p.get("cursor") || "";

  // The route for other filters (always from the first page: a cursor belongs to one filter).
  const hrefFor = (f, extra = {}) => route(opts.base, {
    status: opts.fixedStatus ? (opts.tabs && f.status !== opts.tabs[0][0] ? f.status : "") : f.status,
    queue: f.queue, type: f.type, q: f.q, workflow: f.workflow, parent: f.parent, ...extra,
  });

  const root = ctx.root;
  // Lists are not live (a page would shift under the reader's selection): refresh on demand.
  const refresh = button("Refresh", "refresh", () => load(), { class: "small" });
  root.append(h("div", { class: "view-head" }, h("h1", {}, opts.title), refresh));
  if (opts.tabs) root.append(tabs(opts.tabs, filters, hrefFor));
  if (opts.intro) root.append(h("p", { class: "muted intro" }, opts.intro));
  if (filters.workflow || filters.parent) root.append(scopeNote(filters, hrefFor));
  root.append(filterForm(ctx, opts, filters, hrefFor), findById(ctx));

  const toolbar = h("div", { class: "toolbar", "data-testid": "job-toolbar" });
  const results = h("div", { class: "results" }, h("p", { class: "muted" }, "Loading…"));
  const pager = h("div", { class: "pager" });
  root.append(toolbar, results, pager);

  const selected = new Set();
  let jobs = [];

  async function load() {
    selected.clear();
    let answer;
    try {
      answer = await get("/jobs" + qs({ ...filters, cursor, limit: PAGE_SIZE }));
    } catch (error) {
      results.replaceChildren(h("p", { class: "error", "data-testid": "list-error", role: "alert" }, error.detail || String(error)));
      pager.replaceChildren();
      toolbar.replaceChildren();
      return;
    }
    jobs = answer.jobs || [];
    // Scheduled and retrying jobs wait for a time: show it instead of when they were created.
    const timed = opts.scheduled || filters.status === "scheduled" || filters.status === "retrying";
    results.replaceChildren(jobsTable(jobs, { ...opts, scheduled: timed }, ctx.canAct, selected, updateToolbar));
    pager.replaceChildren(...pagerParts(answer, filters, cursor, hrefFor));
    updateToolbar();
  }

  // The toolbar depends on the selection: rebuilt on every checkbox change.
  function updateToolbar() {
    if (!ctx.canAct) return;
    const chosen = jobs.filter((j) => selected.has(j.id));
    toolbar.replaceChildren(
      h("span", { class: "muted", "data-testid": "selection-count" }, `${chosen.length} selected`),
      ctx.canRetry ? perIdButton(ctx, "Retry selected", "bulk-retry", "retry", chosen, load) : "",
      perIdButton(ctx, "Cancel selected", "bulk-cancel", "cancel", chosen, load),
      ctx.canDelete ? perIdButton(ctx, "Delete selected", "bulk-delete", "delete", chosen, load) : "",
      ...allMatchingButtons(ctx, filters, load),
    );
  }

  load();
}

function tabs(list, filters, hrefFor) {
  return h("nav", { class: "tabs", "aria-label": "status" }, list.map(([status, label]) =>
    h("a", { href: hrefFor({ ...filters, status }), "data-testid": `tab-${status}`, "aria-current": filters.status === status ? "page" : null }, label)));
}

// ----- filters -----

function filterForm(ctx, opts, filters, hrefFor) {
  const status = h("select", { name: "status", id: "filter-status", "data-testid": "filter-status" },
    h("option", { value: "" }, "any status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s)));
  const queue = h("input", { name: "queue", id: "filter-queue", list: "queue-names", value: filters.queue, placeholder: "any queue", "data-testid": "filter-queue", autocomplete: "off" });
  const type = h("input", { name: "type", id: "filter-type", value: filters.type, placeholder: "any type", "data-testid": "filter-type", autocomplete: "off" });
  const search = h("input", { type: "search", name: "q", id: "search-input", value: filters.q, placeholder: "text in type, error or payload", "data-testid": "search-input" });
  const names = h("datalist", { id: "queue-names" });
  // Queue names for the suggestion list: a nicety, so a failure is ignored.
  get("/queues").then((a) => names.replaceChildren(...(a.queues || []).map((q) => h("option", { value: q.name })))).catch(() => {});

  const form = h("form", { class: "filters", "data-testid": "job-filters", role: "search" },
    opts.fixedStatus ? null : field("Status", status),
    field("Queue", queue), names,
    field("Type", type),
    field("Search", search),
    h("button", { type: "submit", "data-testid": "filter-apply" }, "Apply"),
    (filters.queue || filters.type || filters.q || (!opts.fixedStatus && filters.status))
      ? h("a", { href: hrefFor({ ...filters, status: opts.fixedStatus ? filters.status : "", queue: "", type: "", q: "" }), "data-testid": "filter-reset" }, "reset")
      : null,
  );
  const apply = () => ctx.navigate(hrefFor({
    status: opts.fixedStatus ? filters.status : status.value,
    queue: queue.value.trim(), type: type.value.trim(), q: search.value.trim(),
    workflow: filters.workflow, parent: filters.parent,
  }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  status.addEventListener("change", apply);
  return form;
}

/** "Jobs of workflow w-1 · all jobs": what narrows the list besides the form, and the way out of it. */
function scopeNote(filters, hrefFor) {
  return h("p", { class: "scope", "data-testid": "list-scope" },
    filters.workflow ? ["Jobs of workflow ", h("a", { href: workflowHref(filters.workflow) }, filters.workflow)] : null,
    filters.workflow && filters.parent ? " that " : null,
    filters.parent ? [filters.workflow ? "depend on " : "Jobs that depend on ", h("a", { href: jobHref(filters.parent) }, filters.parent)] : null,
    " · ", h("a", { href: hrefFor({ ...filters, workflow: "", parent: "" }), "data-testid": "scope-reset" }, "all jobs"));
}

function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

function findById(ctx) {
  const input = h("input", { name: "id", id: "find-id", placeholder: "job id", "data-testid": "find-id", autocomplete: "off", spellcheck: "false" });
  const form = h("form", { class: "find", "data-testid": "find-form" },
    field("Find by id", input), h("button", { type: "submit", "data-testid": "find-submit" }, "Open"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (id) ctx.navigate(jobHref(id));
  });
  return form;
}

// ----- table -----

function jobsTable(jobs, opts, canAct, selected, onSelect) {
  if (!jobs.length) return h("p", { class: "muted", "data-testid": "no-jobs" }, "No jobs on this page.");
  const boxes = [];
  const all = canAct ? h("input", { type: "checkbox", "data-testid": "select-all", "aria-label": "select all on this page" }) : null;
  if (all) {
    all.addEventListener("change", () => {
      for (const box of boxes) {
        box.checked = all.checked;
        toggle(box);
      }
      onSelect();
    });
  }
  function toggle(box) {
    const id = box.getAttribute("data-job-id");
    if (box.checked) selected.add(id);
    else selected.delete(id);
  }

  const head = h("tr", {},
    canAct ? h("th", { class: "check" }, all) : null,
    ["ID", "Type", "Queue", "Status", "Attempts"].map((t) => h("th", {}, t)),
    opts.scheduled ? [h("th", {}, "Runs at"), h("th", {}, "Runs")] : h("th", {}, "Created"),
    h("th", {}, "Error"));

  const rows = jobs.map((job) => {
    let box = null;
    if (canAct) {
      box = h("input", { type: "checkbox", "data-testid": "select-job", "aria-label": "select job" });
      box.setAttribute("data-job-id", job.id);
      box.addEventListener("change", () => {
        toggle(box);
        all.checked = boxes.every((b) => b.checked);
        onSelect();
      });
      boxes.push(box);
    }
    const row = h("tr", { "data-testid": "job-row" },
      canAct ? h("td", { class: "check" }, box) : null,
      h("td", { class: "id" }, h("a", { href: jobHref(job.id), "data-testid": "job-link" }, job.id)),
      h("td", {}, job.type),
      h("td", {}, job.queue),
      h("td", {}, statusBadge(job.status)),
      h("td", { class: "num" }, `${job.attempts ?? 0} / ${job.max_attempts ?? "?"}`),
      opts.scheduled
        ? [h("td", {}, timeEl(job.next_run_at)), h("td", {}, relTime(job.next_run_at, "runs-in"))]
        : h("td", {}, timeEl(job.created_at)),
      h("td", { class: "err" }, job.error ? h("span", { title: job.error }, truncate(job.error, 120)) : ""),
    );
    row.setAttribute("data-job-id", job.id);
    row.setAttribute("data-status", job.status);
    return row;
  });
  return h("div", { class: "table-wrap" }, h("table", { "data-testid": "jobs-table" }, h("thead", {}, head), h("tbody", {}, rows)));
}

function truncate(text, n) {
  const s = String(text);
  return s.length > n ? s.slice(0, n) + "…" : s;
}

function pagerParts(answer, filters, cursor, hrefFor) {
  const parts = [];
  if (typeof answer.scanned === "number") parts.push(h("span", { class: "muted", "data-testid": "scanned" }, `searched ${fmtNumber(answer.scanned)} jobs`));
  if (cursor) parts.push(h("a", { href: hrefFor(filters), "data-testid": "first-page" }, "« first page"));
  if (answer.next_cursor) {
    // A selective filter may leave a page short (even empty) with more to read after it.
    if (!(answer.jobs || []).length) parts.push(h("span", { class: "muted" }, "Nothing matched in this stretch; there are more jobs to look through."));
    parts.push(h("a", { href: hrefFor(filters, { cursor: answer.next_cursor }), class: "button", "data-testid": "next-page" }, "next page »"));
  } else if (cursor || (answer.jobs || []).length) {
    parts.push(h("span", { class: "muted", "data-testid": "end-of-list" }, "end of list"));
  }
  return parts;
}

// ----- actions -----

const VERBS = { retry: ["Retried", "retry"], cancel: ["Cancelled", "cancel"], delete: ["Deleted", "delete"] };

/** "Retry selected" and friends: one call per job, sequentially (a page holds at most 50). */
function perIdButton(ctx, label, testid, action, chosen, reload) {
  const eligible = chosen.filter((j) => ALLOWED[action](j.status));
  const btn = button(`${label}${chosen.length ? ` (${eligible.length})` : ""}`, testid, async () => {
    if (action !== "retry" && !confirm(`${label.split(" ")[0]} ${eligible.length} job(s)?`)) return;
    btn.disabled = true;
    let done = 0;
    const errors = [];
    for (const job of eligible) {
      try {
        if (action === "delete") await del(jobPath(job.id));
        else await post(`${jobPath(job.id)}/${action}`);
        done++;
      } catch (error) {
        errors.push(error.detail || String(error));
      }
    }
    const skipped = chosen.length - eligible.length;
    ctx.flash(`${VERBS[action][0]} ${done} job(s)${skipped ? `; skipped ${skipped} in a state that cannot ${VERBS[action][1]}` : ""}.`);
    if (errors.length) ctx.flash(`${errors.length} failed: ${errors[0]}`, "error");
    reload();
  }, { class: action === "retry" ? "" : "danger", disabled: eligible.length === 0 });
  return btn;
}

/**
 * "Retry all matching" / "Delete all matching": the server's bulk routes act on every job with
 * the status (and queue, type, search text) filter, not just this page. Each call acts on a
 * bounded batch and answers where the next goes on (cursor): the page follows it, up to
 * MAX_BULK_CALLS calls, so a big store is worked through in many short requests.
 */
const MAX_BULK_CALLS = 100;

function allMatchingButtons(ctx, filters, reload) {
  // The bulk routes filter by status, queue, type and text only: within a workflow they would reach further.
  if (!filters.status || filters.workflow || filters.parent) return [];
  const body = { status: filters.status };
  if (filters.queue) body.queue = filters.queue;
  if (filters.type) body.type = filters.type;
  if (filters.q) body.q = filters.q;
  const describe = [`status ${filters.status}`, filters.queue && `queue ${filters.queue}`, filters.type && `type ${filters.type}`,
    filters.q && `holding "${filters.q}"`].filter(Boolean).join(", ");

  const run = async (btn, path, verb) => {
    btn.disabled = true;
    let done = 0, skipped = 0, more = false, cursor = null;
    try {
      for (let calls = 0; calls < MAX_BULK_CALLS; calls++) {
        const answer = (await post(path, cursor ? { ...body, cursor } : body)) || {};
        done += answer.retried ?? answer.deleted ?? 0;
        skipped += answer.skipped || 0;
        more = !!answer.more;
        cursor = answer.cursor;
        if (!more || !cursor) break;
      }
      let message = `${verb} ${fmtNumber(done)} job(s) (${describe})`;
      if (skipped) message += `, skipped ${fmtNumber(skipped)}`;
      if (more) message += " — more match: run it again for the next batches";
      ctx.flash(message + ".");
    } catch (error) {
      if (done) ctx.flash(`${verb} ${fmtNumber(done)} job(s) before an error.`);
      ctx.flashError(error);
    }
    reload();
  };

  const buttons = [];
  if (ctx.canRetry && ALLOWED.retry(filters.status)) {
    const retry = button("Retry all matching", "bulk-retry-all", () => run(retry, "/jobs/retry", "Retried"));
    buttons.push(retry);
  }
  if (ctx.canDelete && ALLOWED.delete(filters.status)) {
    const remove = button("Delete all matching", "bulk-delete-all", () => {
      if (!confirm(`Delete every job with ${describe}, not only this page? This cannot be undone.`)) return;
      run(remove, "/jobs/delete", "Deleted");
    }, { class: "danger" });
    buttons.push(remove);
  }
  return buttons;
}
