// A small SVG line chart: one or more lines over time, min/max ticks, a dot per point.
// Drawn by hand: a charting library would outweigh the whole dashboard.

const NS = 'http://www.w3.org/2000/svg';
const W = 640;
const H = 220;
const PAD = { left: 52, right: 12, top: 12, bottom: 28 };

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmtValue = (v) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(Math.round(v * 100) / 100) : v.toFixed(2));
const fmtTime = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

// lines: [{name, points: [{t: ms, v: number}]}] (points sorted by t). Returns an <svg>.
export function lineChart(lines, { title, from, to }) {
  const all = lines.flatMap((l) => l.points);
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  const count = all.length;
  svg.setAttribute('aria-label', `${title}: ${count} point${count === 1 ? '' : 's'}`);
  svg.dataset.points = String(count);
  svg.append(el('title', {}, title));
  if (count === 0) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'muted' }, 'No points in this range'));
    return svg;
  }
  const t0 = Math.min(from ?? Infinity, ...all.map((p) => p.t));
  const t1 = Math.max(to ?? -Infinity, ...all.map((p) => p.t));
  let v0 = Math.min(...all.map((p) => p.v));
  let v1 = Math.max(...all.map((p) => p.v));
  if (v0 === v1) {
    v0 -= 1;
    v1 += 1;
  }
  const x = (t) => PAD.left + ((t - t0) / Math.max(t1 - t0, 1)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - v0) / (v1 - v0)) * (H - PAD.top - PAD.bottom);

  const axis = el('g', { class: 'axis' });
  axis.append(el('line', { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom }));
  axis.append(el('line', { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom }));
  axis.append(el('text', { x: PAD.left - 6, y: y(v1) + 4, 'text-anchor': 'end' }, fmtValue(v1)));
  axis.append(el('text', { x: PAD.left - 6, y: y(v0) + 4, 'text-anchor': 'end' }, fmtValue(v0)));
  axis.append(el('text', { x: PAD.left, y: H - 8 }, fmtTime(t0)));
  axis.append(el('text', { x: W - PAD.right, y: H - 8, 'text-anchor': 'end' }, fmtTime(t1)));
  svg.append(axis);

  lines.forEach((line, i) => {
    const g = el('g', { class: `series s${i % 4}` });
    const d = line.points.map((p, j) => `${j ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join('');
    g.append(el('path', { d }));
    for (const p of line.points) {
      const dot = el('circle', { cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 3 });
      dot.append(el('title', {}, `${line.name} ${fmtValue(p.v)} at ${new Date(p.t).toLocaleString()}`));
      g.append(dot);
    }
    svg.append(g);
  });
  return svg;
}

// EPTS's answer `[{"<endpointId>": {"<series>": [{timestamp, values}]}}]` as chart lines: one per
// numeric value name (booleans as 1 and 0, as connectivity is).
export function linesFromEpts(answer, endpointId, series) {
  const points = (answer ?? []).flatMap((o) => o?.[endpointId]?.[series] ?? []);
  const byValue = new Map();
  for (const p of points) {
    const t = Date.parse(p.timestamp);
    for (const [name, raw] of Object.entries(p.values ?? {})) {
      const v = typeof raw === 'boolean' ? Number(raw) : raw;
      if (typeof v !== 'number' || !Number.isFinite(v) || Number.isNaN(t)) continue;
      if (!byValue.has(name)) byValue.set(name, []);
      byValue.get(name).push({ t, v });
    }
  }
  return [...byValue].map(([name, pts]) => ({ name, points: pts.sort((a, b) => a.t - b.t) }));
}
