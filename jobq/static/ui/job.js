// One job: its fields, its workflow (parents, children), progress, payload and result, every
// attempt, logs that grow live, and the actions its state allows. Live through
// /ui/events/jobs/<id>; polling when the server has no such stream. A job waiting for its parents
// also reads them every 2 s (they change without the job changing).

import { del, get, jobPath, openStream, poll, post } from "./api.js";
import {
  CANCELLABLE, FINISHED, button, fill, fmtDuration, fmtNumber, h, jobHref, jsonBlock, relTime, route, secondsBetween,
  statusBadge, timeEl, workflowHref,
} from "./dom.js";

const PARENTS_POLL_MS = 2000;

export function renderJob(ctx) {
  const id = ctx.arg;
  const root = ctx.root;
  if (!id) {
    root.append(h("h1", {}, "Job"), h("p", {}, "No job id given."));
    return;
  }

  // Sections re-render only when their part of the job changed, so an expanded payload or an
  // open traceback is not reset by every progress update.
  const sections = {
    head: h("div", { class: "view-head" }),
    actions: h("div", { class: "toolbar", "data-testid": "job-actions" }),
    fields: h("div", { class: "fields-wrap" }),
    family: h("div", { class: "family-wrap" }),
    progress: h("div", { class: "progress-wrap" }),
    data: h("div", { class: "data" }),
    history: h("div", { class: "history-wrap" }),
  };
  const logList = h("ol", { class: "log", "data-testid": "live-log", "aria-live": "polite" });
  const logState = h("span", { class: "live", "data-testid": "log-status" });
  const logs = newLogBook(logList);
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "« jobs")),
    sections.head, sections.actions, sections.fields, sections.family, sections.progress, sections.data, sections.history,
    h("div", { class: "view-head" }, h("h2", {}, "Logs"), logState),
    h("div", { class: "log-box" }, logList),
  );
  sections.head.append(h("h1", {}, "Job ", h("code", { "data-testid": "job-id" }, id)));

  let job = null;
  const drawn = {};
  let live = null; // the stream, or the poller that stands in for it
  const family = familyBox(sections.family, id);
  let parentsPoll = null; // while the job waits for its parents

  function show(next) {
    job = next;
    const parts = {
      head: [job.status],
      actions: [job.status],
      fields: fieldsKey(job),
      family: [job.status, job.workflow, job.children],
      progress: [job.progress, job.progress_note, job.status],
      data: [job.payload, job.result, job.error],
      history: job.history,
    };
    for (const [name, value] of Object.entries(parts)) {
      const key = JSON.stringify(value);
      if (drawn[name] === key) continue;
      drawn[name] = key;
      if (name === "family") family.update(job);
      else RENDER[name](sections[name], job, ctx, actionHooks);
    }
    followParents();
    if (FINISHED.has(job.status)) {
      stopLive();
      logState.textContent = `job ${job.status}`;
      logState.setAttribute("data-state", "finished");
    }
  }

  const actionHooks = {
    // After retry or cancel: show the answer and follow the job again.
    updated(next) {
      show(next);
      if (!FINISHED.has(next.status)) startLive();
    },
    deleted() {
      stopLive();
      ctx.navigate("#/jobs");
      ctx.flash(`Deleted job ${id}.`);
    },
  };

  function stopLive() {
    if (live) live.close();
    live = null;
  }

  // The job's feed says when the job changes; its parents change on their own (and parents_left
  // with them, which is no change of status): while it waits, both are read again every 2 s.
  function followParents() {
    const waiting = job.status === "waiting";
    if (waiting && !parentsPoll) {
      let first = true; // the job and its parents were just read: the first tick has nothing to do
      parentsPoll = poll(async () => {
        if (first) {
          first = false;
          return;
        }
        try {
          const drawnBefore = drawn.family;
          show(await get(jobPath(id)));
          if (parentsPoll && drawn.family === drawnBefore) await family.loadParents(); // else show() read them
        } catch (error) {
          stopParents();
          ctx.flashError(error);
        }
      }, PARENTS_POLL_MS);
    } else if (!waiting) {
      stopParents();
    }
  }

  function stopParents() {
    if (parentsPoll) parentsPoll.stop();
    parentsPoll = null;
  }

  function setLogState(state) {
    const labels = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", paused: "paused (tab hidden)", polling: "refreshing every 2 s" };
    if (job && FINISHED.has(job.status)) return;
    logState.textContent = labels[state] || state;
    logState.setAttribute("data-state", state);
  }

  function startLive() {
    stopLive();
    const stream = openStream(`/ui/events/jobs/${encodeURIComponent(id)}`, {
      job: (data) => show(data),
      log: (line) => logs.fromStream(line),
    }, (state) => {
      if (state === "open") {
        // Each (re)connection replays the job's earlier lines: count them again from zero.
        logs.newConnection();
        return;
      }
      if (state === "down") {
        // No job stream on this server (or it refused): poll the job and its logs instead.
        stream.close();
        live = pollJob();
        setLogState("polling");
        return;
      }
      setLogState(state);
    });
    live = stream;
  }

  function pollJob() {
    const poller = poll(async () => {
      try {
        const [next] = await Promise.all([get(jobPath(id)), syncLogs()]);
        show(next);
      } catch (error) {
        poller.stop();
        ctx.flashError(error);
      }
    }, 2000);
    return { close: () => poller.stop() };
  }

  async function syncLogs() {
    try {
      const answer = await get(`${jobPath(id)}/logs`);
      logs.fromList(answer.logs || []);
    } catch {
      // Logs are secondary: the job's own request reports errors.
    }
  }

  ctx.onCleanup(stopLive);
  ctx.onCleanup(stopParents);

  // First paint from the plain API, then follow live while the job can still change.
  Promise.all([get(jobPath(id)), syncLogs()]).then(([first]) => {
    show(first);
    if (!FINISHED.has(first.status)) startLive();
  }).catch((error) => {
    root.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "« jobs")),
      h("h1", {}, "Job ", h("code", {}, id)),
      h("p", { class: "error", "data-testid": "job-error-message", role: "alert" }, error.detail || String(error)),
    );
  });
}

