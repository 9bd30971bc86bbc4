// Small SVG line charts, drawn with createElementNS (no library, nothing inline for the CSP:
// colours come from classes in style.css).

import { h, svg } from "./dom.js";

const W = 320, H = 120;                      // viewBox; the SVG scales to its box
const PAD = { left: 44, right: 8, top: 8, bottom: 18 };

/** The smallest "round" number >= v (1, 2, 2.5, 5 × 10^n), so axis labels read well. */
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const exp = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

/**
 * A line chart.
 *   title: shown above and as the SVG's accessible name
 *   times: unix seconds, one per sample (the x axis)
 *   series: [{label, cls, values}] — values align with times; null leaves a gap
 *   format: (number) => string for the y labels and the legend
 */
export function lineChart({ title, times, series, format, testid }) {
  const n = times.length;
  const all = series.flatMap((s) => s.values).filter(isNum);
  const yMax = niceCeil(Math.max(0, ...all));
  const t0 = times[0], t1 = times[n - 1];
  const plotW = W - PAD.left - PAD.right, plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (n > 1 && t1 > t0 ? ((times[i] - t0) / (t1 - t0)) * plotW : plotW);
  const y = (v) => PAD.top + plotH - (Math.min(v, yMax) / yMax) * plotH;

  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title,
  }, svg("title", {}, title));

  // Grid lines and y labels at 0, half and the top.
  for (const frac of [0, 0.5, 1]) {
    const v = yMax * frac;
    chart.append(
      svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: PAD.left - 4, y: y(v) + 3, class: "axis", "text-anchor": "end" }, format(v)),
    );
  }
  // x labels: how long ago the window starts, and "now".
  if (n > 1) {
    const span = Math.round((t1 - t0) / 60);
    chart.append(svg("text", { x: PAD.left, y: H - 4, class: "axis" }, span >= 1 ? `-${span}m` : `-${Math.round(t1 - t0)}s`));
  }
  chart.append(svg("text", { x: W - PAD.right, y: H - 4, class: "axis", "text-anchor": "end" }, "now"));

  for (const s of series) {
    chart.append(svg("path", { d: pathData(s.values, x, y), class: `line ${s.cls}` }));
    // A sample with no neighbours draws no line (percentiles of quiet intervals are null): a dot
    // shows it; the last sample gets one too, to mark "now".
    const last = lastIndex(s.values);
    s.values.forEach((v, i) => {
      if (!isNum(v) || (i !== last && (isNum(s.values[i - 1]) || isNum(s.values[i + 1])))) return;
      chart.append(svg("circle", { cx: x(i), cy: y(v), r: 2, class: `dot ${s.cls}` }));
    });
  }

  const legend = h("ul", { class: "legend" }, series.map((s) => {
    const last = lastIndex(s.values);
    return h("li", {}, h("span", { class: `swatch ${s.cls}` }), `${s.label} `,
      h("strong", {}, last >= 0 ? format(s.values[last]) : "—"));
  }));

  return h("figure", { class: "chart-box", "data-testid": testid || "chart" }, h("figcaption", {}, title), chart, legend);
}

/** "M x y L x y …", starting a new segment after each null so gaps stay gaps. */
function pathData(values, x, y) {
  let d = "", pen = false;
  values.forEach((v, i) => {
    if (!isNum(v)) {
      pen = false;
      return;
    }
    d += `${pen ? "L" : "M"}${x(i).toFixed(1)} ${y(v).toFixed(1)}`;
    pen = true;
  });
  return d || "M0 0";
}

function lastIndex(values) {
  for (let i = values.length - 1; i >= 0; i--) if (isNum(values[i])) return i;
  return -1;
}

function isNum(v) {
  return typeof v === "number" && Number.isFinite(v);
}
