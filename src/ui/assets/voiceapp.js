// One Voice App: its state and numbers (GET /v1/voice-apps/{id}/stats, polled), the last hour
// as a chart, its settings (GET /v1/voice-apps/{id}; header values and the signing secret
// hidden until an admin asks), its latest messages, and for an admin key the actions: enable
// or disable, a test event, rotate the secret, recover since a time.

import { h, replace, fmtAge, fmtAgo, fmtCount, fmtMs, fmtPct, fmtTime, fromLocalInput, route, toLocalInput } from './dom.js';
import { appState, statusLevel } from './state.js';
import { deliveryChart } from './chart.js';

const REFRESH_MS = 2000;

function windowCard(title, w) {
  w = w || {};
  return h('div', { class: 'card mini' }, h('h3', null, title), h('dl', { class: 'facts' },
    h('dt', null, 'Ingested'), h('dd', { class: 'num' }, fmtCount(w.ingested)),
    h('dt', null, 'Delivered'), h('dd', { class: 'num' }, fmtCount(w.delivered)),
    h('dt', null, 'Failed attempts'), h('dd', { class: ['num', w.failed ? 'bad-count' : null] }, fmtCount(w.failed)),
    h('dt', null, 'Gone dead'), h('dd', { class: ['num', w.dead ? 'bad-count' : null] }, fmtCount(w.dead)),
    h('dt', null, 'Success rate'), h('dd', { class: 'num' }, fmtPct(w.successRate)),
    h('dt', null, 'Latency p50 / p95'), h('dd', { class: 'num' }, fmtMs(w.p50Ms), ' / ', fmtMs(w.p95Ms))));
}

function queueCard(a, now) {
  return h('div', { class: 'card mini' }, h('h3', null, 'Queue'), h('dl', { class: 'facts' },
    h('dt', null, 'Waiting'), h('dd', { class: 'num' }, fmtCount(a.queueDepth)),
    h('dt', null, 'Oldest pending'), h('dd', { class: 'num' },
      a.oldestPendingAgeSeconds === null ? '—' : fmtAge(a.oldestPendingAgeSeconds)),
    h('dt', null, 'Last error'), h('dd', { class: 'lasterror' }, a.lastError
      ? [h('span', { class: 'error-text' }, a.lastError), h('div', { class: 'sub' }, fmtAgo(a.lastErrorAt, now),
        a.lastErrorMessageId ? [' · ', h('a', { href: route('messages', a.lastErrorMessageId) }, 'message')] : null)]
      : '—')));
}

const yesNo = (v) => (v ? 'yes' : 'no');

function settingsTable(app, admin, showValues, onToggle) {
  const rows = [];
  const add = (label, ...value) => rows.push(h('tr', null, h('th', null, label), h('td', null, ...value)));
  const url = (u) => (u ? h('code', { class: 'url' }, u) : h('span', { class: 'zero' }, 'none (events are recorded as skipped)'));
  add('begin-call URL', url(app.BeginCallEventProcessingUrl));
  add('end-call URL', url(app.EndCallEventProcessingUrl));
  add('Enabled', yesNo(app.enabled), app.disabledReason ? h('span', { class: 'sub' }, ` — ${app.disabledReason}`) : null);
  add('Ordering', app.ordering || '—');
  add('Timeouts', `connect ${fmtMs(app.connectTimeoutMs)}, whole attempt ${fmtMs(app.timeoutMs)}`);
  add('Retry schedule', (app.retryScheduleSeconds || []).map((x) => fmtAge(x)).join(' → ') || '—');
  add('In flight at most', String(app.maxInFlight ?? '—'));
  add('Rate limit', app.rateLimitPerSecond ? `${app.rateLimitPerSecond} attempts/s` : 'none');
  add('Plain http allowed', yesNo(app.allowInsecureHttp));
  add('Private network allowed', yesNo(app.allowPrivateNetwork));
  const tls = app.tls || {};
  if (tls.caFile || tls.clientCertFile) {
    add('TLS', [tls.caFile ? `CA ${tls.caFile}` : null, tls.clientCertFile ? `client certificate ${tls.clientCertFile}` : null]
      .filter(Boolean).join(', '));
  }
  const headers = Object.entries(app.headers || {});
  if (headers.length === 0) {
    add('Extra headers', h('span', { class: 'zero' }, 'none'));
  } else {
    add('Extra headers', h('table', { class: 'kv' }, headers.map(([name, value]) => h('tr', null,
      h('td', null, h('code', null, name)),
      h('td', { class: 'secret-value' }, admin && showValues ? h('code', null, value)
        : h('span', { class: 'hidden-value' }, admin ? 'hidden' : 'hidden (admin keys only)'))))),
    admin ? h('button', { type: 'button', class: 'quiet small action', id: 'toggle-headers', onclick: onToggle },
      showValues ? 'Hide values' : 'Show values') : null);
  }
  add('Created', fmtTime(app.createdAt));
  add('Updated', fmtTime(app.updatedAt));
  return h('table', { class: 'settings' }, h('tbody', null, rows));
}

