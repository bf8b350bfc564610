// Small SVG line charts of the sampler's history: one chart, several series, a legend with
// each series' latest value. Colours come from the stylesheet (classes c0, c1, …).

import { h, s } from './dom.js';

const W = 600;
const H = 160;

/**
 * `series`: [{name, values: [number|null], format}] over the same sample times (oldest
 * first). Gaps (null) break the line. The y axis starts at 0 and ends at the largest value.
 */
export function lineChart(title, series, { format = String } = {}) {
  const n = Math.max(0, ...series.map((x) => x.values.length));
  let max = 0;
  for (const x of series) for (const v of x.values) if (v != null && Number.isFinite(v)) max = Math.max(max, v);
  const top = max > 0 ? max * 1.1 : 1;
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'chart', role: 'img' });
  for (const y of [0.25, 0.5, 0.75]) svg.append(s('line', { x1: 0, x2: W, y1: H * y, y2: H * y, class: 'grid' }));
  series.forEach((x, i) => {
    let d = '';
    let pen = false;
    x.values.forEach((v, j) => {
      if (v == null || !Number.isFinite(v)) {
        pen = false;
        return;
      }
      const px = n > 1 ? (j / (n - 1)) * W : W;
      const py = H - (v / top) * H;
      d += `${pen ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`;
      pen = true;
    });
    if (d) svg.append(s('path', { d, class: `line c${i}` }));
  });
  svg.append(s('title', {}, title));
  const legend = h(
    'ul',
    { class: 'legend' },
    series.map((x, i) => {
      const latest = [...x.values].reverse().find((v) => v != null && Number.isFinite(v));
      return h('li', {}, h('span', { class: `key c${i}` }), `${x.name} `, h('b', {}, latest == null ? '—' : (x.format || format)(latest)));
    }),
  );
  return h(
    'figure',
    { class: 'panel chart-box' },
    h('figcaption', {}, title, h('span', { class: 'axis' }, `max ${max > 0 ? format(max) : '—'}`)),
    svg,
    legend,
  );
}
