// Overview (totals, queues, trends, nodes, workers) and Queues (pause, resume, clear): both
// live views on the same feed, /ui/events or polling.

import { del, post, queuePath, watchOverview } from "./api.js";
import { lineChart } from "./charts.js";
import { STATUSES, button, fmtDuration, fmtNumber, h, jobHref, relTime, route, timeEl } from "./dom.js";

const WAITING = ["waiting", "pending", "scheduled", "retrying"]; // what "clear waiting" deletes (jobq WAITING)

const LIVE_LABELS = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  paused: "paused (tab hidden)",
  polling: "refreshing every 2 s",
  down: "offline",
};

/** The small "live" pill at the top of a live view. */
function liveBadge() {
  const el = h("span", { class: "live", "data-testid": "live-status", "data-state": "connecting" }, LIVE_LABELS.connecting);
  return {
    el,
    set(state) {
      el.setAttribute("data-state", state);
      el.textContent = LIVE_LABELS[state] || state;
    },
  };
}

/** Starts the feed for a view and stops it when the view goes. */
function subscribe(ctx, badge, onData) {
  let lastError = null;
  const feed = watchOverview(
    (data) => {
      lastError = null;
      onData(data);
    },
    (state) => badge.set(state),
    (error) => {
      // Polling repeats every 2 s: show each distinct failure once, not 30 a minute.
      if (lastError !== error.detail) ctx.flashError(error);
      lastError = error.detail;
    },
  );
  ctx.onCleanup(() => feed.close());
}

// ===== Overview =====

export function renderOverview(ctx) {
  const badge = liveBadge();
  const totals = h("div", { class: "cards", "data-testid": "totals" }, h("p", { class: "muted" }, "Loading…"));
  const queues = h("div", { class: "table-wrap" });
  const charts = h("div", { class: "charts", "data-testid": "charts" });
  const nodes = h("div", { class: "table-wrap", "data-testid": "nodes" });
  const workers = h("div", { class: "table-wrap", "data-testid": "workers" });
  ctx.root.append(
    h("div", { class: "view-head" }, h("h1", {}, "Overview"), badge.el),
    totals,
    h("h2", {}, "Queues"), queues,
    h("h2", {}, "Trends"), charts,
    h("h2", {}, "Nodes"), nodes,
    h("h2", {}, "Running jobs by worker"), workers,
  );
  subscribe(ctx, badge, (data) => {
    totals.replaceChildren(...totalCards(data.stats, data.nodes));
    queues.replaceChildren(queueCountsTable(data.queues || [], data.stats));
    charts.replaceChildren(...trendCharts(data.trends));
    nodes.replaceChildren(ctx.canSeeNodes ? nodesTable(data.nodes)
      : h("p", { class: "muted", "data-testid": "no-nodes" }, "Nodes are shown to worker and admin tokens."));
    workers.replaceChildren(workersTable(data.workers, data.nodes));
  });
}

function card(label, value, testid, extra) {
  return h("div", { class: `card ${extra || ""}`, "data-testid": testid }, h("div", { class: "card-value" }, value), h("div", { class: "card-label" }, label));
}

/** What every node's card adds up to: in-process workers busy and in all, and the remote workers seen. */
function workerTotals(stats, nodes) {
  if (!nodes || !nodes.length) return { busy: (stats.workers || {}).busy, total: (stats.workers || {}).total, remote: null };
  const remote = new Set();
  let busy = 0, total = 0;
  for (const node of nodes) {
    busy += (node.workers || {}).busy || 0;
    total += (node.workers || {}).total || 0;
    for (const w of node.remote_workers || []) remote.add(w.name);
  }
  return { busy, total, remote: remote.size };
}

function totalCards(stats, nodes) {
  if (!stats) return [];
  const jobs = stats.jobs || {};
  const w = workerTotals(stats, nodes);
  return [
    stats.draining ? card("server", "draining", "stat-draining", "card-warn") : null,
    card("waiting", fmtNumber(stats.queue_depth), "stat-waiting"),
    card("processing", fmtNumber(jobs.processing), "stat-processing"),
    card("completed", fmtNumber(jobs.completed), "stat-completed"),
    card("failed", fmtNumber(jobs.failed), "stat-failed", jobs.failed ? "card-bad" : ""),
    card("dead", fmtNumber(jobs.dead), "stat-dead", jobs.dead ? "card-bad" : ""),
    nodes && nodes.length > 1 ? card("nodes", fmtNumber(nodes.length), "stat-nodes") : null,
    card("in-process workers busy", `${fmtNumber(w.busy)} / ${fmtNumber(w.total)}`, "stat-workers"),
    w.remote ? card("remote workers", fmtNumber(w.remote), "stat-remote-workers") : null,
    card("jobs / s (last min)", fmtNumber(stats.jobs_per_second, 2), "stat-throughput"),
    card("uptime", fmtDuration(stats.uptime_seconds), "stat-uptime"),
    (stats.paused_queues || []).length ? card("paused queues", fmtNumber(stats.paused_queues.length), "stat-paused", "card-warn") : null,
  ].filter(Boolean);
}

