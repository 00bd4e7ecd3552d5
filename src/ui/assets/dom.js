// Building the page from data safely: every value becomes a text node or an attribute set with
// setAttribute, never HTML. Nothing in the console parses markup from a string.

const SVG_NS = 'http://www.w3.org/2000/svg';

// Attributes that would run or load something: never set from here.
const REFUSED_ATTR = /^(on|style$|srcdoc$|formaction$|xlink:href$|src$)/i;

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (name === 'href') {
      // Links go to the console's own views only (hash routes), never to a value of a record
      // or a setting (a "javascript:" URL would run).
      const href = String(value);
      if (!href.startsWith('#')) throw new Error('refused link: ' + href);
      el.setAttribute('href', href);
    } else if (REFUSED_ATTR.test(name)) {
      throw new Error('refused attribute: ' + name);
    } else if (name === 'value' && 'value' in el) {
      el.value = String(value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// h('td', {class: 'num'}, 'text', otherNode...): an HTML element.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

// The same for SVG.
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// ---- formatting ----

const pad = (n) => String(n).padStart(2, '0');

// Unix seconds as local time, "2026-05-01 14:03:22"; '—' for none. short: the time alone
// when it is today.
export function fmtTime(t, short) {
  if (t === null || t === undefined || t === 0) return '—';
  const d = new Date(t * 1000);
  if (short && d.toDateString() === new Date().toDateString()) {
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtClock(t) {
  const d = new Date(t * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// A duration in seconds, short: "42 s", "7 min", "3 h 05 min", "2 d 4 h".
export function fmtAge(sec) {
  if (sec === null || sec === undefined) return '—';
  sec = Math.max(0, Math.round(sec));
  if (sec < 90) return `${sec} s`;
  const min = Math.round(sec / 60);
  if (min < 90) return `${min} min`;
  const hours = Math.floor(min / 60);
  if (hours < 48) return min % 60 ? `${hours} h ${pad(min % 60)} min` : `${hours} h`;
  return hours % 24 ? `${Math.floor(hours / 24)} d ${hours % 24} h` : `${Math.floor(hours / 24)} d`;
}

export function fmtAgo(t, now) {
  if (!t) return '—';
  return fmtAge((now || Date.now() / 1000) - t) + ' ago';
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms % 1000 === 0) return `${ms / 1000} s`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

export function fmtRate(x) {
  if (x === null || x === undefined) return '—';
  if (x === 0) return '0';
  return x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : String(Math.round(x));
}

export function fmtPct(x) {
  if (x === null || x === undefined) return '—';
  const p = x * 100;
  return (p === 100 || p === 0 ? String(p) : p > 99.9 ? p.toFixed(2) : p.toFixed(1)) + ' %';
}

export function fmtCount(n) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString('en-US');
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`;
}

// datetime-local input value <-> unix seconds (local time).
export function toLocalInput(t) {
  const d = new Date(t * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fromLocalInput(text) {
  if (!text) return null;
  const ms = new Date(text).getTime();
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

// ---- a JSON value as coloured text (spans of text, nothing parsed) ----

export function jsonView(value) {
  const out = h('pre', { class: 'json' });
  const put = (v, indent) => {
    if (v === null) out.append(h('span', { class: 'j-null' }, 'null'));
    else if (typeof v === 'string') out.append(h('span', { class: 'j-str' }, JSON.stringify(v)));
    else if (typeof v === 'number') out.append(h('span', { class: 'j-num' }, String(v)));
    else if (typeof v === 'boolean') out.append(h('span', { class: 'j-bool' }, String(v)));
    else if (Array.isArray(v)) {
      if (v.length === 0) { out.append('[]'); return; }
      out.append('[\n');
      v.forEach((item, i) => {
        out.append(' '.repeat(indent + 2));
        put(item, indent + 2);
        out.append(i < v.length - 1 ? ',\n' : '\n');
      });
      out.append(' '.repeat(indent) + ']');
    } else {
      const keys = Object.keys(v);
      if (keys.length === 0) { out.append('{}'); return; }
      out.append('{\n');
      keys.forEach((k, i) => {
        out.append(' '.repeat(indent + 2));
        out.append(h('span', { class: 'j-key' }, JSON.stringify(k)), ': ');
        put(v[k], indent + 2);
        out.append(i < keys.length - 1 ? ',\n' : '\n');
      });
      out.append(' '.repeat(indent) + '}');
    }
  };
  put(value, 0);
  return out;
}

// A hash link to a console view; every part encoded.
export function route(...parts) {
  return '#/' + parts.map((p) => encodeURIComponent(p)).join('/');
}
