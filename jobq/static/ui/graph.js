// A workflow as a layered graph: layers by longest path, an order within each layer, and where each
// node goes. Plain data in, plain data out (no DOM here): workflow.js draws it.
//
// Nodes are numbered by their place in the workflow's list of jobs (oldest first); every loop is
// iterative, so a chain of 10,000 jobs costs what a fan of 10,000 does, and no stack.

/** The largest of some numbers, 0 for none (Math.max(...values) overflows the stack on 100,000). */
function largest(values) {
  let most = values.length ? -Infinity : 0;
  for (const v of values) if (v > most) most = v;
  return most;
}

/**
 * The graph of a workflow's jobs ([{id, depends_on}]): its edges (parent → child, both in the
 * workflow), each node's layer (0 for a job with no parent in the workflow, else one more than its
 * deepest parent's) and the layers' nodes in list order. A parent outside the workflow (a job stored
 * before it) is counted in `outside`, not drawn.
 */
export function layered(jobs) {
  const n = jobs.length;
  const index = new Map();
  jobs.forEach((job, i) => index.set(job.id, i));
  const parents = Array.from({ length: n }, () => []);
  const children = Array.from({ length: n }, () => []);
  const edges = [];
  let outside = 0;
  jobs.forEach((job, i) => {
    for (const id of new Set(job.depends_on || [])) {
      const from = index.get(id);
      if (from === undefined) outside++;
      else if (from !== i) {
        parents[i].push(from);
        children[from].push(i);
        edges.push([from, i]);
      }
    }
  });

  // Longest path from a root, in topological order (Kahn).
  const depth = new Array(n).fill(0);
  const left = parents.map((p) => p.length);
  const ready = [];
  for (let i = 0; i < n; i++) if (!left[i]) ready.push(i);
  for (let head = 0; head < ready.length; head++) {
    const i = ready[head];
    for (const c of children[i]) {
      if (depth[i] + 1 > depth[c]) depth[c] = depth[i] + 1;
      if (--left[c] === 0) ready.push(c);
    }
  }
  if (ready.length < n) { // a cycle (jobq refuses them): its nodes go after every other
    const last = largest(depth) + 1;
    for (let i = 0; i < n; i++) if (left[i]) depth[i] = last;
  }

  const layers = [];
  for (let i = 0; i < n; i++) (layers[depth[i]] ||= []).push(i);
  return { n, parents, children, edges, depth, layers: layers.filter(Boolean), outside };
}

/**
 * Orders the nodes within each layer so edges cross less: a few sweeps down (each node by the mean
 * place of its parents) and up (by its children's), each place a fraction of its layer's height.
 * Sorts `layers` in place and returns each node's index within its layer.
 */
function ordered({ n, layers, parents, children }, sweeps = 4) {
  const pos = new Array(n);
  const size = new Array(n);
  for (const layer of layers) {
    layer.forEach((node, i) => {
      pos[node] = i;
      size[node] = layer.length;
    });
  }
  const at = (node) => (pos[node] + 0.5) / size[node];
  const reorder = (layer, neighbours) => {
    const key = new Map();
    for (const node of layer) {
      const near = neighbours[node];
      key.set(node, near.length ? near.reduce((sum, other) => sum + at(other), 0) / near.length : at(node));
    }
    layer.sort((a, b) => key.get(a) - key.get(b) || pos[a] - pos[b]);
    layer.forEach((node, i) => { pos[node] = i; });
  };
  for (let sweep = 0; sweep < sweeps; sweep++) {
    for (let l = 1; l < layers.length; l++) reorder(layers[l], parents);
    for (let l = layers.length - 2; l >= 0; l--) reorder(layers[l], children);
  }
  return pos;
}

/**
 * The graph with each edge longer than one layer split by a waypoint in every layer it crosses, so
 * that it is ordered and placed like a node and runs between nodes rather than through them (unless
 * that takes more than `most` waypoints: then edges stay whole). Waypoints are numbered from graph.n.
 */
