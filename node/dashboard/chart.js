// Charts as plain SVG, no library: a line chart with a marker per point (the loss curve,
// audits over time) and horizontal bars (ownership shares). Axes are linear over the data's
// range; every point is drawn, so a test can count them (`circle.point`).

const NS = "http://www.w3.org/2000/svg";
const COLOURS = ["#2f6fde", "#d9822b", "#2e9e5b", "#b3261e", "#8e44ad", "#16a2b8"];

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

/** `n + 1` evenly spaced ticks over [lo, hi]; whole numbers only where the data are. */
function ticks(lo, hi, n, whole = false) {
  if (hi === lo) return [lo];
  const out = [];
  for (let i = 0; i <= n; i++) out.push(lo + ((hi - lo) * i) / n);
  return whole ? [...new Set(out.map(Math.round))] : out;
}

function label(v) {
  const a = Math.abs(v);
  if (a >= 1000 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(a >= 10 ? 1 : 3);
}

/**
 * A line chart of `series`: `[{ name, points: [[x, y, title?], …] }]`. Each point is a
 * `circle.point` with `data-x`/`data-y` and a hover title.
 */
export function lineChart(series, { width = 1000, height = 240, xLabel = "", yLabel = "" } = {}) {
  const all = series.flatMap((s) => s.points);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  if (all.length === 0) return root;
  const pad = { l: 56, r: 16, t: 12, b: 36 };
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const X = (x) => pad.l + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const grid = svg("g", { class: "grid" });
  for (const t of ticks(y0, y1, 4)) {
    grid.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: Y(t), y2: Y(t) }));
    const text = svg("text", { x: pad.l - 6, y: Y(t) + 4, "text-anchor": "end" });
    text.textContent = label(t);
    grid.append(text);
  }
  for (const t of ticks(x0, x1, Math.min(6, Math.max(1, x1 - x0)), xs.every(Number.isInteger))) {
    const text = svg("text", { x: X(t), y: height - pad.b + 16, "text-anchor": "middle" });
    text.textContent = label(t);
    grid.append(text);
  }
  const xl = svg("text", { x: (pad.l + width - pad.r) / 2, y: height - 4, "text-anchor": "middle" });
  xl.textContent = xLabel;
  const yl = svg("text", { x: 12, y: height / 2, transform: `rotate(-90 12 ${height / 2})`, "text-anchor": "middle" });
  yl.textContent = yLabel;
  root.append(grid, xl, yl);
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    root.append(svg("polyline", {
      fill: "none", stroke: colour, "stroke-width": 1.5,
      points: sorted.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "),
    }));
    const g = svg("g", { class: "series", "data-name": s.name });
    for (const p of sorted) {
      const c = svg("circle", { class: "point", cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: colour, "data-x": p[0], "data-y": p[1] });
      const title = svg("title");
      title.textContent = p[2] ?? `${s.name}: ${label(p[0])}, ${label(p[1])}`;
      c.append(title);
      g.append(c);
    }
    root.append(g);
  });
  if (series.length > 1) {
    series.forEach((s, i) => {
      const y = pad.t + 4 + i * 16;
      root.append(svg("rect", { x: width - pad.r - 110, y, width: 10, height: 10, fill: COLOURS[i % COLOURS.length] }));
      const t = svg("text", { x: width - pad.r - 96, y: y + 9 });
      t.textContent = s.name;
      root.append(t);
    });
  }
  return root;
}

/** Horizontal bars: `[{ name, value, text }]`, each as wide as its share of the largest. */
export function bars(items, { width = 1000, row = 22 } = {}) {
  const height = Math.max(row, items.length * row);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart bars", role: "img" });
  const max = Math.max(1, ...items.map((b) => b.value));
  const left = 190;
  items.forEach((b, i) => {
    const y = i * row;
    const name = svg("text", { x: 0, y: y + row * 0.7, class: "mono" });
    name.textContent = b.name;
    const w = ((width - left - 90) * b.value) / max;
    const bar = svg("rect", { class: "bar", x: left, y: y + 3, width: Math.max(1, w), height: row - 6, fill: COLOURS[i % COLOURS.length] });
    const text = svg("text", { x: left + w + 6, y: y + row * 0.7 });
    text.textContent = b.text;
    root.append(name, bar, text);
  });
  return root;
}
