// The overview: one row per Voice App from GET /v1/voice-apps/stats (the apps in trouble first,
// as the API sorts them), and the node's ingested/delivered/failed per second; refreshed by
// polling every 2 s.

import { h, replace, fmtAge, fmtAgo, fmtCount, fmtMs, fmtPct, fmtRate, fmtTime, route } from './dom.js';
import { appState } from './state.js';

const REFRESH_MS = 2000;

function stat(label, value, unit, cls) {
  return h('div', { class: ['stat', cls] }, h('div', { class: 'stat-value' }, value,
    unit ? h('span', { class: 'unit' }, unit) : null), h('div', { class: 'stat-label' }, label));
}

function windowCell(w) {
  w = w || {};
  return h('td', { class: 'num window' },
    h('span', { class: 'ok-count', title: 'delivered' }, fmtCount(w.delivered)),
    h('span', { class: 'sep' }, ' / '),
    h('span', { class: w.failed ? 'bad-count' : 'zero', title: 'failed attempts' }, fmtCount(w.failed)),
    h('div', { class: 'sub' }, fmtPct(w.successRate)));
}

function row(a, now) {
  const st = appState(a);
  const lat = a.last5m && a.last5m.p50Ms !== null ? a.last5m : a.last1h || {};
  return h('tr', { 'data-app': a.id, class: 'level-' + st.level },
    h('td', { class: 'app' }, h('a', { href: route('apps', a.id) }, a.id),
      a.opsWebhook ? h('div', { class: 'sub', title: 'serve --ops-webhook: callhook\'s own events' }, 'ops webhook') : null),
    h('td', null, h('span', { class: ['badge', st.level], title: st.detail }, st.label),
      !a.enabled && a.disabledReason ? h('div', { class: 'sub reason' }, a.disabledReason) : null),
    windowCell(a.last5m),
    windowCell(a.last1h),
    h('td', { class: 'num' }, fmtMs(lat.p50Ms), h('div', { class: 'sub' }, 'p95 ', fmtMs(lat.p95Ms))),
    h('td', { class: 'num' }, fmtCount(a.queueDepth)),
    h('td', { class: 'num' }, a.oldestPendingAgeSeconds === null ? '—' : fmtAge(a.oldestPendingAgeSeconds)),
    h('td', { class: 'lasterror' }, a.lastError
      ? [h('div', { class: 'error-text', title: a.lastError }, a.lastError),
        h('div', { class: 'sub' },
          h('span', { title: fmtTime(a.lastErrorAt) }, fmtAgo(a.lastErrorAt, now)),
          a.lastErrorMessageId ? [' · ', h('a', { href: route('messages', a.lastErrorMessageId) }, 'message')] : null)]
      : h('span', { class: 'zero' }, '—')));
}

export function mount(el, ctx) {
  const rates = h('div', { class: 'stats' });
  const tbody = h('tbody');
  const empty = h('p', { class: 'empty', hidden: true }, 'No Voice Apps yet. Create one with ',
    h('code', null, 'callhook app create'), ' or PUT /v1/voice-apps/{id} (docs/API.md).');
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  replace(el,
    h('div', { class: 'page-head' }, h('h1', null, 'Voice Apps'),
      h('p', { class: 'lead' }, 'Delivery over the last 5 minutes and hour, apps in trouble first.')),
    rates, error,
    h('div', { class: 'card flush' }, h('table', { class: 'grid overview', id: 'apps' },
      h('thead', null, h('tr', null,
        h('th', null, 'Voice App'), h('th', null, 'State'),
        h('th', { class: 'num', title: 'delivered / failed attempts, success rate' }, 'Last 5 min'),
        h('th', { class: 'num', title: 'delivered / failed attempts, success rate' }, 'Last hour'),
        h('th', { class: 'num', title: 'delivery latency of the last 5 minutes (else hour)' }, 'p50 / p95'),
        h('th', { class: 'num', title: 'messages waiting: pending, failed and delivering' }, 'Queue'),
        h('th', { class: 'num' }, 'Oldest pending'),
        h('th', null, 'Last error'))),
      tbody), empty));

  ctx.poll(async () => {
    let r;
    try {
      r = await ctx.api('GET', 'v1/voice-apps/stats');
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      error.textContent = e.status === 404
        ? 'This serve has no GET /v1/voice-apps/stats (an older callhook): the overview needs it.'
        : `Cannot read the apps' stats: ${e.message}`;
      error.hidden = false;
      throw e;
    }
    error.hidden = true;
    const apps = r.data || [];
    const trouble = apps.filter((a) => ['bad', 'warn'].includes(appState(a).level)).length;
    const queue = apps.reduce((n, a) => n + (a.queueDepth || 0), 0);
    const rt = r.rates || {};
    replace(rates,
      stat('ingested per second', fmtRate(rt.ingestedPerSecond), '/s'),
      stat('delivered per second', fmtRate(rt.deliveredPerSecond), '/s', 'good'),
      stat('failed attempts per second', fmtRate(rt.failedPerSecond), '/s', rt.failedPerSecond > 0 ? 'bad' : null),
      stat('Voice Apps', fmtCount(apps.length), null),
      stat('in trouble', fmtCount(trouble), null, trouble ? 'bad' : 'good'),
      stat('messages waiting', fmtCount(queue), null));
    rates.setAttribute('title', `per second over the last ${rt.windowSeconds || 60} s`);
    replace(tbody, apps.map((a) => row(a, r.now)));
    empty.hidden = apps.length > 0;
  }, REFRESH_MS);
}
