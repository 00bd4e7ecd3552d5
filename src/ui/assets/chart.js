// The last hour of one app, per minute: delivered and failed attempts as stacked bars, drawn as
// SVG by the page (no chart library). Each bar's <title> says its numbers.

import { s, fmtClock } from './dom.js';

const W = 720;
const H = 200;
const PAD = { left: 40, right: 10, top: 12, bottom: 26 };

// A round top for the y axis: 1, 2, 5, 10, 20, 50...
function niceMax(v) {
  if (v <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// series: [{at, delivered, failed}, ...] oldest first.
export function deliveryChart(series) {
  const n = Math.max(series.length, 1);
  const top = niceMax(Math.max(0, ...series.map((p) => (p.delivered || 0) + (p.failed || 0))));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / n;
  const barW = Math.max(1, step - 2);
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': 'Delivered and failed attempts per minute over the last hour',
  });
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    svg.append(s('line', { class: i ? 'gridline' : 'axis', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    svg.append(s('text', { class: 'tick', x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' },
      Number.isInteger(v) ? String(v) : v.toFixed(1)));
  }
  series.forEach((p, i) => {
    const x = PAD.left + i * step + 1;
    const d = p.delivered || 0;
    const f = p.failed || 0;
    const g = s('g', { class: 'bar' }, s('title', null,
      `${fmtClock(p.at)} — ${d} delivered, ${f} failed`));
    // An invisible full-height band, so a hover over an empty minute still shows its numbers.
    g.append(s('rect', { class: 'hover', x: x - 1, y: PAD.top, width: step, height: plotH }));
    if (d > 0) g.append(s('rect', { class: 'delivered', x, y: y(d), width: barW, height: y(0) - y(d) }));
    if (f > 0) g.append(s('rect', { class: 'failed', x, y: y(d + f), width: barW, height: y(d) - y(d + f) }));
    svg.append(g);
    const last = i === series.length - 1;
    if (i % 10 === 0 || last) {
      svg.append(s('text', { class: 'tick', x: x + barW / 2, y: H - 8, 'text-anchor': last ? 'end' : 'middle' },
        last ? 'now' : fmtClock(p.at)));
    }
  });
  return svg;
}
