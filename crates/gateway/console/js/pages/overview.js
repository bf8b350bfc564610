// Overview: the fleet at a glance — agents by state, queue depth, throughput, latency and
// cost over time (the sampler's history), and every agent definition with its live counts.

import { lineChart } from '../chart.js';
import { fill, h, num, seconds, usd } from '../dom.js';
import { history, series, subscribe } from '../metrics.js';

export const title = 'Overview';

const perSec = (v) => (v == null ? '—' : `${num(v, 1)}/s`);
const count = (v) => num(v);

function card(label, value, hint) {
  return h('div', { class: 'card' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), hint && h('div', { class: 'hint' }, hint));
}

function latest(key) {
  for (let i = history.length - 1; i >= 0; i--) {
    const v = history[i][key];
    if (v != null && Number.isFinite(v)) return v;
  }
  return null;
}

function agentsTable(agents) {
  if (!agents) return h('p', { class: 'muted' }, 'Agents unavailable.');
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { id: 'agents' },
      h('thead', {}, h('tr', {}, ['agent', 'executor', 'running', 'queued', 'concurrency', 'tokens', 'cost', 'breaker'].map((c) => h('th', {}, c)))),
      h(
        'tbody',
        {},
        agents.items.map((a) =>
          h(
            'tr',
            { dataset: { agent: a.name } },
            h('td', {}, h('a', { href: `#/tasks?agent=${encodeURIComponent(a.name)}` }, a.name)),
            h('td', {}, a.executor),
            h('td', { class: 'n' }, num(a.running)),
            h('td', { class: 'n' }, num(a.queued)),
            h('td', { class: 'n' }, num(a.concurrency)),
            h('td', { class: 'n' }, num(a.usage.input_tokens + a.usage.output_tokens)),
            h('td', { class: 'n' }, usd(a.usage.cost_usd)),
            h('td', {}, h('span', { class: `badge br-${a.breaker}` }, a.breaker.replace('_', ' '))),
          ),
        ),
      ),
    ),
  );
}

export function render(page) {
  const cards = h('div', { class: 'cards', id: 'cards' });
  const charts = h('div', { class: 'charts' });
  const agents = h('div');
  fill(page.root, h('h1', {}, 'Overview'), cards, charts, h('h2', {}, 'Agents'), agents);

  const draw = () => {
    const last = history[history.length - 1] || {};
    fill(
      cards,
      card('Running', count(latest('running')), last.busy != null ? `${num(last.busy)} busy / ${num(last.idle)} idle slots` : null),
      card('Queued', count(latest('queueDepth'))),
      card('Throughput', perSec(latest('finished')), 'tasks finished'),
      card('Dispatch p99', seconds(latest('dispatchP99')), 'submit → started'),
      card('Slots', last.current != null ? `${num(last.current)} / ${num(last.desired)}` : '—', 'actual / desired'),
      card('Cost', usd(latest('cost')), `${num(latest('tokens'))} tokens`),
    );
    fill(
      charts,
      lineChart('Agents by state', series({ running: 'running', 'idle slots': 'idle', queued: 'queued' }), { format: count }),
      lineChart('Queue depth', series({ queued: 'queueDepth' }), { format: count }),
      lineChart('Throughput', series({ finished: 'finished', submitted: 'submitted' }), { format: perSec }),
      lineChart('Latency', series({ 'dispatch p50': 'dispatchP50', 'dispatch p99': 'dispatchP99', 'run p50': 'durationP50' }), {
        format: seconds,
      }),
      lineChart('Cost', series({ total: 'cost' }), { format: usd }),
    );
    if (last.agents) fill(agents, agentsTable(last.agents));
  };
  draw();
  page.onClose(subscribe(draw));
}