function messagesTable(list) {
  if (list.length === 0) return h('p', { class: 'empty' }, 'No messages yet.');
  return h('table', { class: 'grid' }, h('thead', null, h('tr', null, h('th', null, 'Created'), h('th', null, 'Event'),
    h('th', null, 'Status'), h('th', { class: 'num' }, 'Attempts'), h('th', null, 'ActiveCallId'), h('th', null, 'Last error'))),
  h('tbody', null, list.map((m) => h('tr', { 'data-message': m.id },
    h('td', { class: 'nowrap' }, h('a', { href: route('messages', m.id) }, fmtTime(m.createdAt, true))),
    h('td', { class: 'nowrap' }, m.event),
    h('td', null, h('span', { class: ['badge', statusLevel(m.status)] }, m.status)),
    h('td', { class: 'num' }, String(m.attemptCount)),
    h('td', null, h('code', { class: 'callid' }, m.dedupeKey)),
    h('td', { class: 'error-text' }, m.lastError || '')))));
}

export function mount(el, ctx, id) {
  const badge = h('span', { class: 'badge idle', id: 'app-state' }, '…');
  const reason = h('span', { class: 'sub reason' });
  const cards = h('div', { class: 'cards' });
  const chart = h('div', { class: 'chart-box' }, h('p', { class: 'empty' }, 'Loading…'));
  const settings = h('div', null, h('p', { class: 'empty' }, 'Loading…'));
  const secret = h('div', { class: 'secret-box' });
  const recent = h('div');
  const result = h('div', { class: 'result', id: 'action-result', role: 'status', hidden: true });
  const actions = h('div', { class: 'actions' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  let app = null;
  let showValues = false;

  replace(el,
    h('nav', { class: 'crumbs' }, h('a', { href: '#/' }, 'Overview'), ' › ', id),
    h('div', { class: 'page-head' }, h('h1', null, id, ' ', badge), reason),
    error,
    ctx.admin ? actions : null,
    result,
    cards,
    h('section', { class: 'card' }, h('h2', null, 'Last hour, per minute'),
      h('div', { class: 'legend' }, h('span', { class: 'key delivered' }), 'delivered ',
        h('span', { class: 'key failed' }), 'failed attempts ', h('span', { class: 'key ingested' }), 'ingested'), chart),
    h('div', { class: 'two' },
      h('section', { class: 'card' }, h('h2', null, 'Settings'), settings, ctx.admin ? secret : null),
      h('section', { class: 'card' }, h('h2', null, 'Latest messages'), recent,
        h('p', null, h('a', { href: `#/messages?voiceAppId=${encodeURIComponent(id)}` }, 'Search the messages of this app →')))));

  const say = (text, level) => {
    result.className = 'result ' + (level || 'ok');
    result.hidden = false;
    replace(result, text);
  };
  const failed = (what) => (e) => {
    if (e.name !== 'AbortError') say(`${what}: ${e.message}`, 'bad');
  };

  const renderSettings = () => {
    if (!app) return;
    replace(settings, settingsTable(app, ctx.admin, showValues, () => {
      showValues = !showValues;
      renderSettings();
    }));
  };
  const loadSettings = async () => {
    try {
      app = await ctx.api('GET', `v1/voice-apps/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.name === 'AbortError') return;
      error.textContent = e.status === 404 ? `There is no Voice App '${id}'.` : `Cannot read the app: ${e.message}`;
      error.hidden = false;
      return;
    }
    renderSettings();
    renderActions();
  };

  // ---- actions (admin) ----
  let confirming = null; // which action asks for confirmation
  const renderActions = () => {
    if (!ctx.admin || !app) return;
    const buttons = [];
    if (app.enabled) {
      buttons.push(h('button', { type: 'button', class: 'action danger', id: 'action-disable', onclick: () => { confirming = 'disable'; renderActions(); } }, 'Disable'));
    } else {
      buttons.push(h('button', { type: 'button', class: 'action', id: 'action-enable', onclick: enable }, 'Enable'));
    }
    const eventSelect = h('select', { id: 'test-event', 'aria-label': 'event of the test' },
      h('option', { value: 'begin-call' }, 'begin-call'), h('option', { value: 'end-call' }, 'end-call'));
    if (!app.BeginCallEventProcessingUrl && app.EndCallEventProcessingUrl) eventSelect.value = 'end-call';
    buttons.push(h('span', { class: 'group' }, eventSelect,
      h('button', { type: 'button', class: 'action', id: 'action-test', onclick: () => sendTest(eventSelect.value) }, 'Send a test event')));
    buttons.push(h('button', { type: 'button', class: 'action quiet', id: 'action-rotate', onclick: () => { confirming = 'rotate'; renderActions(); } }, 'Rotate secret…'));
    buttons.push(h('button', { type: 'button', class: 'action quiet', id: 'action-recover', onclick: () => { confirming = 'recover'; renderActions(); } }, 'Recover…'));
    const panel = confirmPanel();
    replace(actions, h('div', { class: 'buttons' }, buttons), panel);
  };

  const cancel = () => { confirming = null; renderActions(); };
  const confirmPanel = () => {
    if (confirming === 'disable') {
      return h('div', { class: 'confirm' }, 'Disable this app? Its events are still accepted and wait until it is enabled again. ',
        h('button', { type: 'button', class: 'action danger', id: 'confirm-disable', onclick: disable }, 'Disable'),
        h('button', { type: 'button', class: 'quiet', onclick: cancel }, 'Cancel'));
    }
    if (confirming === 'rotate') {
      const grace = h('input', { type: 'number', min: '0', value: '86400', id: 'rotate-grace', class: 'short' });
      return h('div', { class: 'confirm' }, 'A new signing secret; the old one still signs for ', grace,
        ' seconds, so receivers can switch. ',
        h('button', { type: 'button', class: 'action danger', id: 'confirm-rotate', onclick: () => rotate(Number(grace.value)) }, 'Rotate'),
        h('button', { type: 'button', class: 'quiet', onclick: cancel }, 'Cancel'));
    }
    if (confirming === 'recover') {
      const since = h('input', { type: 'datetime-local', id: 'recover-since', value: toLocalInput(Date.now() / 1000 - 3600) });
      return h('div', { class: 'confirm' }, 'Deliver again every dead or failed message created since ', since, ' ',
        h('button', { type: 'button', class: 'action', id: 'confirm-recover', onclick: () => recover(fromLocalInput(since.value)) }, 'Recover'),
        h('button', { type: 'button', class: 'quiet', onclick: cancel }, 'Cancel'));
    }
    return null;
  };

  const patchEnabled = async (enabled) => {
    confirming = null;
    try {
      app = await ctx.api('PATCH', `v1/voice-apps/${encodeURIComponent(id)}`, { body: { enabled } });
      say(enabled ? 'Enabled: waiting events are delivered again.' : 'Disabled: events wait until the app is enabled.', 'ok');
      renderSettings();
      renderActions();
      refresh().catch(() => {});
    } catch (e) {
      failed(enabled ? 'Cannot enable' : 'Cannot disable')(e);
    }
  };
  const enable = () => patchEnabled(true);
  const disable = () => patchEnabled(false);

  const sendTest = async (event) => {
    say('Sending a test event…', 'info');
    try {
      const r = await ctx.api('POST', `v1/voice-apps/${encodeURIComponent(id)}/test`, { query: { event } });
      const ok = r.httpStatus >= 200 && r.httpStatus < 300;
      say(h('div', null,
        h('b', null, ok ? 'The receiver took the test event' : 'The test event failed'),
        ` — ${r.event} to `, h('code', null, r.url), `: HTTP ${r.httpStatus || 'none'} in ${fmtMs(r.durationMs)}`,
        r.errorClass ? ` (${r.errorClass}${r.error ? ': ' + r.error : ''})` : '',
        r.response ? h('pre', { class: 'response' }, r.response) : null,
        h('div', { class: 'sub' }, 'Not stored: a test send is no message (webhook-id ', r.webhookId, ').')), ok ? 'ok' : 'bad');
    } catch (e) {
      failed('Cannot send a test event')(e);
    }
  };

  const showSecret = (r, title) => {
    replace(secret, h('div', { class: 'secret-shown' }, h('h3', null, title),
      h('dl', { class: 'facts' }, h('dt', null, 'Secret'), h('dd', null, h('code', { id: 'secret-value' }, r.secret)),
        r.previous ? [h('dt', null, 'Previous (still signs)'), h('dd', null, h('code', null, r.previous)),
          h('dt', null, 'Until'), h('dd', null, fmtTime(r.previousExpiresAt))] : null),
      h('button', { type: 'button', class: 'quiet small', onclick: hideSecret }, 'Hide')));
  };
  const hideSecret = () => replace(secret, h('button', {
    type: 'button', class: 'quiet action', id: 'show-secret',
    onclick: async () => {
      try {
        showSecret(await ctx.api('GET', `v1/voice-apps/${encodeURIComponent(id)}/secret`), 'Signing secret');
      } catch (e) {
        failed('Cannot read the secret')(e);
      }
    },
  }, 'Show the signing secret'));
  hideSecret();

  const rotate = async (graceSeconds) => {
    confirming = null;
    renderActions();
    try {
      const r = await ctx.api('POST', `v1/voice-apps/${encodeURIComponent(id)}/secret/rotate`,
        { body: Number.isFinite(graceSeconds) ? { graceSeconds } : {} });
      say('Rotated: the new secret signs from now on; give it to the receiver (shown under Settings).', 'ok');
      showSecret(r, 'New signing secret');
    } catch (e) {
      failed('Cannot rotate the secret')(e);
    }
  };

  const recover = async (since) => {
    if (since === null) {
      say('Choose a time to recover from.', 'bad');
      return;
    }
    confirming = null;
    renderActions();
    try {
      const r = await ctx.api('POST', `v1/voice-apps/${encodeURIComponent(id)}/recover`, { query: { since } });
      say(`${fmtCount(r.requeued)} ${r.requeued === 1 ? 'message' : 'messages'} created since ${fmtTime(since)} ${r.requeued === 1 ? 'is' : 'are'} due again.`, 'ok');
      refresh().catch(() => {});
    } catch (e) {
      failed('Cannot recover')(e);
    }
  };

  // ---- the polled part ----
  let statsMissing = false;
  const refresh = async () => {
    const [st, list] = await Promise.all([
      statsMissing ? null : ctx.api('GET', `v1/voice-apps/${encodeURIComponent(id)}/stats`).catch((e) => {
        if (e.status !== 404 || !app) throw e;
        statsMissing = true; // an older serve: no stats endpoint
        return null;
      }),
      ctx.api('GET', 'v1/messages', { query: { voiceAppId: id, limit: 10 } }),
    ]);
    replace(recent, messagesTable(list.data || []));
    if (!st) {
      replace(chart, h('p', { class: 'empty' }, 'This serve has no per-app stats (GET /v1/voice-apps/{id}/stats).'));
      return;
    }
    const state = appState(st);
    badge.className = 'badge ' + state.level;
    badge.textContent = state.label;
    badge.title = state.detail;
    reason.textContent = !st.enabled ? st.disabledReason || 'disabled by an operator' : '';
    replace(cards, windowCard('Last 5 minutes', st.last5m), windowCard('Last hour', st.last1h), queueCard(st, Date.now() / 1000));
    replace(chart, deliveryChart(st.series || [], chart.clientWidth));
    // The app's settings follow a change made elsewhere (a 410 disables it).
    if (app && app.enabled !== st.enabled) loadSettings();
  };

  loadSettings().then(() => {
    if (app) ctx.poll(refresh, REFRESH_MS);
  });
}