// ----- sections -----

const RENDER = {
  head(el, job) {
    el.replaceChildren(h("h1", {}, "Job ", h("code", { "data-testid": "job-id" }, job.id)), statusBadge(job.status));
  },

  actions(el, job, ctx, hooks) {
    el.replaceChildren();
    if (!ctx.canAct) return;
    const path = jobPath(job.id);
    const buttons = [];
    if (ctx.canRetry && (job.status === "failed" || job.status === "dead")) {
      buttons.push(button("Retry", "action-retry", () => run(ctx, async () => {
        hooks.updated(await post(`${path}/retry`));
        ctx.flash(`Job ${job.id} will run again.`);
      })));
    }
    if (CANCELLABLE.has(job.status)) {
      buttons.push(button("Cancel", "action-cancel", () => {
        if (!confirm(`Cancel job ${job.id}?`)) return;
        run(ctx, async () => hooks.updated(await post(`${path}/cancel`)));
      }, { class: "danger" }));
    }
    if (ctx.canDelete && job.status !== "processing") {
      buttons.push(button("Delete", "action-delete", () => {
        if (!confirm(`Delete job ${job.id} and its logs? This cannot be undone.`)) return;
        run(ctx, async () => {
          await del(path);
          hooks.deleted();
        });
      }, { class: "danger" }));
    }
    el.append(...buttons);
  },

  fields(el, job) {
    const rows = [
      ["Type", job.type],
      ["Queue", h("a", { href: route("#/jobs", { queue: job.queue }) }, job.queue)],
      ["Priority", job.priority],
      ["Attempts", `${job.attempts ?? 0} of ${job.max_attempts ?? "?"}`],
      ["Timeout", job.timeout == null ? "none" : fmtDuration(job.timeout)],
      ["Owner", job.owner ?? "—"],
      ["Unique key", job.unique ? [job.unique.key, h("span", { class: "muted" },
        ` held while ${job.unique.scope}`, job.unique.until ? [" until ", timeEl(job.unique.until)] : "")] : null],
      ["Concurrency key", job.concurrency ? [job.concurrency.key, job.concurrency.limit == null ? ""
        : h("span", { class: "muted" }, ` at most ${job.concurrency.limit} running at once`)] : null],
      ["Held back", job.held ? h("span", { "data-testid": "job-held" }, heldText(job.held)) : null],
      ["Created", timeEl(job.created_at)],
      ["Run at", job.run_at ? timeEl(job.run_at) : null],
      ["Next run", job.next_run_at ? [timeEl(job.next_run_at), " ", relTime(job.next_run_at, "next-run-in")] : null],
      ["Started", timeEl(job.started_at)],
      ["Finished", job.finished_at ? [timeEl(job.finished_at), duration(job.started_at, job.finished_at)] : null],
      ["Lease expires", job.lease_expires_at ? [timeEl(job.lease_expires_at), " ", relTime(job.lease_expires_at)] : null],
    ].filter(([, v]) => v !== null && v !== undefined);
    el.replaceChildren(h("dl", { class: "fields", "data-testid": "job-fields" },
      rows.map(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k.toLowerCase().replace(/ /g, "_") }, v)])));
  },

  progress(el, job) {
    el.replaceChildren();
    const running = job.status === "processing";
    if (job.progress == null && !running) return;
    // Without a fraction, a running job shows an indeterminate bar (no value attribute).
    const bar = h("progress", { max: "1", "data-testid": "progress", "aria-label": "progress" });
    if (job.progress != null) bar.value = Math.max(0, Math.min(1, Number(job.progress)));
    const note = job.progress_note == null ? "" : typeof job.progress_note === "string" ? job.progress_note : JSON.stringify(job.progress_note);
    el.append(h("h2", {}, "Progress"), h("div", { class: "progress-line" }, bar,
      h("span", { "data-testid": "progress-text" }, job.progress == null ? "running" : `${fmtNumber(job.progress * 100)}%`),
      note ? h("span", { class: "muted", "data-testid": "progress-note" }, note) : null));
  },

  data(el, job) {
    fill(el,
      job.error ? [h("h2", {}, "Error"), h("pre", { class: "error-text", "data-testid": "job-error" }, job.error)] : null,
      h("h2", {}, "Payload"), jsonBlock(job.payload, "job-payload"),
      h("h2", {}, "Result"), job.result === null || job.result === undefined
        ? h("p", { class: "muted", "data-testid": "job-result" }, FINISHED.has(job.status) ? "none" : "not yet")
        : jsonBlock(job.result, "job-result"),
    );
  },

  history(el, job) {
    const attempts = job.history || [];
    el.replaceChildren(h("h2", {}, `History (${attempts.length} attempt${attempts.length === 1 ? "" : "s"})`));
    if (!attempts.length) {
      el.append(h("p", { class: "muted" }, "Not started yet."));
      return;
    }
    el.append(h("ol", { class: "timeline", "data-testid": "history" }, attempts.map((a) => {
      const outcome = a.outcome || (a.finished_at ? "ended" : "running");
      const item = h("li", { class: `attempt outcome-${["completed", "failed", "cancelled", "lost"].includes(outcome) ? outcome : "other"}`, "data-testid": "attempt" },
        h("div", { class: "attempt-head" },
          h("strong", {}, `#${a.number}`), " ",
          h("span", { class: "badge", "data-testid": "attempt-outcome" }, outcome), " ",
          h("span", { class: "muted" }, "on "), h("span", { "data-testid": "attempt-worker" }, a.worker ?? "—")),
        h("div", { class: "muted" }, timeEl(a.started_at), " → ", a.finished_at ? timeEl(a.finished_at) : "…", duration(a.started_at, a.finished_at)),
        a.error ? h("pre", { class: "error-text", "data-testid": "attempt-error" }, a.error) : null,
        a.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", { class: "traceback", "data-testid": "traceback" }, a.traceback)) : null,
      );
      item.setAttribute("data-attempt", String(a.number));
      return item;
    })));
  },
};

