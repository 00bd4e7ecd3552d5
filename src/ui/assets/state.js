// What an app's numbers mean for an operator: one word and a colour, the same on every view.

// appstats (GET /v1/voice-apps/stats) → { level: 'bad'|'warn'|'ok'|'idle', label, detail }.
export function appState(a) {
  const m5 = a.last5m || {};
  const h1 = a.last1h || {};
  if (!a.enabled) {
    return { level: 'bad', label: 'disabled', detail: a.disabledReason || 'disabled by an operator' };
  }
  if (m5.failed > 0 && !m5.delivered) {
    return { level: 'bad', label: 'failing', detail: `${m5.failed} failed attempts, none delivered in 5 min` };
  }
  if (h1.dead > 0) {
    return { level: 'bad', label: 'dead messages', detail: `${h1.dead} messages went dead in the last hour` };
  }
  if (m5.failed > 0) {
    return { level: 'warn', label: 'some failures', detail: `${m5.failed} failed attempts in 5 min` };
  }
  if (a.oldestPendingAgeSeconds !== null && a.oldestPendingAgeSeconds > 300) {
    return { level: 'warn', label: 'behind', detail: 'the oldest event waiting is over 5 min old' };
  }
  if (!h1.delivered && !h1.failed && !a.queueDepth) {
    return { level: 'idle', label: 'idle', detail: 'no delivery in the last hour' };
  }
  return { level: 'ok', label: 'healthy', detail: 'delivering' };
}

// A message's status → a badge level.
export function statusLevel(status) {
  switch (status) {
    case 'delivered': return 'ok';
    case 'dead': return 'bad';
    case 'failed': return 'warn';
    case 'pending':
    case 'delivering': return 'info';
    default: return 'idle';
  }
}
