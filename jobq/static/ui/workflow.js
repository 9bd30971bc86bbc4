// One workflow (GET /workflows/{id}): how far it is (done, failed, in all, a bar), and its jobs as a
// layered graph, each node a link to its job, coloured by status. A workflow too large to draw is
// summed up per layer instead. Refreshed every 2 s (less often for large ones) until it has finished.

import { get, poll } from "./api.js";
import { layerSummary, layered, positioned } from "./graph.js";
import {
  FINISHED, STATUSES, button, fmtNumber, h, jobHref, route, statusClass, svg, workflowHref,
} from "./dom.js";

const MAX_DRAWN = 300; // the most jobs drawn as a graph; beyond, a summary per layer
const POLL_MS = 2000;
const GAVE_UP = ["failed", "dead", "cancelled"]; // what GET /workflows counts as failed
const RUNNING = ["processing", "retrying"];

// The graph's geometry, in pixels.
const NODE_W = 184, NODE_H = 40, GAP_X = 56, GAP_Y = 12, PAD = 10;

const LIVE_LABELS = { // polling is how this page is live: not the warning it is on the overview
  refreshing: "refreshing every 2 s",
  "refreshing-slowly": "refreshing every 10 s",
  paused: "paused (tab hidden)",
  finished: "finished",
};

/** How often a workflow of `total` jobs is read again, in polls of POLL_MS: each read sends every job. */
function pollsPerRead(total) {
  return total > 2000 ? 5 : 1;
}