// ----- workflow -----

const POLICIES = {
  cancel: "cancel: a parent that fails, dies or is cancelled cancels this job (and its own children)",
  run: "run: it runs once every parent has finished, however each ended",
};

/**
 * The job's place in a workflow: the workflow, its parents with their statuses (GET /jobs/{id}/parents),
 * what a parent's failure does, how many parents it still waits for, and its children.
 */
function familyBox(el, id) {
  let job = null;
  let parents = null; // id -> outcome, once read; a parent deleted since is missing
  let reads = 0; // the last read wins, not the last to answer

  function draw() {
    const wf = job.workflow;
    const children = job.children || [];
    if (!wf && !children.length) {
      el.replaceChildren();
      return;
    }
    const depends = wf ? wf.depends_on || [] : [];
    const rows = [
      ["Workflow", wf ? (wf.id
        ? h("a", { href: workflowHref(wf.id), "data-testid": "workflow-link" }, wf.id)
        : h("span", { class: "muted" }, "none: enqueued on its own, with depends_on")) : null],
      [`Parents (${depends.length})`, depends.length ? h("ul", { class: "plain", "data-testid": "job-parents" }, depends.map(parentItem)) : null],
      ["Waiting for", job.status === "waiting" && wf
        ? h("span", { "data-testid": "parents-left" }, `${fmtNumber(wf.parents_left)} of ${fmtNumber(depends.length)} parent${depends.length === 1 ? "" : "s"}`)
        : null],
      ["On parent failure", depends.length ? h("span", { "data-testid": "parent-policy" }, POLICIES[wf.on_parent_failure] || wf.on_parent_failure) : null],
      [`Children (${children.length >= 1000 ? "1000+" : children.length})`, children.length ? [
        h("ul", { class: "plain", "data-testid": "job-children" }, children.map((child) => {
          const item = h("li", { "data-testid": "job-child" }, h("a", { href: jobHref(child) }, child));
          item.setAttribute("data-job-id", child);
          return item;
        })),
        h("a", { href: route("#/jobs", { parent: job.id }), "data-testid": "children-link" },
          children.length >= 1000 ? "list them all, with their statuses" : "list them, with their statuses"),
      ] : null],
    ].filter(([, v]) => v !== null && v !== undefined);
    el.replaceChildren(h("h2", {}, "Workflow"), h("dl", { class: "fields", "data-testid": "job-workflow" },
      rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  }

  function parentItem(parentId) {
    const outcome = parents && parents.get(parentId);
    const item = h("li", { "data-testid": "job-parent" }, h("a", { href: jobHref(parentId) }, parentId), " ",
      outcome ? statusBadge(outcome.status) : parents ? h("span", { class: "muted" }, "deleted") : null);
    item.setAttribute("data-job-id", parentId);
    if (outcome) item.setAttribute("data-status", outcome.status);
    return item;
  }

  async function loadParents() {
    if (!job || !job.workflow || !(job.workflow.depends_on || []).length) return;
    const mine = ++reads;
    let answer;
    try {
      answer = await get(`${jobPath(id)}/parents`);
    } catch {
      return; // the ids stay, without statuses: the job's own request reports errors
    }
    if (mine !== reads) return;
    parents = new Map((answer.parents || []).map((p) => [p.id, p]));
    draw();
  }

  return {
    update(next) {
      job = next;
      draw();
      loadParents();
    },
    loadParents,
  };
}

function duration(start, end) {
  const s = secondsBetween(start, end);
  return s === null ? null : h("span", { class: "muted" }, ` (${fmtDuration(s)})`);
}

function fieldsKey(job) {
  return [job.type, job.queue, job.priority, job.attempts, job.max_attempts, job.timeout, job.owner, job.created_at,
    job.run_at, job.next_run_at, job.started_at, job.finished_at, job.lease_expires_at];
}

async function run(ctx, fn) {
  try {
    await fn();
  } catch (error) {
    ctx.flashError(error);
  }
}

// ----- logs -----

/**
 * The log lines shown, fed from GET /jobs/{id}/logs (the whole list) and from the stream
 * (one line per event, possibly replaying earlier ones on each connection). Lines carry no id,
 * so they are matched by (time, text) and by how often each pair occurred: the n-th copy of a
 * pair is shown once, whichever source brings it first.
 */
function newLogBook(list) {
  const shown = new Map();    // key → copies on the page
  let streamed = new Map();   // key → copies this stream connection delivered
  const keyOf = (line) => `${line.at}\u0000${line.message}`;

  function append(line) {
    const box = list.parentElement;
    // Follow the tail only if the reader is already there (not while they scroll back).
    const atBottom = !box || box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    const item = h("li", { "data-testid": "log-line" }, timeEl(line.at), " ",
      h("span", { class: "msg" }, typeof line.message === "string" ? line.message : JSON.stringify(line.message)));
    list.append(item);
    if (atBottom && box) box.scrollTop = box.scrollHeight;
  }

  return {
    fromList(lines) {
      const seen = new Map();
      for (const line of lines) {
        const key = keyOf(line);
        const n = (seen.get(key) || 0) + 1;
        seen.set(key, n);
        if (n > (shown.get(key) || 0)) {
          shown.set(key, n);
          append(line);
        }
      }
    },
    fromStream(line) {
      const key = keyOf(line);
      const n = (streamed.get(key) || 0) + 1;
      streamed.set(key, n);
      if (n > (shown.get(key) || 0)) {
        shown.set(key, n);
        append(line);
      }
    },
    newConnection() {
      streamed = new Map();
    },
  };
}

/** Why a ready job waits: the limit of its queue that holds it back now, in words. */
function heldText(held) {
  switch (held.limit) {
    case "concurrency": return `its queue runs ${held.running} of at most ${held.max} jobs at once`;
    case "rate": return ["its queue's rate allows the next start at ", timeEl(held.next_start), " ", relTime(held.next_start)];
    case "key_concurrency": return `key ${held.key} runs ${held.running} of at most ${held.max} jobs at once`;
    case "key_rate": return [`key ${held.key}'s rate allows its next start at `, timeEl(held.next_start), " ", relTime(held.next_start)];
    default: return held.limit;
  }
}
