// Nodes: every supervisor, worker and gateway with its health (status, heartbeat age), load
// and quarantine state, refreshed every two seconds.

import { get } from '../api.js';
import { ago, duration, fill, h, num } from '../dom.js';

export const title = 'Nodes';

const ORDER = { alive: 0, draining: 1, quarantined: 2, stopped: 3, dead: 4 };

function load(n) {
  const l = n.load || {};
  if (n.role === 'worker') {
    const breakers = Object.entries(l.breakers || {}).map(([a, st]) => `${a} ${st.replace('_', ' ')}`);
    return [
      `${num(l.running)} running of ${num(l.capacity)} · ${num(l.slots)} slots (target ${num(l.target)}) · ${num(l.finished)} finished`,
      breakers.length ? h('div', { class: 'bad' }, `breakers: ${breakers.join(', ')}`) : null,
    ];
  }
  if (n.role === 'supervisor') {
    const sc = l.scaling;
    return [l.leader ? h('b', {}, 'leader') : 'standby', ` · ${num(l.restarts)} restarts`, sc ? ` · desired ${num(sc.desired_slots)} slots` : ''];
  }
  if (n.role === 'gateway') return `${num(l.sse_connections)} SSE streams`;
  return JSON.stringify(l);
}

/** A heartbeat older than this is worth a second look (the supervisor quarantines after `dead_after`, 5 s by default). */
const LATE_MS = 3000;

function health(n) {
  const age = Date.now() - new Date(n.heartbeat_at).getTime();
  if (n.status === 'quarantined') return h('span', { class: 'bad' }, 'quarantined: tasks requeued, takes no work until readmitted');
  if (n.status !== 'alive' && n.status !== 'draining') return h('span', { class: 'muted' }, n.status);
  return age > LATE_MS ? h('span', { class: 'warn' }, `heartbeat late (${duration(age)})`) : 'healthy';
}

export function render(page) {
  const summary = h('div', { class: 'cards', id: 'node-summary' });
  const showGone = h('input', { type: 'checkbox', id: 'show-gone' });
  const tbody = h('tbody', { id: 'node-rows' });
  fill(
    page.root,
    h('h1', {}, 'Nodes'),
    summary,
    h('label', { class: 'check' }, showGone, 'show stopped and dead nodes'),
    h(
      'div',
      { class: 'scroll' },
      h('table', { id: 'nodes' }, h('thead', {}, h('tr', {}, ['status', 'role', 'node', 'health', 'load', 'heartbeat', 'up', 'address', 'version'].map((c) => h('th', {}, c)))), tbody),
    ),
  );
  let nodes = [];
  const draw = () => {
    const roles = ['supervisor', 'worker', 'gateway'];
    fill(
      summary,
      roles.map((role) => {
        const mine = nodes.filter((n) => n.role === role);
        const alive = mine.filter((n) => n.status === 'alive').length;
        const quarantined = mine.filter((n) => n.status === 'quarantined').length;
        return h(
          'div',
          { class: 'card', dataset: { role } },
          h('div', { class: 'label' }, `${role}s`),
          h('div', { class: 'value' }, `${alive} alive`),
          h('div', { class: 'hint' }, quarantined ? h('span', { class: 'bad' }, `${quarantined} quarantined`) : `${mine.length - alive} not alive`),
        );
      }),
    );
    const shown = nodes
      .filter((n) => showGone.checked || n.status === 'alive' || n.status === 'draining' || n.status === 'quarantined')
      .sort((a, b) => ORDER[a.status] - ORDER[b.status] || a.role.localeCompare(b.role) || a.id.localeCompare(b.id));
    fill(
      tbody,
      shown.map((n) =>
        h(
          'tr',
          { dataset: { nodeId: n.id, role: n.role, status: n.status } },
          h('td', {}, h('span', { class: `badge ns-${n.status}` }, n.status)),
          h('td', {}, n.role),
          h('td', { class: 'mono clip', title: n.id }, n.id),
          h('td', {}, health(n)),
          h('td', {}, load(n)),
          h('td', {}, ago(n.heartbeat_at)),
          h('td', {}, duration(Date.now() - new Date(n.started_at).getTime())),
          h('td', { class: 'mono' }, n.address || '—'),
          h('td', {}, n.version),
        ),
      ),
    );
    if (!shown.length) tbody.append(h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No node.')));
  };
  showGone.addEventListener('change', draw);
  page.every(2000, async () => {
    nodes = (await get('/v1/nodes')).items;
    draw();
  });
}
