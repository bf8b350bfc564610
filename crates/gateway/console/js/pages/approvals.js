// Approvals: the requests agents made of people — tool calls waiting for approval and
// questions — refreshed every two seconds, each with its buttons: allow or deny (with a note
// the agent reads), answer or decline. An answer resumes the task.

import { get, post, query } from '../api.js';
import { ago, clip, fill, h, shortId, text, time } from '../dom.js';
import { act, flash } from '../ui.js';

export const title = 'Approvals';

function what(a) {
  if (a.tool) return [h('b', {}, a.tool.name), ' ', h('code', {}, clip(text(a.tool.input), 500)), a.text ? h('div', {}, a.text) : null];
  return a.text || '';
}

function answer(a, body, button, after) {
  return act(button, async () => {
    await post(`/v1/tasks/${encodeURIComponent(a.task_id)}/approvals/${encodeURIComponent(a.id)}`, body);
    flash(`Answered ${a.id}: the task resumes.`);
    after();
  });
}

function actions(a, after) {
  if (a.status !== 'pending') {
    const by = a.answer ? ` by ${a.answer.by}` : '';
    return h('span', { class: 'muted' }, `${a.status}${by}`);
  }
  const note = h('input', { type: 'text', placeholder: a.kind === 'input' ? 'answer' : 'note for the agent', class: 'approval-note' });
  const msg = () => note.value.trim() || undefined;
  if (a.kind === 'input') {
    const send = h('button', { type: 'button', class: 'approval-answer' }, 'Answer');
    const decline = h('button', { type: 'button', class: 'approval-deny' }, 'Decline');
    send.addEventListener('click', () => {
      if (!note.value.trim()) return flash('Write the answer first.', 'error');
      return answer(a, { answer: note.value.trim() }, send, after);
    });
    decline.addEventListener('click', () => answer(a, { decision: 'deny' }, decline, after));
    return [note, send, decline];
  }
  const allow = h('button', { type: 'button', class: 'approval-allow' }, 'Allow');
  const deny = h('button', { type: 'button', class: 'approval-deny' }, 'Deny');
  allow.addEventListener('click', () => answer(a, { decision: 'allow', message: msg() }, allow, after));
  deny.addEventListener('click', () => answer(a, { decision: 'deny', message: msg() }, deny, after));
  return [note, allow, deny];
}

export function render(page) {
  const all = h('input', { type: 'checkbox', id: 'show-answered' });
  const tbody = h('tbody', { id: 'approval-rows' });
  fill(
    page.root,
    h('h1', {}, 'Approvals'),
    h('p', { class: 'hint' }, 'Agents waiting for a person. A waiting task holds no agent slot; an answer resumes it where it asked.'),
    h('label', { class: 'check' }, all, 'show answered requests'),
    h('div', { class: 'scroll' }, h('table', { id: 'approvals' },
      h('thead', {}, h('tr', {}, ['asked', 'task', 'agent', 'kind', 'what', 'times out', ''].map((c) => h('th', {}, c)))), tbody)),
  );
  const load = async () => {
    const list = await get(`/v1/approvals${query({ status: all.checked ? '' : 'pending', limit: 200 })}`, { signal: page.signal });
    const rows = list.items.map((a) => h('tr', { 'data-id': a.id },
      h('td', { title: time(a.created_at) }, ago(a.created_at)),
      h('td', {}, h('a', { href: `#/tasks/${encodeURIComponent(a.task_id)}` }, shortId(a.task_id))),
      h('td', {}, a.agent),
      h('td', {}, a.kind),
      h('td', {}, what(a)),
      h('td', {}, a.expires_at ? time(a.expires_at) : ''),
      h('td', { class: 'actions' }, actions(a, load)),
    ));
    fill(tbody, rows.length ? rows : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'Nobody is waiting for a person.')));
  };
  all.addEventListener('change', () => load().catch((e) => flash(e.message, 'error')));
  page.every(2000, () => (document.activeElement?.classList.contains('approval-note') ? null : load()));
}
