// Scaling: the autoscaler's desired agent slots against the slots the workers hold, its
// inputs, and both over time.

import { get } from '../api.js';
import { lineChart } from '../chart.js';
import { fill, h, num, s, seconds, time } from '../dom.js';
import { series, subscribe } from '../metrics.js';

export const title = 'Scaling';

function row(label, value, hint) {
  return h('tr', {}, h('th', {}, label), h('td', { class: 'n' }, value), h('td', { class: 'muted' }, hint || ''));
}

export function render(page) {
  const figures = h('div', { id: 'scaling-figures' });
  const chart = h('div', { class: 'charts' });
  fill(page.root, h('h1', {}, 'Scaling'), figures, chart);

  const drawChart = () => {
    const slots = series({ desired: 'desired', actual: 'current', load: 'load', running: 'running' });
    fill(chart, lineChart('Agent slots', slots, { format: (v) => num(v, 1) }));
  };
  drawChart();
  page.onClose(subscribe(drawChart));

  page.every(2000, async () => {
    let sc;
    try {
      sc = await get('/v1/scaling');
    } catch (e) {
      if (e.status !== 503) throw e;
      fill(figures, h('p', { class: 'muted', id: 'scaling-none' }, e.message));
      return;
    }
    // the scale leaves room above the larger figure; the ceiling (max_agents) may be far away
    const top = Math.max(sc.desired_slots, sc.current_slots, 1) * 1.25;
    const bar = (label, value, cls) =>
      h(
        'div',
        { class: 'bar-row' },
        h('span', { class: 'bar-label' }, label),
        s('svg', { class: 'bar', viewBox: '0 0 100 10', preserveAspectRatio: 'none', role: 'img' }, s('rect', { class: cls, x: 0, y: 0, height: 10, width: ((100 * value) / top).toFixed(2) })),
        h('b', { dataset: { figure: cls } }, num(value)),
      );
    const gap = sc.desired_slots - sc.current_slots;
    fill(
      figures,
      h(
        'div',
        { class: 'panel' },
        bar('desired', sc.desired_slots, 'desired'),
        bar('actual', sc.current_slots, 'actual'),
        h('p', { id: 'scaling-verdict' }, gap === 0 ? 'The fleet holds what the autoscaler asks for.' : gap > 0 ? `${num(gap)} slots short: scaling out.` : `${num(-gap)} slots over: scaling in after the delay.`),
      ),
      h(
        'div',
        { class: 'scroll' },
        h(
          'table',
          { class: 'figures' },
          h(
            'tbody',
            {},
            row('load', num(sc.load, 2), 'in-flight work plus the backlog to drain, in slots'),
            row('utilization', `${num(sc.utilization * 100, 0)}%`, `target ${num(sc.target_utilization * 100, 0)}%`),
            row('arrival rate', `${num(sc.arrival_rate, 2)}/s`, 'over the last 10 s'),
            row('mean task time', seconds(sc.task_seconds), 'smoothed'),
            row('running', num(sc.running)),
            row('queued', num(sc.queued), `oldest ${seconds(sc.oldest_queued_seconds)}`),
            row('workers', num(sc.workers), 'alive or draining'),
            row('bounds', `${num(sc.min_agents)}–${num(sc.max_agents)}`, 'min and max agents'),
            row('computed', time(sc.computed_at), `by ${sc.supervisor}, ${seconds(sc.age_seconds)} ago`),
          ),
        ),
      ),
    );
  });
}
