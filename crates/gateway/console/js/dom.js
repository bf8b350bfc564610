// Building the DOM without markup strings (nothing from the API is ever parsed as HTML, and
// the Content-Security-Policy allows no inline script or style), and formatting figures.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  const props = {};
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'value' || k === 'checked' || k === 'selected') props[k] = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  Object.assign(el, props);
  return el;
}

/** An HTML element: `h('a', {href: '#/'}, 'text', child, [more])`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Appends children: nodes, strings, numbers, arrays of them; null and false are skipped. */
export function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

// ---- formatting ----

export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'timed_out', 'expired']);
export const STATUSES = ['scheduled', 'queued', 'running', 'waiting_input', 'parked', 'succeeded', 'failed', 'cancelled', 'timed_out', 'expired'];

export function badge(status) {
  return h('span', { class: `badge st-${status}`, dataset: { status } }, String(status).replace('_', ' '));
}

/** The end of an id: UUIDv7s share their leading (time) digits. */
export function shortId(id) {
  return id ? `…${String(id).slice(-8)}` : '';
}

export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

export function ago(iso) {
  if (!iso) return '—';
  return `${duration(Date.now() - new Date(iso).getTime())} ago`;
}

/** Milliseconds as a short duration: 850 ms, 4.2 s, 3 m 10 s, 2 h 5 m, 3 d 4 h. */
export function duration(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  ms = Math.max(0, ms);
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const sec = ms / 1000;
  if (sec < 60) return `${sec.toFixed(1)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} m ${Math.floor(sec % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr} h ${m % 60} m`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

export function taskDuration(t) {
  if (!t.started_at) return '—';
  const end = t.finished_at ? new Date(t.finished_at) : new Date();
  return duration(end - new Date(t.started_at));
}

export function num(n, digits = 0) {
  if (n == null || !Number.isFinite(n)) return '—';
  return n.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function usd(n) {
  if (n == null || !Number.isFinite(n)) return '—';
  return `$${n < 1 ? n.toFixed(4) : n.toFixed(2)}`;
}

export function seconds(s) {
  if (s == null || !Number.isFinite(s)) return '—';
  return duration(s * 1000);
}

/** A JSON value as text: strings as they are, anything else as JSON. */
export function text(v, pretty = false) {
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  return JSON.stringify(v, null, pretty ? 2 : 0);
}

/** Cuts long text, saying how much was left out. */
export function clip(str, max = 2000) {
  if (str.length <= max) return str;
  return `${str.slice(0, max)}… (${num(str.length - max)} more characters)`;
}

/** The input of a form field: JSON when it parses as JSON, the text otherwise. */
export function parseInput(raw) {
  const t = raw.trim();
  if (t === '') return '';
  try {
    return JSON.parse(t);
  } catch {
    return raw;
  }
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
