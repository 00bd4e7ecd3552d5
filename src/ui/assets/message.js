// One message: what it is, its attempts (time, duration, HTTP status, error class, the first
// bytes of the answer, the request headers sent), and its call record, masked unless an admin
// reveals it (GET /v1/messages/{id}/record[?reveal=true]). An admin can replay it. While it is
// still on its way (pending, delivering, failed) the page follows it by polling.

import { h, replace, fmtBytes, fmtMs, fmtTime, jsonView, route } from './dom.js';
import { statusLevel } from './state.js';

const REFRESH_MS = 1500;
const MOVING = new Set(['pending', 'delivering', 'failed']);
// The platform's CallType names (include/callhook/record.h).
const CALL_TYPES = ['GenericCall', 'AnsweredCall', 'MissedCall', 'InitialAnsweredCall', 'ActiveCall',
  'VoiceMail', 'CallTransfered', 'CallAnsweredManually', 'OutboundCall'];

function facts(m) {
  const row = (label, ...value) => [h('dt', null, label), h('dd', null, ...value)];
  return h('dl', { class: 'facts wide', id: 'message-facts' },
    row('Voice App', h('a', { href: route('apps', m.voiceAppId) }, m.voiceAppId), m.appDeleted ? h('span', { class: 'badge bad' }, 'deleted') : null),
    row('Event', m.event),
    row('ActiveCallId', h('code', { id: 'message-callid' }, m.dedupeKey)),
    row('CorrelationId', m.correlationId ? h('code', null, m.correlationId) : '—'),
    row('Call type', m.callType === null || m.callType === undefined ? '—' : `${m.callType}${CALL_TYPES[m.callType] ? ' (' + CALL_TYPES[m.callType] + ')' : ''}`),
    row('Created', fmtTime(m.createdAt)),
    row('Delivered', fmtTime(m.deliveredAt)),
    MOVING.has(m.status) && m.nextAttemptAt ? row('Next attempt', fmtTime(m.nextAttemptAt)) : null,
    row('Attempts', String(m.attemptCount)),
    row('Record', fmtBytes(m.bodyBytes)),
    row('Last error', m.lastError ? h('span', { class: 'error-text' }, m.lastError) : '—'));
}

function headersTable(headers) {
  const entries = Object.entries(headers || {});
  if (entries.length === 0) {
    return h('p', { class: 'sub' }, 'None recorded: this attempt sent nothing (refused by the address check, or its app or URL gone), or an earlier callhook made it.');
  }
  return h('table', { class: 'kv' }, entries.map(([k, v]) => h('tr', null, h('td', null, h('code', null, k)), h('td', null, h('code', null, v)))));
}

function attemptsTable(attempts, open) {
  if (!attempts || attempts.length === 0) return h('p', { class: 'empty' }, 'No attempt yet.');
  const rows = [];
  attempts.forEach((a, i) => {
    const ok = a.httpStatus >= 200 && a.httpStatus < 300;
    const details = h('details', { class: 'headers' }, h('summary', null, `Request headers (${Object.keys(a.requestHeaders || {}).length})`),
      headersTable(a.requestHeaders));
    details.open = open.has(i);
    details.addEventListener('toggle', () => (details.open ? open.add(i) : open.delete(i)));
    rows.push(h('tr', { class: ok ? 'attempt ok' : 'attempt failed', 'data-attempt': String(i + 1) },
      h('td', { class: 'num' }, String(i + 1)),
      h('td', { class: 'nowrap' }, fmtTime(a.at)),
      h('td', { class: 'num' }, fmtMs(a.durationMs)),
      h('td', { class: 'num' }, h('span', { class: ['badge', ok ? 'ok' : 'bad'] }, a.httpStatus ? String(a.httpStatus) : 'none')),
      h('td', null, a.errorClass || '—'),
      h('td', { class: 'error-text' }, a.error || ''),
      h('td', { class: 'response-cell' }, a.response === null || a.response === undefined || a.response === ''
        ? h('span', { class: 'zero' }, a.response === null ? '(not UTF-8)' : '(empty)')
        : h('pre', { class: 'response' }, a.response))));
    rows.push(h('tr', { class: 'attempt-headers' }, h('td'), h('td', { colspan: '6' }, details)));
  });
  return h('table', { class: 'grid attempts', id: 'attempts' }, h('thead', null, h('tr', null, h('th', { class: 'num' }, '#'),
    h('th', null, 'Time'), h('th', { class: 'num' }, 'Duration'), h('th', { class: 'num' }, 'HTTP'), h('th', null, 'Error class'),
    h('th', null, 'Error'), h('th', null, 'Response (first bytes)'))), h('tbody', null, rows));
}

