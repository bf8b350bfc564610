// Tasks: submit one, filter by status and agent (the API's filters), search what is loaded,
// and cancel or retry from the list. The list refreshes every two seconds.

import { get, post, query } from '../api.js';
import { STATUSES, TERMINAL, UUID, badge, clip, fill, h, parseInput, shortId, taskDuration, text, time } from '../dom.js';
import { act, flash, go } from '../ui.js';

export const title = 'Tasks';

const EXAMPLES = {
  echo: 'hello',
  sleep: '5000',
  fail: 'something broke',
  stream: '{"events": 20, "bytes": 32, "interval_ms": 250}',
};

/** Cancels a task; the caller refreshes. */
export async function cancelTask(id) {
  await post(`/v1/tasks/${id}/cancel`);
  flash(`Cancel requested for task ${shortId(id)}.`);
}

/** Submits a copy of a finished task (same agent, input and limits) and opens it. */
export async function retryTask(t) {
  const budget = t.budget && (t.budget.max_tokens != null || t.budget.max_cost_usd != null) ? t.budget : undefined;
  const copy = await post('/v1/tasks', {
    agent: t.agent,
    input: t.input,
    priority: t.priority,
    timeout_ms: t.timeout_ms ?? undefined,
    max_attempts: t.max_attempts,
    budget,
    metadata: { ...(t.metadata || {}), retry_of: t.id },
  });
  flash(`Submitted task ${shortId(copy.id)}, a retry of ${shortId(t.id)}.`);
  go(`#/tasks/${copy.id}`);
}

/** The cancel and retry buttons a task allows. */
export function actions(t, refresh) {
  const out = [];
  if (!TERMINAL.has(t.status)) {
    const b = h('button', { type: 'button', class: 'small danger', 'data-action': 'cancel', disabled: t.cancel_requested }, t.cancel_requested ? 'Cancelling' : 'Cancel');
    b.addEventListener('click', () => act(b, async () => {
      await cancelTask(t.id);
      await refresh();
    }));
    out.push(b);
  } else if (!t.session_id) {
    const b = h('button', { type: 'button', class: 'small', 'data-action': 'retry' }, 'Retry');
    b.addEventListener('click', () => act(b, () => retryTask(t)));
    out.push(b);
  }
  return out;
}

function matches(t, q) {
  if (!q) return true;
  const hay = [t.id, t.agent, t.status, t.session_id, t.parent_id, t.worker, t.idempotency_key, text(t.input), text(t.result), t.error && t.error.message, text(t.metadata)];
  return hay.some((x) => x && String(x).toLowerCase().includes(q));
}

function row(t, refresh) {
  return h(
    'tr',
    { dataset: { taskId: t.id, status: t.status } },
    h('td', {}, h('a', { href: `#/tasks/${t.id}`, title: t.id, class: 'mono' }, shortId(t.id))),
    h('td', {}, t.agent),
    h('td', {}, badge(t.status)),
    h('td', { class: 'clip' }, clip(text(t.input), 80)),
    h('td', { class: 'n' }, `${t.attempt}/${t.max_attempts}`),
    h('td', {}, time(t.created_at)),
    h('td', { class: 'n' }, taskDuration(t)),
    h('td', { class: 'actions' }, actions(t, refresh)),
  );
}

/** What a row shows; a row is rebuilt only when this changes (a click is not lost to a refresh). */
const signature = (t) => `${t.status}|${t.attempt}|${t.cancel_requested}|${t.finished_at}|${t.started_at ? '' : 'q'}`;