export function renderWorkflow(ctx) {
  const id = ctx.arg;
  const root = ctx.root;
  if (!id) {
    renderFind(ctx);
    return;
  }
  const crumbs = h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "« jobs"));
  const state = h("span", { class: "live", "data-testid": "live-status", "data-state": "connecting" }, "loading…");
  const refresh = button("Refresh", "refresh", () => {
    skip = 0;
    load(true);
  }, { class: "small" });
  const progress = h("div", { class: "workflow-progress", "data-testid": "workflow-progress" });
  const graphBox = h("div", { class: "workflow-graph-box" }, h("p", { class: "muted" }, "Loading…"));
  root.append(
    crumbs,
    h("div", { class: "view-head" }, h("h1", {}, "Workflow ", h("code", { "data-testid": "workflow-id" }, id)), state, refresh),
    progress,
    h("h2", {}, "Graph"),
    graphBox,
  );

  let drawn = null; // what is on the page: {key, update(view)}
  let poller = null;
  let skip = 0; // polls to let pass before the next read (a large workflow is read less often)
  let lastError = null;
  let loaded = false;

  function setState(name) {
    state.setAttribute("data-state", name);
    state.textContent = LIVE_LABELS[name] || name;
  }

  async function load(again = false) {
    let view;
    try {
      view = await get(`/workflows/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!loaded) {
        stop();
        root.replaceChildren(crumbs, h("h1", {}, "Workflow ", h("code", {}, id)),
          h("p", { class: "error", "data-testid": "workflow-error", role: "alert" }, error.detail || String(error)));
      } else if (lastError !== error.detail) { // polling repeats: each distinct failure once
        ctx.flashError(error);
      }
      lastError = error.detail;
      return;
    }
    loaded = true;
    lastError = null;
    progress.replaceChildren(...progressParts(view));
    draw(view);
    if (view.finished) {
      stop();
      setState("finished");
    } else {
      if (again && !poller) follow();
      setState(pollsPerRead(view.total) > 1 ? "refreshing-slowly" : "refreshing");
      skip = pollsPerRead(view.total) - 1;
    }
  }

  function draw(view) {
    const key = structureKey(view.jobs);
    if (drawn && drawn.key === key) {
      drawn.update(view);
      return;
    }
    const shown = view.jobs.length <= MAX_DRAWN ? graphView(view) : layersView(view);
    graphBox.replaceChildren(shown.el);
    drawn = { key, update: shown.update };
  }

  function follow() {
    poller = poll(async () => {
      if (skip > 0) {
        skip--;
        return;
      }
      await load();
    }, POLL_MS);
  }

  function stop() {
    if (poller) poller.stop();
    poller = null;
  }

  const onVisibility = () => {
    if (document.hidden && poller) setState("paused");
  };
  document.addEventListener("visibilitychange", onVisibility);
  ctx.onCleanup(() => {
    stop();
    document.removeEventListener("visibilitychange", onVisibility);
  });
  follow();
}

/** The workflow's edges and jobs, not their statuses: while it is the same, the drawing is only recoloured. */
function structureKey(jobs) {
  return jobs.map((job) => `${job.id}\u0000${(job.depends_on || []).join("\u0000")}`).join("\u0001");
}

function renderFind(ctx) {
  const input = h("input", { name: "id", id: "find-workflow", placeholder: "workflow id", "data-testid": "find-workflow", autocomplete: "off", spellcheck: "false" });
  const form = h("form", { class: "find" },
    h("label", { class: "field" }, h("span", {}, "Workflow id"), input),
    h("button", { type: "submit", "data-testid": "find-workflow-submit" }, "Open"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (id) ctx.navigate(workflowHref(id));
  });
  ctx.root.append(h("h1", {}, "Workflow"),
    h("p", { class: "muted" }, "A workflow's id is in POST /workflows' answer, and on the page of each of its jobs."), form);
}

// ----- progress -----

function progressParts(view) {
  const counts = view.counts || {};
  const sum = (statuses) => statuses.reduce((n, s) => n + (counts[s] || 0), 0);
  const total = view.total || 0;
  const done = view.done ?? counts.completed ?? 0;
  const failed = view.failed ?? sum(GAVE_UP);
  const running = sum(RUNNING);
  const jobsOf = (status) => route("#/jobs", { workflow: view.id, status });
  return [
    h("p", { class: "workflow-summary" },
      h("span", { "data-testid": "workflow-done" }, `${fmtNumber(done)} of ${fmtNumber(total)} done`),
      " · ",
      h("span", { class: failed ? "error" : "", "data-testid": "workflow-failed" }, `${fmtNumber(failed)} failed`),
      running ? [" · ", h("span", { "data-testid": "workflow-running" }, `${fmtNumber(running)} running`)] : null,
      " ",
      h("span", { class: `badge badge-${view.finished ? (failed ? "failed" : "completed") : "processing"}`, "data-testid": "workflow-state" },
        view.finished ? "finished" : "in progress")),
    progressBar([
      ["completed", done],
      ["failed", failed],
      ["processing", running],
    ], total),
    h("ul", { class: "status-counts", "data-testid": "workflow-counts" },
      STATUSES.filter((s) => counts[s]).map((s) => {
        const item = h("li", { "data-testid": "workflow-count" },
          h("a", { href: jobsOf(s), class: `badge badge-${statusClass(s)}` }, `${s} ${fmtNumber(counts[s])}`));
        item.setAttribute("data-status", s);
        return item;
      }),
      h("li", {}, h("a", { href: route("#/jobs", { workflow: view.id }), "data-testid": "workflow-jobs-link" }, "list its jobs"))),
  ];
}

/** A bar of segments [[class, n]] out of total, drawn in SVG (its widths are attributes: no inline style). */
function progressBar(segments, total) {
  const bar = svg("svg", {
    class: "workflow-bar", viewBox: "0 0 1000 10", preserveAspectRatio: "none", role: "progressbar",
    "aria-label": "jobs finished", "aria-valuemin": 0, "aria-valuemax": total,
    "aria-valuenow": segments[0][1] + segments[1][1], "data-testid": "workflow-bar",
  }, svg("rect", { class: "bar-track", width: 1000, height: 10 }));
  let x = 0;
  for (const [cls, n] of segments) {
    if (!n || !total) continue;
    const width = (1000 * n) / total;
    bar.append(svg("rect", { class: `bar-${cls}`, x, width, height: 10, "data-testid": `bar-${cls}` }));
    x += width;
  }
  return bar;
}

// ----- the graph -----

function truncate(text, n) {
  const s = String(text ?? "");
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

function nodeTitle(job) {
  return [job.id, `${job.type} on ${job.queue}: ${job.status}`, job.error].filter(Boolean).join("\n");
}

/** Up to MAX_DRAWN jobs as a layered graph, left to right; update(view) recolours it in place. */
function graphView(view) {
  const jobs = view.jobs;
  const graph = layered(jobs);
  const at = positioned(graph, { columnWidth: NODE_W + GAP_X, rowHeight: NODE_H + GAP_Y });
  const width = at.width + NODE_W + 2 * PAD;
  const height = at.height + NODE_H + 2 * PAD;
  const drawing = svg("svg", {
    class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": `the workflow's ${jobs.length} jobs and their dependencies`, "data-testid": "workflow-graph",
  }, svg("defs", {}, svg("marker", {
    id: "graph-arrow", viewBox: "0 0 8 8", refX: 8, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto",
  }, svg("path", { d: "M0,0 L8,4 L0,8 z", class: "arrow" }))));

  const left = (i) => PAD + at.x[i];
  const top = (i) => PAD + at.y[i];
  const edges = svg("g", { class: "edges" });
  const edgeEls = graph.edges.map(([from, to], e) => {
    // From the parent's right side to the child's left, across each column between them at its waypoint.
    let cx = left(from) + NODE_W, cy = top(from) + NODE_H / 2;
    let d = `M${cx},${cy}`;
    const curveTo = (ex, ey) => {
      const bend = Math.max(GAP_X / 2, (ex - cx) / 3);
      d += ` C${cx + bend},${cy} ${ex - bend},${ey} ${ex},${ey}`;
    };
    for (const point of at.waypoints[e]) {
      const ey = PAD + point.y + NODE_H / 2;
      curveTo(PAD + point.x, ey);
      d += ` L${PAD + point.x + NODE_W},${ey}`;
      cx = PAD + point.x + NODE_W;
      cy = ey;
    }
    curveTo(left(to) - 2, top(to) + NODE_H / 2);
    const path = svg("path", { d, class: "edge", "marker-end": "url(#graph-arrow)", "data-testid": "graph-edge" });
    path.setAttribute("data-from", jobs[from].id);
    path.setAttribute("data-to", jobs[to].id);
    edges.append(path);
    return { el: path, from: jobs[from].id };
  });

  const nodes = svg("g", { class: "nodes" });
  const nodeEls = new Map();
  jobs.forEach((job, i) => {
    const title = svg("title", {}, nodeTitle(job));
    const sub = svg("text", { x: 10, y: 31, class: "node-sub" }, truncate(`${job.type} · ${job.status}`, 26));
    const node = svg("a", {
      href: jobHref(job.id), class: `node st-${statusClass(job.status)}`, transform: `translate(${left(i)},${top(i)})`,
      "data-testid": "graph-node",
    }, title, svg("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
    svg("text", { x: 10, y: 16, class: "node-id" }, truncate(job.id, 23)), sub);
    node.setAttribute("data-job-id", job.id);
    node.setAttribute("data-status", job.status);
    node.setAttribute("data-layer", String(graph.depth[i]));
    nodes.append(node);
    nodeEls.set(job.id, { node, title, sub });
  });
  drawing.append(edges, nodes);

  function update(next) {
    const status = new Map();
    for (const job of next.jobs) {
      status.set(job.id, job.status);
      const drawnNode = nodeEls.get(job.id);
      if (!drawnNode || drawnNode.node.getAttribute("data-status") === job.status && drawnNode.title.textContent === nodeTitle(job)) continue;
      drawnNode.node.setAttribute("data-status", job.status);
      drawnNode.node.setAttribute("class", `node st-${statusClass(job.status)}`);
      drawnNode.title.textContent = nodeTitle(job);
      drawnNode.sub.textContent = truncate(`${job.type} · ${job.status}`, 26);
    }
    for (const edge of edgeEls) edge.el.setAttribute("class", edgeClass(status.get(edge.from)));
  }
  update(view);

  const parts = [h("div", { class: "graph-wrap" }, drawing)];
  if (graph.outside) {
    parts.push(h("p", { class: "muted", "data-testid": "graph-outside" },
      `${fmtNumber(graph.outside)} dependencies on jobs outside this workflow are not drawn.`));
  }
  parts.push(legend());
  return { el: h("div", {}, parts), update };
}

function edgeClass(parentStatus) {
  if (parentStatus === "completed") return "edge edge-done";
  if (FINISHED.has(parentStatus)) return "edge edge-gave-up";
  return "edge";
}

function legend() {
  return h("ul", { class: "legend graph-legend" }, STATUSES.map((s) =>
    h("li", {}, h("span", { class: `swatch node-swatch st-${s}` }), s)));
}

/** More than MAX_DRAWN jobs: each layer's (or band of layers') jobs by status, in a table. */
function layersView(view) {
  const graph = layered(view.jobs);
  const box = h("div", {});

  function update(next) {
    const statuses = next.jobs.map((job) => job.status);
    const rows = layerSummary(graph, statuses);
    const present = STATUSES.filter((s) => rows.some((r) => r.counts[s]));
    const banded = rows.some((r) => r.last > r.first);
    const head = h("tr", {}, h("th", {}, banded ? "Layers" : "Layer"), h("th", { class: "num" }, "jobs"),
      present.map((s) => h("th", { class: "num" }, s)));
    const body = rows.map((r) => {
      const tr = h("tr", { "data-testid": "layer-row" },
        h("th", { scope: "row" }, r.last > r.first ? `${r.first + 1}–${r.last + 1}` : String(r.first + 1)),
        h("td", { class: "num" }, fmtNumber(r.total)),
        present.map((s) => {
          const td = h("td", { class: `num${r.counts[s] ? "" : " zero"}` }, fmtNumber(r.counts[s] || 0));
          td.setAttribute("data-status", s);
          return td;
        }));
      tr.setAttribute("data-layer", String(r.first + 1));
      return tr;
    });
    box.replaceChildren(
      h("p", { class: "muted", "data-testid": "graph-too-large" },
        `${fmtNumber(view.jobs.length)} jobs in ${fmtNumber(graph.layers.length)} layers: too many to draw (at most ${MAX_DRAWN}). `,
        "Each layer holds the jobs whose longest chain of parents is that long; its jobs by status:"),
      h("div", { class: "table-wrap" }, h("table", { "data-testid": "workflow-layers" }, h("thead", {}, head), h("tbody", {}, body))),
    );
  }
  update(view);
  return { el: box, update };
}