export function mount(el, ctx, id) {
  const badge = h('span', { class: 'badge idle', id: 'message-status' }, '…');
  const factsBox = h('div', null, h('p', { class: 'empty' }, 'Loading…'));
  const attemptsBox = h('div');
  const recordBox = h('div', { id: 'record' });
  const recordHead = h('div', { class: 'record-head' });
  const result = h('div', { class: 'result', id: 'action-result', role: 'status', hidden: true });
  const actions = h('div', { class: 'actions' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const openHeaders = new Set();
  let message = null;
  let revealed = false;
  let polling = false;

  replace(el,
    h('nav', { class: 'crumbs' }, h('a', { href: '#/messages' }, 'Messages'), ' › ', id),
    h('div', { class: 'page-head' }, h('h1', null, 'Message ', badge), h('p', { class: 'lead mono' }, id)),
    error, ctx.admin ? actions : null, result,
    h('section', { class: 'card' }, factsBox),
    h('section', { class: 'card' }, h('h2', null, 'Attempts'), attemptsBox),
    h('section', { class: 'card' }, h('h2', null, 'Call record'), recordHead, recordBox));

  const say = (text, level) => {
    result.className = 'result ' + (level || 'ok');
    result.hidden = false;
    replace(result, text);
  };

  const render = () => {
    badge.className = 'badge ' + statusLevel(message.status);
    badge.textContent = message.status;
    replace(factsBox, facts(message));
    replace(attemptsBox, attemptsTable(message.attempts, openHeaders));
    if (ctx.admin) {
      const replayable = !message.appDeleted && message.status !== 'skipped' && message.status !== 'delivering' && message.bodyBytes > 0;
      replace(actions, h('div', { class: 'buttons' },
        h('button', { type: 'button', class: 'action', id: 'action-replay', disabled: !replayable, onclick: () => replay(false) }, 'Replay'),
        h('button', { type: 'button', class: 'action', id: 'action-replay-new', disabled: !replayable, onclick: () => replay(true) }, 'Replay as a new message'),
        h('span', { class: 'sub' }, replayable ? 'Replay sends the same webhook-id again; a new message gets one of its own.'
          : 'Nothing to replay now (skipped, deleted app, no record, or being delivered).')));
    }
  };

  const load = async () => {
    message = await ctx.api('GET', `v1/messages/${encodeURIComponent(id)}`);
    error.hidden = true;
    render();
    if (MOVING.has(message.status)) follow();
  };

  // Polls while the message moves; stops once it is delivered, dead or skipped.
  const follow = () => {
    if (polling) return;
    polling = true;
    const tick = async () => {
      if (ctx.signal.aborted) return;
      try {
        message = await ctx.api('GET', `v1/messages/${encodeURIComponent(id)}`);
        render();
      } catch (e) {
        if (e.name === 'AbortError') return;
      }
      if (message && MOVING.has(message.status)) setTimeout(tick, REFRESH_MS);
      else polling = false;
    };
    setTimeout(tick, REFRESH_MS);
  };

  const replay = async (newId) => {
    try {
      const r = await ctx.api('POST', `v1/messages/${encodeURIComponent(id)}/replay`, { query: newId ? { newId: 'true' } : {} });
      if (newId) {
        say(h('span', null, 'Replayed as a new message: ', h('a', { href: route('messages', r.messageId) }, r.messageId)), 'ok');
        return;
      }
      say('Replay queued: it is delivered again now.', 'ok');
      message.status = 'pending';
      render();
      follow();
    } catch (e) {
      if (e.name !== 'AbortError') say(`Cannot replay: ${e.message}`, 'bad');
    }
  };

  const loadRecord = async () => {
    replace(recordBox, h('p', { class: 'empty' }, 'Loading…'));
    try {
      const r = await ctx.api('GET', `v1/messages/${encodeURIComponent(id)}/record`, { query: revealed ? { reveal: 'true' } : {} });
      replace(recordHead,
        h('span', { class: ['badge', r.masked ? 'info' : 'warn'], id: 'record-state' }, r.masked ? 'masked' : 'revealed'),
        h('span', { class: 'sub' }, r.masked ? ' Personal fields are masked, as in the logs.' : ' Personal data shown: close the page when done.'),
        ctx.admin ? h('button', { type: 'button', class: 'quiet small action', id: 'reveal', onclick: () => { revealed = !revealed; loadRecord(); } },
          revealed ? 'Mask again' : 'Reveal personal fields') : null);
      replace(recordBox, typeof r.record === 'string' ? h('pre', { class: 'json' }, r.record) : jsonView(r.record));
    } catch (e) {
      if (e.name === 'AbortError') return;
      replace(recordBox, h('p', { class: e.status === 409 ? 'empty' : 'error' },
        e.status === 409 ? 'Retention removed this record (the message and its attempts remain).'
          : e.status === 404 && !message ? e.message : `Cannot read the record: ${e.message}`));
    }
  };

  load().then(loadRecord).catch((e) => {
    if (e.name === 'AbortError') return;
    error.textContent = e.status === 404 ? `There is no message '${id}'.` : `Cannot read the message: ${e.message}`;
    error.hidden = false;
  });
}
