// Overview: the fleet at a glance — agents by state, queue depth, throughput, latency and
// cost over time (the sampler's history), and every agent definition with its live counts.

import { lineChart } from '../chart.js';
import { fill, h, num, seconds, usd } from '../dom.js';
import { history, subscribe } from '../metrics.js';

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
    const col = (k) => history.map((x) => x[k] ?? null);
    fill(
      charts,
      lineChart('Agents by state', [
        { name: 'running', values: col('running') },
        { name: 'idle slots', values: col('idle') },
        { name: 'queued', values: col('queued') },
      ], { format: count }),
      lineChart('Queue depth', [{ name: 'queued', values: col('queueDepth') }], { format: count }),
      lineChart('Throughput', [
        { name: 'finished', values: col('finished') },
        { name: 'submitted', values: col('submitted') },
      ], { format: perSec }),
      lineChart('Latency', [
        { name: 'dispatch p50', values: col('dispatchP50') },
        { name: 'dispatch p99', values: col('dispatchP99') },
        { name: 'run p50', values: col('durationP50') },
      ], { format: seconds }),
      lineChart('Cost', [{ name: 'total', values: col('cost') }], { format: usd }),
    );
    if (last.agents) fill(agents, agentsTable(last.agents));
  };
  draw();
  page.onClose(subscribe(draw));
}