/** How long the queue's next job has waited; "—" when nothing is ready to run. */
function oldestWait(q) {
  const ready = (q.jobs || {}).pending || 0;
  return q.oldest_wait_seconds == null || (!ready && !q.oldest_wait_seconds) ? "—" : fmtDuration(q.oldest_wait_seconds);
}

/** A count that links to the job list filtered by queue and state (0 stays plain). */
function countCell(queue, status, n) {
  const value = fmtNumber(n || 0);
  return h("td", { class: `num${n ? "" : " zero"}`, "data-status": status },
    n ? h("a", { href: route("#/jobs", { queue, status }) }, value) : value);
}

function queueCountsTable(queues, stats) {
  if (!queues.length) return h("p", { class: "muted", "data-testid": "no-queues" }, "No queues yet: enqueue a job.");
  const head = h("tr", {}, h("th", {}, "Queue"), h("th", {}, "State"), STATUSES.map((s) => h("th", { class: "num" }, s)), h("th", { class: "num" }, "oldest wait"));
  const rows = queues.map((q) => {
    const row = h("tr", { "data-testid": "queue-row" },
      h("th", { scope: "row" }, h("a", { href: route("#/jobs", { queue: q.name }) }, q.name)),
      h("td", {}, q.paused ? h("span", { class: "badge badge-paused", "data-testid": "queue-paused" }, "paused") : h("span", { class: "muted" }, "active")),
      STATUSES.map((s) => countCell(q.name, s, (q.jobs || {})[s])),
      h("td", { class: "num", "data-testid": "oldest-wait" }, oldestWait(q)),
    );
    row.setAttribute("data-queue", q.name);
    return row;
  });
  const jobs = (stats && stats.jobs) || {};
  const total = h("tr", { class: "total", "data-testid": "queue-totals" },
    h("th", { scope: "row" }, "all queues"), h("td", {}),
    STATUSES.map((s) => h("td", { class: "num" }, fmtNumber(jobs[s] || 0))), h("td", {}));
  return h("table", { "data-testid": "queue-table" }, h("thead", {}, head), h("tbody", {}, rows), h("tfoot", {}, total));
}

// ----- trends -----

const perSecond = (v) => (v >= 100 ? fmtNumber(v) : fmtNumber(v, v >= 10 ? 1 : 2)) + "/s";
const seconds = (v) => fmtDuration(v);

function trendCharts(trends) {
  if (!trends) {
    return [h("p", { class: "muted", "data-testid": "no-trends" }, "Trends need the server's live stream (/ui/events); counts above refresh every 2 s.")];
  }
  const times = trends.times || [];
  const names = Object.keys(trends.queues || {});
  if (!names.length || times.length < 2) return [h("p", { class: "muted", "data-testid": "no-trends" }, "Not enough samples yet.")];
  return names.map((name) => {
    const t = trends.queues[name] || {};
    const values = (key) => (Array.isArray(t[key]) ? t[key] : []);
    const group = h("div", { class: "queue-charts", "data-testid": "queue-charts" },
      h("h3", {}, name),
      h("div", { class: "chart-row" },
        lineChart({
          title: "Throughput", format: perSecond, times, testid: "chart-throughput",
          series: [
            { label: "enqueued", cls: "s-enqueued", values: values("enqueued") },
            { label: "completed", cls: "s-completed", values: values("completed") },
            { label: "failed", cls: "s-failed", values: values("failed") },
          ],
        }),
        lineChart({
          title: "Wait before start", format: seconds, times, testid: "chart-wait",
          series: [
            { label: "p50", cls: "s-p50", values: values("wait_p50") },
            { label: "p95", cls: "s-p95", values: values("wait_p95") },
          ],
        }),
        lineChart({
          title: "Run time", format: seconds, times, testid: "chart-run",
          series: [
            { label: "p50", cls: "s-p50", values: values("run_p50") },
            { label: "p95", cls: "s-p95", values: values("run_p95") },
          ],
        }),
      ),
    );
    group.setAttribute("data-queue", name);
    return group;
  });
}

// ----- nodes and workers -----

/** When a remote worker last called its node: its card says how long before the card was written. */
function lastSeen(node, worker) {
  return new Date(Date.parse(node.seen_at) - worker.idle_seconds * 1000).toISOString();
}

