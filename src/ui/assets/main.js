// The console's entry: sign-in, the header, and the router from the address's #fragment to a
// view (overview.js, voiceapp.js, messages.js, message.js, ops.js). A view is mounted into
// <main> with a context and unmounted (its polling stopped, its requests aborted) when the
// fragment changes.

import { ApiError, api, session, whoami } from './api.js';
import { h, replace } from './dom.js';
import * as overview from './overview.js';
import * as voiceapp from './voiceapp.js';
import * as messages from './messages.js';
import * as message from './message.js';
import * as ops from './ops.js';

const main = document.getElementById('view');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const live = document.getElementById('live');

let role = null;
let current = null; // { controller, unmount }

const routes = [
  { re: /^\/?$/, nav: 'overview', mount: (el, ctx) => overview.mount(el, ctx) },
  { re: /^\/apps\/([^/]+)$/, nav: 'overview', mount: (el, ctx, m) => voiceapp.mount(el, ctx, m[1]) },
  { re: /^\/messages$/, nav: 'messages', mount: (el, ctx, m, q) => messages.mount(el, ctx, q) },
  { re: /^\/messages\/([^/]+)$/, nav: 'messages', mount: (el, ctx, m) => message.mount(el, ctx, m[1]) },
  { re: /^\/ops$/, nav: 'ops', mount: (el, ctx, m, q) => ops.mount(el, ctx, q) },
];

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const i = raw.indexOf('?');
  const path = i < 0 ? raw : raw.slice(0, i);
  const query = new URLSearchParams(i < 0 ? '' : raw.slice(i + 1));
  return { path, query };
}

function unmountCurrent() {
  if (!current) return;
  current.controller.abort();
  if (current.unmount) current.unmount();
  current = null;
}

// What every view is given.
function context(controller) {
  return {
    role,
    admin: role === 'admin',
    signal: controller.signal,
    // A request of this view: aborted when the view goes; a 401 signs out.
    api: async (method, path, options = {}) => {
      try {
        return await api(method, path, { ...options, signal: controller.signal });
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          signOut('This key is no longer accepted (401). Sign in again with a valid key.');
        }
        throw e;
      }
    },
    // Repeats fn every ms (after each run ends) while the view is mounted and the tab shown.
    poll: (fn, ms) => {
      let timer = null;
      const tick = async () => {
        if (controller.signal.aborted) return;
        if (!document.hidden) {
          try {
            await fn();
            setLive(true);
          } catch (e) {
            if (e.name !== 'AbortError') setLive(false, e.message);
          }
        }
        if (!controller.signal.aborted) timer = setTimeout(tick, ms);
      };
      controller.signal.addEventListener('abort', () => clearTimeout(timer));
      tick();
    },
  };
}

function setLive(ok, why) {
  live.hidden = false;
  live.className = ok ? 'live on' : 'live off';
  const now = new Date();
  const t = now.toTimeString().slice(0, 8);
  live.textContent = ok ? `live · ${t}` : `not refreshing · ${t}`;
  live.title = ok ? 'Refreshed by itself every few seconds' : `Last refresh failed: ${why}`;
}

function render() {
  unmountCurrent();
  if (!role) return;
  const { path, query } = parseHash();
  live.hidden = true;
  for (const route of routes) {
    const m = path.match(route.re);
    if (!m) continue;
    for (const a of nav.querySelectorAll('a')) {
      a.classList.toggle('active', a.dataset.nav === route.nav);
    }
    const controller = new AbortController();
    const decoded = m.map((part) => {
      try {
        return decodeURIComponent(part);
      } catch {
        return part;
      }
    });
    current = { controller, unmount: null };
    replace(main);
    const unmount = route.mount(main, context(controller), decoded, query);
    if (current) current.unmount = typeof unmount === 'function' ? unmount : null;
    window.scrollTo(0, 0);
    return;
  }
  replace(main, h('section', { class: 'card' }, h('h1', null, 'No such page'),
    h('p', null, 'The console has no view at this address. '), h('a', { href: '#/' }, 'Back to the overview')));
}

// ---- signing in and out ----

function showSignIn(message) {
  unmountCurrent();
  role = null;
  nav.hidden = true;
  who.hidden = true;
  const tpl = document.getElementById('signin-template');
  replace(main, tpl.content.cloneNode(true));
  const form = document.getElementById('signin-form');
  const input = document.getElementById('signin-key');
  const error = document.getElementById('signin-error');
  const button = document.getElementById('signin-submit');
  if (message) {
    error.textContent = message;
    error.hidden = false;
  }
  input.focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    error.hidden = true;
    const problem = await trySignIn(key);
    button.disabled = false;
    if (problem) {
      error.textContent = problem;
      error.hidden = false;
      input.select();
    }
  });
}

// Signs in with key; returns why not (a sentence) or null.
async function trySignIn(key) {
  let r;
  try {
    r = await whoami(key);
  } catch (e) {
    if (e.status === 401) {
      return 'This key was not accepted (401 unauthorized): check that it is a whole API key ' +
        'of this serve (chk_…) and that it was not revoked.';
    }
    return `Cannot sign in: ${e.message}`;
  }
  if (r === 'ingest') {
    return 'This is an ingest key: it can post call events but not read them. Use a read or ' +
      'an admin key.';
  }
  if (r !== 'read' && r !== 'admin') return `This key has a role the console does not know (${r}).`;
  session.key = key;
  role = r;
  nav.hidden = false;
  who.hidden = false;
  const badge = document.getElementById('role');
  badge.textContent = r === 'admin' ? 'admin key' : 'read key';
  badge.className = 'role ' + r;
  badge.title = r === 'admin' ? 'This key can act: enable, disable, rotate, recover, test, replay, reveal'
    : 'This key reads only: no action buttons';
  render();
  return null;
}

function signOut(message) {
  session.clear();
  showSignIn(message);
}

document.getElementById('signout').addEventListener('click', () => signOut(null));
window.addEventListener('hashchange', render);

async function start() {
  const key = session.key;
  if (!key) {
    showSignIn(null);
    return;
  }
  const problem = await trySignIn(key);
  if (problem) signOut(problem);
}

start();
