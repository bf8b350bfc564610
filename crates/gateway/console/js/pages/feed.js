// The collaboration feed: discoveries agents share and messages they send one another (and,
// on request, the platform's system events and task failures), live from `/v1/events`.

import { query } from '../api.js';
import { clip, fill, h, num, shortId, text, time } from '../dom.js';
import { follow } from '../sse.js';

export const title = 'Feed';

const KINDS = [
  ['discovery', 'discoveries', true],
  ['message', 'messages', true],
  ['system', 'system', false],
  ['task.failed', 'failures', false],
];
/** Newest entries kept on the page. */
const KEEP = 500;

const taskLink = (id) => (id ? h('a', { href: `#/tasks/${id}`, class: 'mono', title: id }, shortId(id)) : '—');

function entry(ev, pos) {
  const d = ev.data || {};
  const when = h('span', { class: 'at', title: ev.at }, time(ev.at));
  let body;
  if (ev.kind === 'discovery') {
    body = [
      h('div', { class: 'meta' }, h('span', { class: 'badge' }, d.type), ` ${Math.round((d.confidence || 0) * 100)}% · `, h('b', {}, d.agent || 'platform'), ' · task ', taskLink(d.task_id), ' · ', when),
      h('div', { class: 'said' }, clip(String(d.content ?? ''), 4000)),
      d.related_to && d.related_to.length ? h('div', { class: 'muted' }, `related to ${d.related_to.join(', ')}`) : null,
    ];
  } else if (ev.kind === 'message') {
    const to = d.to_agent ? h('b', {}, d.to_agent) : ['task ', taskLink(d.to_task)];
    body = [
      h('div', { class: 'meta' }, h('b', {}, d.from_agent || 'platform'), ' (task ', taskLink(d.from_task), ') → ', to, ' · ', when),
      h('div', { class: 'said' }, clip(String(d.body ?? ''), 4000)),
    ];
  } else if (ev.kind === 'task.failed') {
    const err = d.error || d;
    body = [
      h('div', { class: 'meta' }, h('b', {}, ev.agent), ' task ', taskLink(ev.task_id), ' failed · ', when),
      h('div', { class: 'said bad' }, `${err.code || ''}: ${err.message || text(err)}`),
    ];
  } else {
    body = [h('div', { class: 'meta' }, h('b', {}, d.type || 'system'), ' · ', when), h('code', {}, clip(text(d), 2000))];
  }
  return h('li', { class: `entry k-${ev.kind.replace('.', '-')}`, dataset: { kind: ev.kind, pos } }, body);
}

export function render(page) {
  const boxes = KINDS.map(([kind, label, on]) => {
    const saved = page.query.get('kind');
    const checked = saved ? saved.split(',').includes(kind) : on;
    return { kind, input: h('input', { type: 'checkbox', name: kind, checked }), label };
  });
  const agent = h('input', { type: 'search', id: 'feed-agent', placeholder: 'agent', value: page.query.get('agent') || '' });
  const form = h('form', { id: 'feed-filters', class: 'filters' }, boxes.map((b) => h('label', { class: 'check' }, b.input, b.label)), agent);
  const state = h('span', { id: 'feed-state', class: 'stream-state' });
  const count = h('span', { class: 'muted' });
  const list = h('ol', { id: 'feed', class: 'feed' });
  fill(page.root, h('h1', {}, 'Discoveries and messages ', state), form, count, list);

  let stream = null;
  let seen = 0;
  const open = () => {
    if (stream) stream.close();
    const kinds = boxes.filter((b) => b.input.checked).map((b) => b.kind).join(',');
    history.replaceState(null, '', `#/feed${query({ kind: kinds, agent: agent.value.trim() })}`);
    fill(list);
    seen = 0;
    fill(count);
    if (!kinds) {
      state.textContent = 'nothing selected';
      return;
    }
    // from the start of the log: the history first, then live
    stream = follow(`/v1/events${query({ kind: kinds, agent: agent.value.trim(), after: 0 })}`, {
      onState: (st, detail) => {
        state.dataset.state = st;
        state.className = `stream-state ss-${st}`;
        state.textContent = st === 'reconnecting' ? `connection lost: ${detail}; resuming` : st === 'error' ? `stopped: ${detail.message}` : st;
      },
      onEvent: (ev, f) => {
        list.prepend(entry(ev, f.id));
        if (list.children.length > KEEP) list.lastElementChild.remove();
        seen += 1;
        count.textContent = `${num(seen)} events${seen > KEEP ? `, the newest ${KEEP} shown` : ''}`;
      },
    });
  };
  for (const b of boxes) b.input.addEventListener('change', open);
  agent.addEventListener('change', open);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    open();
  });
  open();
  page.onClose(() => stream && stream.close());
}