function withWaypoints(graph, most) {
  const { n, depth, edges } = graph;
  let needed = 0;
  for (const [from, to] of edges) needed += Math.max(0, depth[to] - depth[from] - 1);
  const split = needed <= most;
  const total = n + (split ? needed : 0);
  const parents = Array.from({ length: total }, () => []);
  const children = Array.from({ length: total }, () => []);
  const layers = graph.layers.map((layer) => layer.slice());
  let next = n;
  const paths = edges.map(([from, to]) => {
    const path = [from];
    if (split) for (let l = depth[from] + 1; l < depth[to]; l++) {
      layers[l].push(next);
      path.push(next++);
    }
    path.push(to);
    for (let k = 1; k < path.length; k++) {
      parents[path[k]].push(path[k - 1]);
      children[path[k - 1]].push(path[k]);
    }
    return path;
  });
  return { n: total, layers, parents, children, paths };
}

/**
 * Where each node goes: layers are columns, left to right (x: the column's index × `columnWidth`);
 * within a column nodes keep their order, `rowHeight` apart at least, each as near the mean height of
 * its parents (then of its children) as that allows. Returns {x, y, width, height, waypoints} with y
 * from 0, and for each edge (graph.edges' order) the [{x, y}] of the columns it crosses on its way.
 */
export function positioned(graph, { columnWidth, rowHeight, passes = 2, mostWaypoints = 3000 }) {
  const ext = withWaypoints(graph, mostWaypoints);
  const { n, layers, parents, children } = ext;
  ordered(ext);
  const tallest = largest(layers.map((layer) => layer.length));
  const x = new Array(n);
  const y = new Array(n);
  layers.forEach((layer, l) => {
    const offset = ((tallest - layer.length) * rowHeight) / 2;
    layer.forEach((node, i) => {
      x[node] = l * columnWidth;
      y[node] = offset + i * rowHeight;
    });
  });

  const place = (layer, neighbours) => {
    const wanted = layer.map((node) => {
      const near = neighbours[node];
      return near.length ? near.reduce((sum, other) => sum + y[other], 0) / near.length : y[node];
    });
    // Down from the first, at least a row apart; then the whole column moves back to where it was wanted.
    const got = wanted.slice();
    for (let i = 1; i < got.length; i++) got[i] = Math.max(got[i], got[i - 1] + rowHeight);
    const shift = got.reduce((sum, v, i) => sum + wanted[i] - v, 0) / (got.length || 1);
    layer.forEach((node, i) => { y[node] = got[i] + shift; });
  };
  for (let pass = 0; pass < passes; pass++) {
    for (let l = 1; l < layers.length; l++) place(layers[l], parents);
    for (let l = layers.length - 2; l >= 0; l--) place(layers[l], children);
  }

  const top = -largest(y.map((v) => -v));
  for (let i = 0; i < n; i++) y[i] -= top;
  return {
    x,
    y,
    width: layers.length ? (layers.length - 1) * columnWidth : 0,
    height: largest(y),
    waypoints: ext.paths.map((path) => path.slice(1, -1).map((node) => ({ x: x[node], y: y[node] }))),
  };
}

/**
 * Each layer's jobs by status, for a workflow too large to draw: at most `rows` rows, consecutive
 * layers sharing a row when there are more layers than that. Returns [{first, last, total, counts}].
 */
export function layerSummary(graph, statuses, rows = 100) {
  const { layers } = graph;
  const band = Math.max(1, Math.ceil(layers.length / rows));
  const summary = [];
  for (let first = 0; first < layers.length; first += band) {
    const last = Math.min(first + band, layers.length) - 1;
    const counts = {};
    let total = 0;
    for (let l = first; l <= last; l++) {
      for (const node of layers[l]) {
        counts[statuses[node]] = (counts[statuses[node]] || 0) + 1;
        total++;
      }
    }
    summary.push({ first, last, total, counts });
  }
  return summary;
}
