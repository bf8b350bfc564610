// Sessions: start one, open one by id, and the sessions of the newest tasks (the API has no
// list of sessions: a session is the tasks carrying its id).

import { get, post } from '../api.js';
import { UUID, badge, clip, fill, h, shortId, text, time } from '../dom.js';
import { act, flash, go } from '../ui.js';

export const title = 'Sessions';

/** Tasks read to find recent sessions. */
const SCAN = 1000;

/** A chat message's input: JSON when it looks like an object or array and parses, text otherwise. */
export function messageInput(raw) {
  const t = raw.trim();
  if (t.startsWith('{') || t.startsWith('[')) {
    try {
      return JSON.parse(t);
    } catch {
      // text that starts with a bracket
    }
  }
  return raw;
}

export async function render(page) {
  const agents = (await get('/v1/agents')).items.map((a) => a.name);
  const agentSel = h('select', { id: 'session-agent', name: 'agent' }, agents.map((a) => h('option', { value: a }, a)));
  const first = h('textarea', { id: 'session-input', name: 'input', rows: 2, placeholder: 'First message (optional)' });
  const startBtn = h('button', { type: 'submit', id: 'start-session' }, 'Start');
  const startForm = h('form', { id: 'start', class: 'panel form-grid' }, h('h2', {}, 'Start a session'), h('label', {}, 'Agent', agentSel), h('label', { class: 'wide' }, 'Message', first), h('div', { class: 'buttons' }, startBtn));
  startForm.addEventListener('submit', (e) => {
    e.preventDefault();
    act(startBtn, async () => {
      const body = { agent: agentSel.value };
      if (first.value.trim()) body.input = messageInput(first.value);
      const session = await post('/v1/sessions', body);
      flash(`Started session ${shortId(session.id)}.`);
      go(`#/sessions/${session.id}`);
    });
  });
  const idInput = h('input', { id: 'open-session', type: 'search', placeholder: 'Session id' });
  const openForm = h('form', { class: 'filters' }, idInput, h('button', { type: 'submit', class: 'small' }, 'Open'));
  openForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = idInput.value.trim();
    if (UUID.test(id)) go(`#/sessions/${id.toLowerCase()}`);
    else flash('A session id is a UUID.', 'error');
  });
  const list = h('div', { id: 'sessions' });
  fill(page.root, h('h1', {}, 'Sessions'), startForm, openForm, h('h2', {}, 'Recent'), list);

  page.every(3000, async () => {
    const tasks = (await get(`/v1/tasks?limit=${SCAN}`)).items;
    const byId = new Map();
    for (const t of tasks) {
      if (!t.session_id) continue;
      const s = byId.get(t.session_id) || { id: t.session_id, agent: t.agent, turns: [], last: t };
      s.turns.push(t);
      byId.set(t.session_id, s);
    }
    if (!byId.size) {
      fill(list, h('p', { class: 'muted' }, `No session among the ${tasks.length} newest tasks.`));
      return;
    }
    fill(
      list,
      h(
        'div',
        { class: 'scroll' },
        h(
          'table',
          {},
          h('thead', {}, h('tr', {}, ['session', 'agent', 'turns', 'last turn', 'last message', 'at'].map((c) => h('th', {}, c)))),
          h(
            'tbody',
            {},
            [...byId.values()].map((s) =>
              h(
                'tr',
                { dataset: { sessionId: s.id } },
                h('td', {}, h('a', { href: `#/sessions/${s.id}`, class: 'mono', title: s.id }, shortId(s.id))),
                h('td', {}, s.agent),
                h('td', { class: 'n' }, String(s.turns.length)),
                h('td', {}, badge(s.last.status)),
                h('td', { class: 'clip' }, clip(text(s.last.input), 80)),
                h('td', {}, time(s.last.created_at)),
              ),
            ),
          ),
        ),
      ),
      h('p', { class: 'muted' }, `Sessions with a turn among the ${tasks.length} newest tasks.`),
    );
  });
}
