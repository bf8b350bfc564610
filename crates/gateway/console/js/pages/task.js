// One task: its fields, its attempts, and its event stream live — output, tool calls and
// usage as they happen — resumed with Last-Event-ID when the connection breaks.

import { download, get } from '../api.js';
import { TERMINAL, badge, clip, duration, fill, h, num, shortId, taskDuration, text, time, usd } from '../dom.js';
import { follow } from '../sse.js';
import { actions } from './tasks.js';

export const title = 'Task';

/** Most events kept on the page; older ones are dropped from view (the API keeps them all). */
const MAX_SHOWN = 3000;
const TERMINAL_KINDS = new Set(['task.succeeded', 'task.failed', 'task.cancelled', 'task.timed_out', 'task.expired']);

/** What an event says, by kind. */
function describe(ev) {
  const d = ev.data;
  switch (ev.kind) {
    case 'output':
      if (d && typeof d === 'object' && typeof d.text === 'string') {
        const rest = { ...d };
        delete rest.text;
        const extra = Object.keys(rest).length ? h('span', { class: 'muted' }, `${text(rest)} `) : null;
        return [extra, h('span', { class: 'out' }, clip(d.text))];
      }
      return h('span', { class: 'out' }, clip(text(d)));
    case 'tool_use':
      return [h('b', {}, d.name || 'tool'), h('code', {}, clip(text(d.input), 600))];
    case 'tool_result':
      return [d.is_error ? h('b', { class: 'bad' }, 'error ') : null, h('span', { class: 'out' }, clip(text(d.content), 600))];
    case 'usage':
      return `${num(d.input_tokens)} in, ${num(d.output_tokens)} out, ${usd(d.cost_usd)}`;
    default:
      if (d == null || (typeof d === 'object' && Object.keys(d).length === 0)) return '';
      return h('code', {}, clip(text(d), 600));
  }
}

function eventItem(ev, frameId) {
  return h(
    'li',
    { class: `ev k-${ev.kind.replace('.', '-')}`, dataset: { seq: frameId, kind: ev.kind, attempt: ev.attempt } },
    h('span', { class: 'seq' }, `#${ev.seq}`),
    h('span', { class: 'at', title: ev.at }, time(ev.at)),
    h('span', { class: 'kind' }, ev.kind),
    h('span', { class: 'att', title: 'attempt' }, `a${ev.attempt}`),
    h('span', { class: 'data' }, describe(ev)),
  );
}

function field(label, value) {
  return h('div', {}, h('dt', {}, label), h('dd', {}, value));
}

function details(t) {
  return h(
    'dl',
    { class: 'fields' },
    field('agent', h('a', { href: `#/tasks?agent=${encodeURIComponent(t.agent)}` }, t.agent)),
    field('attempt', `${t.attempt} of ${t.max_attempts}`),
    field('priority', String(t.priority)),
    field('worker', t.worker || '—'),
    field('created', time(t.created_at)),
    t.run_at && field(t.status === 'parked' ? 'resumes' : 'starts', h('span', { id: 'task-run-at' }, time(t.run_at))),
    t.expires_at && field('expires', time(t.expires_at)),
    field('started', time(t.started_at)),
    field('finished', time(t.finished_at)),
    field('ran', taskDuration(t)),
    field('timeout', t.timeout_ms ? duration(t.timeout_ms) : "agent's"),
    field('usage', `${num(t.usage.input_tokens)} in, ${num(t.usage.output_tokens)} out, ${usd(t.usage.cost_usd)}`),
    field('tenant', t.tenant),
    t.session_id && field('session', h('a', { href: `#/sessions/${t.session_id}` }, shortId(t.session_id))),
    t.parent_id && field('parent', h('a', { href: `#/tasks/${t.parent_id}` }, shortId(t.parent_id))),
    t.idempotency_key && field('idempotency key', t.idempotency_key),
    t.metadata && Object.keys(t.metadata).length > 0 && field('metadata', h('code', {}, text(t.metadata))),
  );
}