function nodesTable(nodes) {
  if (!nodes) return h("p", { class: "muted", "data-testid": "no-nodes" }, "Loading…");
  if (!nodes.length) return h("p", { class: "muted", "data-testid": "no-nodes" }, "No node has written its card yet.");
  const rows = nodes.map((node) => {
    const w = node.workers || {};
    const remote = node.remote_workers || [];
    const listening = Object.entries(node.listening || {});
    const row = h("tr", { "data-testid": "node-row" },
      h("th", { scope: "row" }, `${node.host}:${node.pid}`, h("div", { class: "muted small-text" }, `${node.id} · v${node.version}`)),
      h("td", {}, listening.length
        ? h("ul", { class: "plain" }, listening.map(([protocol, where]) => h("li", {}, `${protocol} `, h("span", { class: "muted" }, where))))
        : h("span", { class: "muted" }, "—")),
      h("td", {}, node.draining
        ? h("span", { class: "badge badge-paused", "data-testid": "node-draining" }, "draining")
        : h("span", { class: "muted" }, "serving")),
      h("td", {}, timeEl(node.started_at)),
      h("td", { "data-testid": "node-seen" }, relTime(node.seen_at)),
      h("td", { class: "num", "data-testid": "node-workers" }, `${fmtNumber(w.busy)} / ${fmtNumber(w.total)}`),
      h("td", { "data-testid": "node-remote-workers" }, remote.length
        ? h("ul", { class: "plain" }, remote.map((r) => h("li", {}, r.name, " ",
          h("span", { class: "muted" }, "seen ", relTime(lastSeen(node, r))))))
        : h("span", { class: "muted" }, "none")),
    );
    row.setAttribute("data-node", node.id);
    return row;
  });
  const head = ["Node", "Listening", "State", "Started", "Card written", "In-process busy", "Remote workers"];
  return h("table", { "data-testid": "nodes-table" },
    h("thead", {}, h("tr", {}, head.map((t, i) => h("th", i === 5 ? { class: "num" } : {}, t)))),
    h("tbody", {}, rows));
}

/** Where each worker name was seen: "in-process on <node>" or "remote, via <node>". */
function whereWorkers(nodes) {
  const where = new Map();
  for (const node of nodes || []) {
    where.set(`${node.host}:${node.pid}`, `in-process on ${node.host}:${node.pid}`);
    for (const r of node.remote_workers || []) if (!where.has(r.name)) where.set(r.name, `remote, via ${node.host}:${node.pid}`);
  }
  return where;
}

function workersTable(workers, nodes) {
  if (!workers) {
    return h("p", { class: "muted", "data-testid": "no-workers" }, "Running jobs by worker need the server's live stream.");
  }
  if (!workers.length) return h("p", { class: "muted", "data-testid": "no-workers" }, "No job is running.");
  const where = whereWorkers(nodes);
  const rows = workers.map((w) => {
    const jobs = w.jobs || [];
    const row = h("tr", { "data-testid": "worker-row" },
      h("th", { scope: "row" }, w.name, where.has(w.name) ? h("div", { class: "muted small-text" }, where.get(w.name)) : null),
      h("td", { class: "num" }, fmtNumber(jobs.length)),
      h("td", {}, jobs.length
        ? h("ul", { class: "plain" }, jobs.map((j) => h("li", {},
          h("a", { href: jobHref(j.id) }, j.id), " ", h("span", { class: "muted" }, `${j.type} on ${j.queue}`),
          " · started ", timeEl(j.started_at), " · lease ", relTime(j.lease_expires_at))))
        : h("span", { class: "muted" }, "idle")),
    );
    row.setAttribute("data-worker", w.name);
    return row;
  });
  return h("table", { "data-testid": "workers-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Worker"), h("th", { class: "num" }, "Jobs leased"), h("th", {}, "Jobs (lease expiry)"))),
    h("tbody", {}, rows));
}

// ===== Queues =====

export function renderQueues(ctx) {
  const badge = liveBadge();
  const table = h("div", { class: "table-wrap" }, h("p", { class: "muted" }, "Loading…"));
  ctx.root.append(h("div", { class: "view-head" }, h("h1", {}, "Queues"), badge.el), table);

  let last = null;
  const draw = () => table.replaceChildren(queueAdminTable(ctx, last.queues || [], redraw));
  // After an action, show its effect at once instead of waiting for the next tick.
  function redraw(name, change) {
    const q = (last.queues || []).find((x) => x.name === name);
    if (q) change(q);
    draw();
  }
  subscribe(ctx, badge, (data) => {
    last = data;
    draw();
  });
}

