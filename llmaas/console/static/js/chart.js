// Hand-drawn SVG charts (no libraries): a line chart for loss curves and a bar chart for usage.
// Every chart carries a text alternative (aria-label + <title>) and scales to its container width.

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Round tick values for the range [lo, hi]. */
function ticks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(st => st >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function short(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  if (a && a < 0.01) return v.toExponential(0);
  return `${+v.toFixed(a < 10 ? 2 : 0)}`;
}

function frame(width, height, label) {
  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label,
    preserveAspectRatio: "xMidYMid meet"});
  svg.append(s("title", {}, label));
  return svg;
}

/**
 * lineChart([{name, class, points: [[x, y], ...]}], {label, xLabel}) -> <svg>.
 * Series are drawn on shared axes; a legend names each series.
 */
export function lineChart(series, {label = "Chart", xLabel = "", width = 640, height = 260} = {}) {
  const pad = {l: 48, r: 12, t: 24, b: 34};
  const svg = frame(width, height, label);
  const pts = series.flatMap(se => se.points);
  if (!pts.length) {
    svg.append(s("text", {x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis-label"}, "No data yet"));
    return svg;
  }
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  // Losses live far from zero and move a little: fit the axis to the data (with a margin), not to zero.
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const margin = (y1 - y0) * 0.1 || Math.abs(y1) * 0.05 || 1;
  [y0, y1] = [Math.max(y0 >= 0 ? 0 : -Infinity, y0 - margin), y1 + margin];
  if (x1 === x0) x1 = x0 + 1;
  const X = x => pad.l + (x - x0) / (x1 - x0) * (width - pad.l - pad.r);
  const Y = y => height - pad.b - (y - y0) / (y1 - y0) * (height - pad.t - pad.b);
  const grid = s("g", {class: "grid"});
  for (const t of ticks(y0, y1)) {
    grid.append(s("line", {x1: pad.l, x2: width - pad.r, y1: Y(t), y2: Y(t)}));
    grid.append(s("text", {x: pad.l - 6, y: Y(t) + 4, "text-anchor": "end", class: "tick"}, short(t)));
  }
  for (const t of ticks(x0, x1, 5)) {
    grid.append(s("text", {x: X(t), y: height - pad.b + 16, "text-anchor": "middle", class: "tick"}, short(t)));
  }
  svg.append(grid);
  if (xLabel) svg.append(s("text", {x: width - pad.r, y: height - 4, "text-anchor": "end", class: "axis-label"}, xLabel));
  const named = [];
  for (const se of series) {
    if (!se.points.length) continue;
    const sorted = [...se.points].sort((a, b) => a[0] - b[0]);
    const d = sorted.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    svg.append(s("path", {d, class: `line ${se.class || ""}`}));
    if (sorted.length === 1) svg.append(s("circle", {cx: X(sorted[0][0]), cy: Y(sorted[0][1]), r: 3, class: `dot ${se.class || ""}`}));
    named.push({class: se.class, text: `${se.name} (last ${short(sorted[sorted.length - 1][1])})`});
  }
  legend(svg, named, pad.l, width);
  return svg;
}

/**
 * barChart([{label, values: [v1, v2, ...]}], {series: [{name, class}], label}) -> <svg> of stacked columns.
 */
/** Swatches and names in rows across the top; returns how many rows it took. */
function legend(svg, items, x0, width) {
  let x = x0, y = 8, rows = 1;
  for (const it of items) {
    const w = 24 + String(it.text).length * 6.5; // a rough text width: no layout pass needed
    if (x > x0 && x + w > width) { x = x0; y += 16; rows++; }
    svg.append(s("rect", {x, y, width: 10, height: 10, class: `swatch ${it.class || ""}`}));
    svg.append(s("text", {x: x + 14, y: y + 9, class: "legend"}, it.text));
    x += w;
  }
  return rows;
}

export function barChart(rows, {series = [{name: "value", class: "s1"}], label = "Chart", width = 640, height = 240, integer = false} = {}) {
  const legendRows = Math.max(1, Math.ceil(series.reduce((a, se) => a + 24 + String(se.name).length * 6.5, 0) / (width - 60)));
  const pad = {l: 48, r: 12, t: 12 + 16 * legendRows, b: 40};
  const svg = frame(width, height, label);
  const totals = rows.map(r => r.values.reduce((a, b) => a + b, 0));
  const max = Math.max(1, ...totals);
  const Y = v => height - pad.b - v / max * (height - pad.t - pad.b);
  const grid = s("g", {class: "grid"});
  for (const t of ticks(0, max).filter(v => !integer || Number.isInteger(v))) {
    grid.append(s("line", {x1: pad.l, x2: width - pad.r, y1: Y(t), y2: Y(t)}));
    grid.append(s("text", {x: pad.l - 6, y: Y(t) + 4, "text-anchor": "end", class: "tick"}, short(t)));
  }
  svg.append(grid);
  const slot = (width - pad.l - pad.r) / Math.max(1, rows.length);
  const bw = Math.max(2, Math.min(48, slot * 0.7));
  const every = Math.ceil(rows.length / 10); // label at most ~10 columns
  rows.forEach((r, i) => {
    const x = pad.l + i * slot + (slot - bw) / 2;
    let acc = 0;
    r.values.forEach((v, j) => {
      if (v <= 0) return;
      const rect = s("rect", {x, y: Y(acc + v), width: bw, height: Y(acc) - Y(acc + v), class: `bar ${series[j]?.class || ""}`});
      rect.append(s("title", {}, `${r.label}: ${series[j]?.name || ""} ${v.toLocaleString("en-US")}`));
      svg.append(rect);
      acc += v;
    });
    if (i % every === 0) svg.append(s("text", {x: x + bw / 2, y: height - pad.b + 16, "text-anchor": "middle", class: "tick"}, r.label));
  });
  legend(svg, series.map(se => ({...se, text: se.name})), pad.l, width);
  return svg;
}