/** Per attempt: when it started, what it did, how it ended. */
function attemptsTable(attempts) {
  const rows = [...attempts.entries()].sort((a, b) => a[0] - b[0]);
  if (!rows.length) return h('p', { class: 'muted' }, 'No attempt yet.');
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { id: 'attempts' },
      h('thead', {}, h('tr', {}, ['attempt', 'started', 'outputs', 'tool calls', 'tokens', 'cost', 'ended'].map((c) => h('th', {}, c)))),
      h(
        'tbody',
        {},
        rows.map(([n, a]) =>
          h(
            'tr',
            { dataset: { attempt: n } },
            h('td', { class: 'n' }, String(n)),
            h('td', {}, time(a.started)),
            h('td', { class: 'n' }, num(a.outputs)),
            h('td', { class: 'n' }, num(a.tools)),
            h('td', { class: 'n' }, a.usage ? num(a.usage.input_tokens + a.usage.output_tokens) : '—'),
            h('td', { class: 'n' }, a.usage ? usd(a.usage.cost_usd) : '—'),
            h('td', {}, a.ended ? `${a.ended.replace('task.', '')} ${a.why ? `(${a.why})` : ''}` : 'running'),
          ),
        ),
      ),
    ),
  );
}

/** The path of one of the task's artifacts: each component of its name escaped. */
function artifactPath(id, name) {
  return `/v1/tasks/${id}/artifacts/${name.split('/').map(encodeURIComponent).join('/')}`;
}

/** The files the agent left in $SMITH_ARTIFACTS, each with a download button. */
function artifactsTable(id, items, problem) {
  if (!items.length) return h('p', { class: 'muted', id: 'artifacts-none' }, 'No artifact stored.');
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { id: 'artifacts' },
      h('thead', {}, h('tr', {}, ['name', 'bytes', 'sha256', ''].map((c) => h('th', {}, c)))),
      h(
        'tbody',
        {},
        items.map((a) => {
          const base = a.name.split('/').pop();
          const onclick = (e) => {
            e.preventDefault();
            download(artifactPath(id, a.name), base).catch((err) => problem(`${a.name}: ${err.message}`));
          };
          return h(
            'tr',
            { dataset: { name: a.name } },
            h('td', {}, h('code', {}, a.name)),
            h('td', { class: 'n' }, num(a.size)),
            h('td', {}, h('code', { title: a.sha256 }, a.sha256.slice(0, 12))),
            h('td', {}, h('button', { type: 'button', class: 'download', onclick }, 'download')),
          );
        }),
      ),
    ),
  );
}