function queueAdminTable(ctx, queues, redraw) {
  if (!queues.length) return h("p", { class: "muted", "data-testid": "no-queues" }, "No queues yet: enqueue a job.");
  const head = h("tr", {},
    ["Queue", "State"].map((t) => h("th", {}, t)),
    ["waiting", "processing", "failed", "dead", "oldest wait"].map((t) => h("th", { class: "num" }, t)),
    h("th", {}, "Limits"),
    ctx.canManageQueues ? h("th", {}, "Actions") : null);
  const rows = queues.map((q) => {
    const jobs = q.jobs || {};
    const waiting = WAITING.reduce((n, s) => n + (jobs[s] || 0), 0);
    const row = h("tr", { "data-testid": "queue-row" },
      h("th", { scope: "row" }, h("a", { href: route("#/jobs", { queue: q.name }) }, q.name)),
      h("td", {}, q.paused ? h("span", { class: "badge badge-paused", "data-testid": "queue-paused" }, "paused") : h("span", { class: "muted" }, "active")),
      h("td", { class: "num" }, fmtNumber(waiting)),
      countCell(q.name, "processing", jobs.processing),
      countCell(q.name, "failed", jobs.failed),
      countCell(q.name, "dead", jobs.dead),
      h("td", { class: "num", "data-testid": "oldest-wait" }, oldestWait(q)),
      h("td", { "data-testid": "queue-limits" }, limitsCell(q.flow)),
      ctx.canManageQueues ? h("td", {}, h("div", { class: "actions" }, queueActions(ctx, q, waiting, redraw))) : null,
    );
    row.setAttribute("data-queue", q.name);
    return row;
  });
  return h("table", { "data-testid": "queue-table" }, h("thead", {}, head), h("tbody", {}, rows));
}

/** A queue's limits, and what they hold back now (jobq.flow). */
function limitsCell(flow) {
  if (!flow) return h("span", { class: "muted" }, "none");
  const rate = (r) => `${fmtNumber(r.limit)}/${fmtDuration(r.period)}`;
  const limits = [
    flow.concurrency != null ? `${fmtNumber(flow.concurrency)} running` : null,
    flow.key_concurrency != null ? `${fmtNumber(flow.key_concurrency)} per key` : null,
    flow.rate ? rate(flow.rate) : null,
    flow.key_rate ? `${rate(flow.key_rate)} per key` : null,
  ].filter(Boolean).join(", ") || "keys take turns";
  const held = flow.held_by || {};
  const holds = [
    held.concurrency ? "at its limit" : null,
    held.rate_until ? "at its rate" : null,
    held.keys_at_limit ? `${fmtNumber(held.keys_at_limit)} keys at their limit` : null,
    held.keys_rate_limited ? `${fmtNumber(held.keys_rate_limited)} keys at their rate` : null,
  ].filter(Boolean);
  return [limits, holds.length ? h("div", { class: "muted", "data-testid": "queue-held" }, `holding back: ${holds.join("; ")}`) : null];
}

function queueActions(ctx, q, waiting, redraw) {
  const toggle = q.paused
    ? button("Resume", "resume-queue", () => act(ctx, toggle, async () => {
      await post(`${queuePath(q.name)}/resume`);
      ctx.flash(`Queue ${q.name} resumed.`);
      redraw(q.name, (x) => { x.paused = false; });
    }))
    : button("Pause", "pause-queue", () => act(ctx, toggle, async () => {
      await post(`${queuePath(q.name)}/pause`);
      ctx.flash(`Queue ${q.name} paused: it accepts jobs but runs none.`);
      redraw(q.name, (x) => { x.paused = true; });
    }));
  const clear = button("Clear waiting", "clear-queue", () => {
    // confirm() shows plain text, so the queue name cannot inject anything here.
    if (!confirm(`Delete the ${waiting} waiting job(s) of queue "${q.name}"? Running and finished jobs stay.`)) return;
    act(ctx, clear, async () => {
      const answer = await del(`${queuePath(q.name)}/jobs`);
      const n = answer && typeof answer.cleared === "number" ? answer.cleared : "the";
      ctx.flash(`Cleared ${n} waiting job(s) from ${q.name}.`);
      redraw(q.name, (x) => { for (const s of WAITING) if (x.jobs) x.jobs[s] = 0; });
    });
  }, { class: "danger" });
  for (const b of [toggle, clear]) b.setAttribute("data-queue", q.name);
  return [toggle, clear];
}

/** Runs an action with its button disabled; a failure shows the problem's detail. */
async function act(ctx, btn, fn) {
  btn.disabled = true;
  try {
    await fn();
  } catch (error) {
    ctx.flashError(error);
  } finally {
    btn.disabled = false;
  }
}