export async function render(page) {
  const q = page.query;
  const agents = (await get('/v1/agents')).items.map((a) => a.name);
  const agentSel = h('select', { name: 'agent', id: 'submit-agent', required: true }, agents.map((a) => h('option', { value: a }, a)));
  const input = h('textarea', { name: 'input', id: 'submit-input', rows: 3, placeholder: 'Input: JSON if it parses as JSON, text otherwise' });
  const priority = h('input', { name: 'priority', type: 'number', min: 0, max: 9, value: '0' });
  const timeout = h('input', { name: 'timeout_ms', type: 'number', min: 1, placeholder: "agent's" });
  const attempts = h('input', { name: 'max_attempts', type: 'number', min: 1, max: 100, placeholder: "agent's" });
  const example = () => {
    input.placeholder = `Input, e.g. ${EXAMPLES[agentSel.value] || 'text or JSON'} (JSON if it parses, text otherwise)`;
  };
  agentSel.addEventListener('change', example);
  if (q.get('agent') && agents.includes(q.get('agent'))) agentSel.value = q.get('agent');
  example();
  const submitBtn = h('button', { type: 'submit', id: 'submit-task' }, 'Submit');
  const submitForm = h(
    'form',
    { id: 'submit', class: 'panel form-grid' },
    h('h2', {}, 'Submit a task'),
    h('label', {}, 'Agent', agentSel),
    h('label', { class: 'wide' }, 'Input', input),
    h('label', {}, 'Priority', priority),
    h('label', {}, 'Timeout (ms)', timeout),
    h('label', {}, 'Max attempts', attempts),
    h('div', { class: 'buttons' }, submitBtn),
  );
  submitForm.addEventListener('submit', (e) => {
    e.preventDefault();
    act(submitBtn, async () => {
      const body = { agent: agentSel.value, input: parseInput(input.value), priority: Number(priority.value || 0) };
      if (timeout.value) body.timeout_ms = Number(timeout.value);
      if (attempts.value) body.max_attempts = Number(attempts.value);
      const t = await post('/v1/tasks', body);
      flash(`Submitted task ${shortId(t.id)}.`);
      go(`#/tasks/${t.id}`);
    });
  });

  const statusSel = h('select', { name: 'status', id: 'filter-status' }, h('option', { value: '' }, 'any status'), STATUSES.map((st) => h('option', { value: st }, st.replace('_', ' '))));
  statusSel.value = q.get('status') || '';
  const agentFilter = h('select', { name: 'agent', id: 'filter-agent' }, h('option', { value: '' }, 'any agent'), agents.map((a) => h('option', { value: a }, a)));
  agentFilter.value = q.get('agent') || '';
  const search = h('input', { type: 'search', id: 'search', name: 'q', placeholder: 'Search loaded tasks, or paste a task id', value: q.get('q') || '' });
  const filters = h('form', { id: 'filters', class: 'filters' }, statusSel, agentFilter, search);
  const setFilters = () => {
    const hash = `#/tasks${query({ status: statusSel.value, agent: agentFilter.value, q: search.value.trim() })}`;
    history.replaceState(null, '', hash);
  };
  filters.addEventListener('submit', async (e) => {
    e.preventDefault();
    const id = search.value.trim();
    if (UUID.test(id)) go(`#/tasks/${id.toLowerCase()}`);
  });

  const tbody = h('tbody', { id: 'task-rows' });
  const table = h(
    'div',
    { class: 'scroll' },
    h('table', { id: 'tasks' }, h('thead', {}, h('tr', {}, ['task', 'agent', 'status', 'input', 'attempt', 'created', 'ran', ''].map((c) => h('th', {}, c)))), tbody),
  );
  const more = h('button', { type: 'button', id: 'more', class: 'small', hidden: true }, 'Load more');
  const shown = h('p', { class: 'muted', id: 'shown' });
  fill(page.root, h('h1', {}, 'Tasks'), submitForm, filters, shown, table, more);

  let items = [];
  let cursor = null;
  let limit = 50;
  const rows = new Map();
  const draw = () => {
    const needle = search.value.trim().toLowerCase();
    const visible = items.filter((t) => matches(t, needle));
    const keep = new Set();
    visible.forEach((t, i) => {
      keep.add(t.id);
      const old = rows.get(t.id);
      let tr = old && old.sig === signature(t) ? old.tr : null;
      if (!tr) {
        tr = row(t, load);
        if (old) old.tr.replaceWith(tr);
        rows.set(t.id, { tr, sig: signature(t) });
      }
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const [id, r] of rows) {
      if (!keep.has(id)) {
        r.tr.remove();
        rows.delete(id);
      }
    }
    fill(shown, `${visible.length} of ${items.length} loaded tasks`, needle ? ` matching “${needle}”` : '', ', newest first.');
    more.hidden = !cursor;
  };
  const params = () => ({ status: statusSel.value, agent: agentFilter.value });
  async function load() {
    const page1 = await get(`/v1/tasks${query({ ...params(), limit })}`);
    items = page1.items;
    cursor = page1.next_cursor;
    draw();
  }
  more.addEventListener('click', () => act(more, async () => {
    const next = await get(`/v1/tasks${query({ ...params(), limit: 50, cursor })}`);
    items = items.concat(next.items);
    cursor = next.next_cursor;
    limit = Math.min(1000, items.length);
    draw();
  }));
  for (const el of [statusSel, agentFilter]) {
    el.addEventListener('change', () => {
      setFilters();
      limit = 50;
      load().catch((e) => flash(e.message, 'error'));
    });
  }
  search.addEventListener('input', () => {
    setFilters();
    draw();
  });
  page.every(2000, load);
}
