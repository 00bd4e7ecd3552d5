// The JSON API of the serve that answered this page, reached relative to the page's own address
// (<base>ui/ is the page, <base>v1/... the API), so the console works behind a path prefix. The
// key lives in this tab's sessionStorage and goes out as Authorization: Bearer, never in a
// cookie (credentials are omitted: no cookie is sent, none is kept).

const STORAGE_KEY = 'callhook.apiKey';

// This module is <base>ui/api.js: one folder up is the API's base.
export const apiBase = new URL('../', import.meta.url);

export const session = {
  get key() {
    return sessionStorage.getItem(STORAGE_KEY) || '';
  },
  set key(value) {
    sessionStorage.setItem(STORAGE_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(STORAGE_KEY);
  },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0: no answer
    this.code = code || '';
  }
}

// api('GET', 'v1/messages', {query: {voiceAppId: 'x'}}) → the parsed JSON answer (null for
// 204). Throws ApiError with the API's own message; AbortError when signal aborts.
export async function api(method, path, { query, body, signal, key } = {}) {
  const url = new URL(path, apiBase);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const headers = { Accept: 'application/json', Authorization: 'Bearer ' + (key ?? session.key) };
  const init = { method, headers, signal, cache: 'no-store', credentials: 'omit', redirect: 'error' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'unreachable',
      `callhook serve does not answer at ${apiBase.href} (${e.message}); is it running?`);
  }
  const text = await resp.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!resp.ok) {
    const err = json && json.error;
    throw new ApiError(resp.status, err && err.code,
      (err && err.message) || `${method} ${url.pathname} answered HTTP ${resp.status}`);
  }
  return json;
}

// The key's role: "read", "admin" or "ingest".
export async function whoami(key) {
  const r = await api('GET', 'v1/whoami', { key });
  return r.role;
}
