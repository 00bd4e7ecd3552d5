// The last hour of one app, per minute: delivered and failed attempts as stacked bars, drawn as
// SVG by the page (no chart library). Each bar's <title> says its numbers.

import { s, fmtClock } from './dom.js';

const H = 220;
const PAD = { left: 44, right: 12, top: 12, bottom: 26 };

// A round step for the y axis (1, 2 or 5 times a power of ten) giving at most 5 lines.
function niceStep(max) {
  const rough = Math.max(1, max / 5);
  const p = 10 ** Math.floor(Math.log10(rough));
  for (const m of [1, 2, 5, 10]) if (m * p >= rough) return m * p;
  return 10 * p;
}

// series: [{at, delivered, failed}, ...] oldest first; width: the pixels it has (drawn at that
// size, so its text keeps the page's size).
export function deliveryChart(series, width) {
  const W = Math.max(360, Math.round(width || 720));
  const n = Math.max(series.length, 1);
  const max = Math.max(0, ...series.map((p) => Math.max((p.delivered || 0) + (p.failed || 0), p.ingested || 0)));
  const stepY = niceStep(max);
  const lines = Math.max(1, Math.ceil(max / stepY));
  const top = stepY * lines;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / n;
  const barW = Math.max(1, step - 2);
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': 'Delivered and failed attempts per minute over the last hour',
  });
  for (let i = 0; i <= lines; i++) {
    const v = stepY * i;
    svg.append(s('line', { class: i ? 'gridline' : 'axis', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    svg.append(s('text', { class: 'tick', x: PAD.left - 8, y: y(v) + 4, 'text-anchor': 'end' }, String(v)));
  }
  series.forEach((p, i) => {
    const x = PAD.left + i * step + 1;
    const d = p.delivered || 0;
    const f = p.failed || 0;
    const g = s('g', { class: 'bar' }, s('title', null,
      `${fmtClock(p.at)} — ${p.ingested || 0} ingested, ${d} delivered, ${f} failed attempts`));
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
  // Events ingested, as a mark across each minute's bar: deliveries falling behind show as a
  // gap between the mark and the bar below it.
  series.forEach((p, i) => {
    if (!p.ingested) return;
    const x = PAD.left + i * step + 1;
    svg.append(s('line', { class: 'ingested', x1: x - 1, x2: x + barW + 1, y1: y(p.ingested), y2: y(p.ingested) }));
  });
  return svg;
}
