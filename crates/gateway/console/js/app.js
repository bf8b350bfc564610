// The console's entry point: hash routing between pages, the sign-in dialog (asked for when
// the API answers 401), the connection indicator and flash messages.

import { get, onToken, setToken, setTokenPrompt, token } from './api.js';
import { $, fill, h } from './dom.js';
import * as sampler from './metrics.js';
import { flash } from './ui.js';
import * as overview from './pages/overview.js';
import * as tasks from './pages/tasks.js';
import * as task from './pages/task.js';
import * as sessions from './pages/sessions.js';
import * as session from './pages/session.js';
import * as feed from './pages/feed.js';
import * as nodes from './pages/nodes.js';
import * as scaling from './pages/scaling.js';
import * as approvals from './pages/approvals.js';
import * as webhooks from './pages/webhooks.js';
import * as schedules from './pages/schedules.js';

const ROUTES = [
  [/^\/?$/, overview, 'overview'],
  [/^\/tasks$/, tasks, 'tasks'],
  [/^\/tasks\/([^/]+)$/, task, 'tasks'],
  [/^\/sessions$/, sessions, 'sessions'],
  [/^\/sessions\/([^/]+)$/, session, 'sessions'],
  [/^\/feed$/, feed, 'feed'],
  [/^\/nodes$/, nodes, 'nodes'],
  [/^\/scaling$/, scaling, 'scaling'],
  [/^\/approvals$/, approvals, 'approvals'],
  [/^\/webhooks$/, webhooks, 'webhooks'],
  [/^\/schedules$/, schedules, 'schedules'],
];

/** What a page gets: its root, an abort signal, timers and cleanups that end with the page. */
class Page {
  constructor(root, params, queryParams) {
    this.root = root;
    this.params = params;
    this.query = queryParams;
    this.ctl = new AbortController();
    this.cleanups = [];
  }

  get signal() {
    return this.ctl.signal;
  }

  get closed() {
    return this.ctl.signal.aborted;
  }

  /** Runs `fn` now and every `ms` while the page is shown, never two at once. */
  every(ms, fn) {
    let timer = null;
    const tick = async () => {
      if (this.closed) return;
      try {
        await fn();
      } catch (e) {
        if (!this.closed) flash(e.message, 'error');
      }
      if (!this.closed) timer = setTimeout(tick, ms);
    };
    tick();
    this.onClose(() => clearTimeout(timer));
  }

  onClose(fn) {
    this.cleanups.push(fn);
  }

  close() {
    this.ctl.abort();
    for (const fn of this.cleanups) fn();
  }
}

let current = null;

function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, qs] = hash.split('?');
  if (current) current.close();
  const view = $('#view');
  for (const [re, mod, nav] of ROUTES) {
    const m = re.exec(path);
    if (!m) continue;
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === nav);
    const root = h('section', { class: `page page-${nav}` });
    fill(view, root);
    current = new Page(root, m.slice(1).map(decodeURIComponent), new URLSearchParams(qs || ''));
    document.title = `${mod.title || nav} · MisterSmith`;
    Promise.resolve(mod.render(current)).catch((e) => flash(e.message, 'error'));
    return;
  }
  current = null;
  fill(view, h('section', { class: 'page' }, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Overview'))));
}

function signIn(refused) {
  const dialog = $('#login');
  const form = $('#login-form');
  const input = $('#login-token');
  $('#login-why').textContent = refused
    ? 'The gateway refused that token. Enter another.'
    : 'This gateway needs a token.';
  input.value = '';
  setConn('signed out', 'bad');
  if (!dialog.open) dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    const submit = (e) => {
      e.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      form.removeEventListener('submit', submit);
      setToken(t);
      dialog.close();
      resolve();
    };
    form.addEventListener('submit', submit);
  });
}

function setConn(label, kind) {
  const el = $('#conn');
  el.textContent = label;
  el.className = `conn ${kind}`;
}

async function health() {
  try {
    await get('/v1/nodes');
    setConn(token() ? 'signed in' : 'connected', 'ok');
  } catch (e) {
    setConn(e.status ? `error ${e.status}` : 'offline', 'bad');
  }
}

function boot() {
  setTokenPrompt(signIn);
  // the dialog must not be dismissed with Escape: nothing works without the token
  $('#login').addEventListener('cancel', (e) => e.preventDefault());
  const out = $('#signout');
  out.hidden = !token();
  onToken((t) => {
    out.hidden = !t;
  });
  out.addEventListener('click', () => {
    setToken(null);
    location.reload();
  });
  window.addEventListener('hashchange', route);
  route();
  health();
  setInterval(health, 5000);
  sampler.start();
}

boot();
