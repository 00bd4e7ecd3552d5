// Messages: a search (app, event, status, ActiveCallId, CorrelationId, a time range) over
// GET /v1/messages, newest first, a page at a time through nextCursor. The search lives in the
// address (#/messages?voiceAppId=...&cursor=...), so a search can be shared and Back works.

import { h, replace, fmtTime, fromLocalInput, route, toLocalInput } from './dom.js';
import { statusLevel } from './state.js';

const PAGE = 50;
const FILTERS = ['voiceAppId', 'event', 'status', 'activeCallId', 'correlationId', 'since', 'until'];
const STATUSES = ['pending', 'delivering', 'delivered', 'failed', 'dead', 'skipped'];

function hashFor(query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  const text = q.toString();
  return '#/messages' + (text ? '?' + text : '');
}

function field(label, control) {
  return h('label', { class: 'field' }, h('span', null, label), control);
}

// A click anywhere on a row opens its message (a click on a link goes where the link says).
function openRow(ev) {
  if (ev.target.closest('a')) return;
  location.hash = route('messages', ev.currentTarget.dataset.message);
}

export function mount(el, ctx, params) {
  const query = {};
  for (const k of FILTERS) query[k] = params.get(k) || '';
  const cursor = params.get('cursor') || '';

  const app = h('select', { name: 'voiceAppId', id: 'f-app' }, h('option', { value: '' }, 'any'));
  if (query.voiceAppId) app.append(h('option', { value: query.voiceAppId }, query.voiceAppId));
  app.value = query.voiceAppId;
  const event = h('select', { name: 'event', id: 'f-event' }, h('option', { value: '' }, 'any'),
    h('option', { value: 'begin-call' }, 'begin-call'), h('option', { value: 'end-call' }, 'end-call'));
  event.value = query.event;
  const status = h('select', { name: 'status', id: 'f-status' }, h('option', { value: '' }, 'any'),
    STATUSES.map((st) => h('option', { value: st }, st)));
  status.value = query.status;
  const callId = h('input', { type: 'search', id: 'f-active-call-id', value: query.activeCallId, spellcheck: 'false', placeholder: 'exact' });
  const corrId = h('input', { type: 'search', id: 'f-correlation-id', value: query.correlationId, spellcheck: 'false', placeholder: 'exact' });
  const since = h('input', { type: 'datetime-local', id: 'f-since', value: query.since ? toLocalInput(Number(query.since)) : '' });
  const until = h('input', { type: 'datetime-local', id: 'f-until', value: query.until ? toLocalInput(Number(query.until)) : '' });
  const form = h('form', { class: 'filters card', id: 'search' },
    field('Voice App', app), field('Event', event), field('Status', status),
    field('ActiveCallId', callId), field('CorrelationId', corrId), field('Created from', since), field('until', until),
    h('div', { class: 'field buttons' }, h('button', { type: 'submit', id: 'search-submit' }, 'Search'),
      h('button', { type: 'button', class: 'quiet', onclick: () => { location.hash = '#/messages'; } }, 'Clear')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next = {
      voiceAppId: app.value, event: event.value, status: status.value,
      activeCallId: callId.value.trim(), correlationId: corrId.value.trim(),
      since: fromLocalInput(since.value), until: fromLocalInput(until.value),
    };
    const target = hashFor(next);
    if (location.hash === target) window.dispatchEvent(new HashChangeEvent('hashchange')); // again
    else location.hash = target;
  });

  const body = h('div', { class: 'card flush' }, h('p', { class: 'empty' }, 'Searching…'));
  const pager = h('div', { class: 'pager' });
  replace(el, h('div', { class: 'page-head' }, h('h1', null, 'Messages'),
    h('p', { class: 'lead' }, 'Every event callhook took, newest first. Open one to see its attempts and its record.')),
  form, body, pager);

  // The app list for the select (the apps that exist now; a search by an id typed into the
  // address works too).
  ctx.api('GET', 'v1/voice-apps').then((r) => {
    for (const a of r.data || []) {
      if (a.id !== query.voiceAppId) app.append(h('option', { value: a.id }, a.id));
    }
  }).catch(() => {});

  const q = { ...query, limit: PAGE, cursor };
  ctx.api('GET', 'v1/messages', { query: q }).then((r) => {
    const list = r.data || [];
    if (list.length === 0) {
      replace(body, h('p', { class: 'empty', id: 'no-messages' }, cursor ? 'No older messages.' : 'No message matches this search.'));
    } else {
      replace(body, h('table', { class: 'grid', id: 'messages' },
        h('thead', null, h('tr', null, h('th', null, 'Created'), h('th', null, 'Voice App'), h('th', null, 'Event'),
          h('th', null, 'Status'), h('th', { class: 'num' }, 'Attempts'), h('th', null, 'ActiveCallId'), h('th', null, 'Last error'))),
        h('tbody', null, list.map((m) => h('tr', { 'data-message': m.id, class: 'link', onclick: openRow },
          h('td', { class: 'nowrap' }, h('a', { href: route('messages', m.id), class: 'open' }, fmtTime(m.createdAt))),
          h('td', null, h('a', { href: route('apps', m.voiceAppId) }, m.voiceAppId)),
          h('td', null, m.event),
          h('td', null, h('span', { class: ['badge', statusLevel(m.status)] }, m.status)),
          h('td', { class: 'num' }, String(m.attemptCount)),
          h('td', null, h('code', { class: 'callid' }, m.dedupeKey)),
          h('td', { class: 'error-text' }, m.lastError || ''))))));
    }
    replace(pager,
      cursor ? h('a', { class: 'button quiet', href: hashFor(query) }, '← Newest') : null,
      h('span', { class: 'sub' }, `${list.length} message${list.length === 1 ? '' : 's'} on this page`),
      r.nextCursor ? h('a', { class: 'button', id: 'next-page', href: hashFor({ ...query, cursor: r.nextCursor }) }, 'Older →') : null);
  }).catch((e) => {
    if (e.name === 'AbortError') return;
    replace(body, h('p', { class: 'error', role: 'alert' }, `The search failed: ${e.message}`));
  });
}
