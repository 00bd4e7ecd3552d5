// Recent operational events (GET /v1/ops-events): what callhook told the ops webhook about its
// own state (an app disabled, a message dead, a backlog too old, a recovery), newest first, a
// page at a time; the first page refreshes itself. docs/OPERATIONS.md describes them.

import { h, replace, fmtTime, jsonView, route } from './dom.js';
import { statusLevel } from './state.js';

const REFRESH_MS = 5000;
const PAGE = 50;

const TYPES = {
  'voice_app.disabled': ['bad', 'app disabled'],
  'message.dead': ['bad', 'message dead'],
  'voice_app.backlog_old': ['warn', 'backlog old'],
  'voice_app.enabled': ['ok', 'app enabled'],
  'voice_app.recovered': ['ok', 'recovered'],
};

function eventRow(e) {
  const [level, label] = TYPES[e.type] || ['idle', e.type];
  return [
    h('tr', { 'data-ops-event': e.id },
      h('td', { class: 'nowrap' }, fmtTime(e.createdAt)),
      h('td', null, h('span', { class: ['badge', level], title: e.type }, label)),
      h('td', null, e.voiceAppId ? h('a', { href: route('apps', e.voiceAppId) }, e.voiceAppId) : '—'),
      h('td', null, h('span', { class: ['badge', statusLevel(e.status)], title: 'delivery to the ops webhook' }, e.status || '—')),
      h('td', { class: 'num' }, String(e.attemptCount ?? '—')),
      h('td', { class: 'error-text' }, e.lastError || ''),
      h('td', null, h('details', null, h('summary', null, 'payload'), jsonView(e.payload ?? null)))),
  ];
}

export function mount(el, ctx, params) {
  const cursor = params.get('cursor') || '';
  const body = h('div', { class: 'card flush' }, h('p', { class: 'empty' }, 'Loading…'));
  const pager = h('div', { class: 'pager' });
  replace(el, h('div', { class: 'page-head' }, h('h1', null, 'Ops events'),
    h('p', { class: 'lead' }, 'What callhook sent to its operational webhook (--ops-webhook), newest first.')),
  body, pager);

  const open = new Set(); // payloads left open across refreshes
  const load = async () => {
    let r;
    try {
      r = await ctx.api('GET', 'v1/ops-events', { query: { limit: PAGE, cursor } });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      replace(body, h('p', { class: e.status === 404 ? 'empty' : 'error' }, e.status === 404
        ? 'This serve has no GET /v1/ops-events (an older callhook).'
        : `Cannot read the ops events: ${e.message}`));
      throw e;
    }
    const list = r.data || [];
    if (list.length === 0) {
      replace(body, h('p', { class: 'empty', id: 'no-ops-events' }, cursor ? 'No older events.'
        : 'No operational event yet. callhook records one when an app is disabled, a message goes dead, a backlog grows old, or an app recovers.'));
    } else {
      const table = h('table', { class: 'grid', id: 'ops-events' },
        h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Event'), h('th', null, 'Voice App'),
          h('th', null, 'Sent'), h('th', { class: 'num' }, 'Attempts'), h('th', null, 'Last error'), h('th', null, ''))),
        h('tbody', null, list.map(eventRow)));
      for (const d of table.querySelectorAll('details')) {
        const id = d.closest('tr').dataset.opsEvent;
        d.open = open.has(id);
        d.addEventListener('toggle', () => (d.open ? open.add(id) : open.delete(id)));
      }
      replace(body, table);
    }
    replace(pager,
      cursor ? h('a', { class: 'button quiet', href: '#/ops' }, '← Newest') : null,
      h('span', { class: 'sub' }, `${list.length} event${list.length === 1 ? '' : 's'} on this page`),
      r.nextCursor ? h('a', { class: 'button', href: `#/ops?cursor=${encodeURIComponent(r.nextCursor)}` }, 'Older →') : null);
  };

  if (cursor) load().catch(() => {});
  else ctx.poll(load, REFRESH_MS);
}