export async function render(page) {
  const [id] = page.params;
  const head = h('div', { class: 'title-row' });
  const actionsBox = h('div', { class: 'actions', id: 'task-actions' });
  const info = h('div', { id: 'task-info' });
  const io = h('div', { class: 'io' });
  const attemptsBox = h('div');
  const artifactsBox = h('div', { id: 'task-artifacts' });
  const artifactsProblem = h('p', { class: 'bad', hidden: true });
  const state = h('span', { id: 'stream-state', class: 'stream-state' }, 'connecting');
  const list = h('ol', { id: 'events', class: 'events' });
  const scroller = h('div', { class: 'event-box' }, list);
  const dropped = h('p', { class: 'muted', hidden: true });
  fill(
    page.root,
    head,
    actionsBox,
    info,
    io,
    h('h2', {}, 'Attempts'),
    attemptsBox,
    h('h2', {}, 'Artifacts'),
    artifactsProblem,
    artifactsBox,
    h('h2', {}, 'Events ', state),
    dropped,
    scroller,
  );

  let task = null;
  let shownActions = '';
  const load = async () => {
    task = await get(`/v1/tasks/${id}`);
    fill(head, h('h1', {}, 'Task ', h('code', { class: 'id' }, task.id)), h('span', { id: 'task-status' }, badge(task.status)));
    // rebuilt only when they change: a button replaced under the pointer loses its click
    const sig = `${task.status}|${task.cancel_requested}`;
    if (sig !== shownActions) {
      shownActions = sig;
      fill(actionsBox, actions(task, load));
    }
    fill(info, details(task));
    fill(
      io,
      h('div', { class: 'panel' }, h('h3', {}, 'Input'), h('pre', { id: 'task-input' }, clip(text(task.input, true), 20000))),
      task.result !== null && h('div', { class: 'panel' }, h('h3', {}, 'Result'), h('pre', { id: 'task-result' }, clip(text(task.result, true), 20000))),
      task.error && h('div', { class: 'panel bad' }, h('h3', {}, 'Error'), h('pre', { id: 'task-error' }, `${task.error.code}: ${task.error.message}`)),
    );
  };
  await load();

  const problem = (m) => {
    artifactsProblem.hidden = false;
    artifactsProblem.textContent = m;
  };
  const loadArtifacts = async () => {
    const list = await get(`/v1/tasks/${id}/artifacts`);
    fill(artifactsBox, artifactsTable(id, list.artifacts, problem));
  };
  await loadArtifacts();

  const attempts = new Map();
  const track = (ev) => {
    if (!ev.attempt) return;
    const a = attempts.get(ev.attempt) || { outputs: 0, tools: 0 };
    attempts.set(ev.attempt, a);
    if (ev.kind === 'task.started') a.started = ev.at;
    else if (ev.kind === 'output') a.outputs += 1;
    else if (ev.kind === 'tool_use') a.tools += 1;
    else if (ev.kind === 'usage') a.usage = ev.data;
    else if (ev.kind === 'task.retrying' || TERMINAL_KINDS.has(ev.kind)) {
      a.ended = ev.kind;
      const err = ev.data && (ev.data.error || ev.data);
      a.why = err && err.code ? err.code : '';
    }
  };
  fill(attemptsBox, attemptsTable(attempts));

  let refreshing = null;
  const refreshSoon = () => {
    if (refreshing) return;
    refreshing = setTimeout(() => {
      refreshing = null;
      load().then(() => fill(attemptsBox, attemptsTable(attempts))).catch(() => {});
    }, 150);
  };
  page.onClose(() => clearTimeout(refreshing));

  let shownDropped = 0;
  let stream = null;
  stream = follow(`/v1/tasks/${id}/events`, {
    isLast: (f) => TERMINAL_KINDS.has(f.event),
    onState: (st, detail) => {
      state.dataset.state = st;
      if (st === 'live' || st === 'connecting') state.dataset.reconnects = detail;
      const labels = {
        connecting: detail ? `reconnecting (${detail})` : 'connecting',
        live: detail ? `live, resumed after #${stream ? stream.last : '?'}` : 'live',
        reconnecting: `connection lost: ${detail}; resuming`,
        ended: 'complete',
        error: `stopped: ${detail && detail.message}`,
      };
      state.textContent = labels[st] || st;
      state.className = `stream-state ss-${st}`;
    },
    onEvent: (ev, f) => {
      const stick = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
      list.append(eventItem(ev, f.id));
      if (list.children.length > MAX_SHOWN) {
        list.firstElementChild.remove();
        shownDropped += 1;
        dropped.hidden = false;
        dropped.textContent = `${num(shownDropped)} earlier events not shown.`;
      }
      if (stick) scroller.scrollTop = scroller.scrollHeight;
      track(ev);
      if (ev.kind !== 'output') fill(attemptsBox, attemptsTable(attempts));
      if (ev.kind.startsWith('task.') || ev.kind === 'usage') refreshSoon();
      if (ev.kind === 'artifacts.stored') loadArtifacts().catch((e) => problem(e.message));
    },
  });
  page.onClose(() => stream.close());
  // the stream carries every change; this only catches what happens when it is down
  page.every(5000, async () => {
    if (!TERMINAL.has(task.status)) await load();
  });
}
