// Small SVG charts of our own (a time series and horizontal bars): ~100 lines instead of a charting library,
// so the dashboard stays a few tens of KB and needs no build step. Labels are set as text.
const NS = 'http://www.w3.org/2000/svg';
export const COLORS = ['#2f6fde', '#e07b00', '#1a9b50', '#b04fd1', '#d23f3f', '#0097a7'];

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

/** series: [{name, points: [[timeMs, value], ...]}]; each series on its own scale when `dual` (left, right). */
export function timeChart(series, { width = 720, height = 220, format = [(v) => v, (v) => v], dual = false, label } = {}) {
  const pad = { l: 64, r: dual ? 60 : 12, t: 10, b: 26 };
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': label || 'chart' });
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const x0 = Math.min(...xs, Date.now() - 3600e3); const x1 = Math.max(...xs, x0 + 60e3);
  const W = width - pad.l - pad.r; const H = height - pad.t - pad.b;
  const X = (t) => pad.l + ((t - x0) / (x1 - x0)) * W;
  const maxes = series.map((s) => niceMax(Math.max(0, ...s.points.map((p) => p[1]))));
  const shared = Math.max(...maxes, 1);
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.t + H - (i / 4) * H;
    svg.append(el('line', { x1: pad.l, x2: width - pad.r, y1: y, y2: y, class: 'grid' }));
    const left = dual ? maxes[0] : shared;
    svg.append(el('text', { x: pad.l - 6, y: y + 4, 'text-anchor': 'end' }, format[0]((left * i) / 4)));
    if (dual && series[1]) svg.append(el('text', { x: width - pad.r + 6, y: y + 4 }, format[1]((maxes[1] * i) / 4)));
  }
  const span = x1 - x0;
  for (let i = 0; i <= 4; i += 1) {
    const t = x0 + (span * i) / 4; const d = new Date(t);
    const text = span > 2 * 86400e3 ? d.toLocaleDateString() : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    svg.append(el('text', { x: X(t), y: height - 6, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, text));
  }
  series.forEach((s, i) => {
    const top = dual ? maxes[i] : shared;
    const Y = (v) => pad.t + H - (v / top) * H;
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    if (pts.length === 1) svg.append(el('circle', { cx: X(pts[0][0]), cy: Y(pts[0][1]), r: 3, fill: COLORS[i] }));
    if (pts.length > 1) {
      svg.append(el('polyline', { points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' '),
        fill: 'none', stroke: COLORS[i], 'stroke-width': 2, 'stroke-linejoin': 'round' }));
    }
    svg.dataset[`points${i}`] = String(pts.length);
  });
  return svg;
}

/** items: [{label, value}] as horizontal bars, largest first. */
export function barChart(items, { width = 420, format = (v) => v, label } = {}) {
  const rows = [...items].sort((a, b) => b.value - a.value).slice(0, 12);
  const rowH = 24; const height = Math.max(rowH, rows.length * rowH) + 4; const labelW = 150;
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img', 'aria-label': label || 'bars' });
  const top = Math.max(...rows.map((r) => r.value), 0) || 1;
  rows.forEach((r, i) => {
    const y = 2 + i * rowH;
    const name = r.label.length > 22 ? `${r.label.slice(0, 21)}…` : r.label;
    svg.append(el('text', { x: 0, y: y + 15 }, name));
    const w = Math.max(1, ((width - labelW - 80) * r.value) / top);
    svg.append(el('rect', { x: labelW, y: y + 4, width: w, height: rowH - 8, rx: 3, fill: COLORS[i % COLORS.length] }));
    svg.append(el('text', { x: labelW + w + 6, y: y + 15 }, format(r.value)));
  });
  return svg;
}

export function legend(names) {
  const box = document.createElement('div');
  box.className = 'legend';
  names.forEach((name, i) => {
    const item = document.createElement('span');
    const swatch = document.createElement('i');
    swatch.style.background = COLORS[i];
    item.append(swatch, document.createTextNode(name));
    box.append(item);
  });
  return box;
}
