// Webhooks: the tenant's subscriptions (subscribe a URL, delete one) and, for the one chosen,
// its delivery log with a replay button on failed deliveries; refreshed every three seconds.
// A generated secret is shown once, right after the subscription is created.

import { get, post, request } from '../api.js';
import { badge, fill, h, time } from '../dom.js';
import { act, flash } from '../ui.js';

export const title = 'Webhooks';

/** Deliveries shown for the chosen subscription. */
const LOG = 100;

function deliveryRow(hook, d, redraw) {
  const replay = h('button', { type: 'button', class: 'small' }, 'Replay');
  replay.addEventListener('click', () =>
    act(replay, async () => {
      await post(`/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries/${encodeURIComponent(d.id)}/replay`);
      flash('Sent again.');
      redraw();
    }),
  );
  return h(
    'tr',
    { dataset: { delivery: d.id } },
    h('td', {}, badge(d.state)),
    h('td', {}, d.event_type),
    h('td', {}, d.task_id ? h('a', { href: `#/tasks/${d.task_id}` }, `…${d.task_id.slice(-8)}`) : '—'),
    h('td', { class: 'num' }, String(d.attempts)),
    h('td', {}, d.last_status == null ? '—' : String(d.last_status)),
    h('td', {}, d.last_error || ''),
    h('td', {}, d.next_at ? time(d.next_at) : '—'),
    h('td', { class: 'mono' }, d.id),
    h('td', {}, d.state === 'failed' ? replay : ''),
  );
}

export async function render(page) {
  const url = h('input', { id: 'hook-url', name: 'url', type: 'url', required: true, placeholder: 'https://hooks.example.com/smith' });
  const kinds = h('input', { id: 'hook-kinds', name: 'kinds', value: 'task.succeeded,task.failed', required: true });
  const create = h('button', { type: 'submit', id: 'create-hook' }, 'Subscribe');
  const secret = h('p', { id: 'hook-secret', class: 'hint' });
  const form = h(
    'form',
    { id: 'subscribe', class: 'panel form-grid' },
    h('h2', {}, 'Subscribe a URL'),
    h('label', { class: 'wide' }, 'URL', url),
    h('label', { class: 'wide' }, 'Kinds (comma-separated; task.* or *)', kinds),
    h('div', { class: 'buttons' }, create),
    secret,
  );
  const hooks = h('tbody', { id: 'hook-rows' });
  const log = h('div', { id: 'deliveries' });
  fill(
    page.root,
    h('h1', {}, 'Webhooks'),
    form,
    h('div', { class: 'scroll' }, h('table', { id: 'hooks' }, h('thead', {}, h('tr', {}, ['url', 'kinds', 'created', 'id', ''].map((c) => h('th', {}, c)))), hooks)),
    log,
  );
  let chosen = page.query.get('id');
  const draw = async () => {
    const items = (await get('/v1/webhooks', { signal: page.signal })).items;
    fill(
      hooks,
      items.map((w) => {
        const del = h('button', { type: 'button', class: 'small' }, 'Delete');
        del.addEventListener('click', () =>
          act(del, async () => {
            await request('DELETE', `/v1/webhooks/${encodeURIComponent(w.id)}`, { as: 'none' });
            if (chosen === w.id) chosen = null;
            flash('Deleted.');
            await draw();
          }),
        );
        const open = h('a', { href: `#/webhooks?id=${encodeURIComponent(w.id)}` }, w.url);
        return h('tr', { class: chosen === w.id ? 'active' : '' }, h('td', {}, open), h('td', {}, w.kinds.join(', ')), h('td', {}, time(w.created_at)), h('td', { class: 'mono' }, w.id), h('td', {}, del));
      }),
    );
    const hook = items.find((w) => w.id === chosen);
    if (!hook) {
      fill(log, h('p', { class: 'muted' }, items.length ? 'Choose a subscription to see its deliveries.' : 'No subscriptions yet.'));
      return;
    }
    const page1 = await get(`/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries?limit=${LOG}`, { signal: page.signal });
    const head = ['state', 'event', 'task', 'attempts', 'status', 'error', 'next', 'webhook-id', ''].map((c) => h('th', {}, c));
    fill(
      log,
      h('h2', {}, `Deliveries to ${hook.url}`),
      page1.items.length
        ? h('div', { class: 'scroll' }, h('table', { id: 'delivery-log' }, h('thead', {}, h('tr', {}, head)), h('tbody', {}, page1.items.map((d) => deliveryRow(hook, d, draw)))))
        : h('p', { class: 'muted' }, 'No deliveries yet: events committed from now on are sent.'),
    );
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(create, async () => {
      const body = { url: url.value.trim(), kinds: kinds.value.split(',').map((k) => k.trim()).filter(Boolean) };
      const w = await post('/v1/webhooks', body);
      fill(secret, 'Signing secret (shown once, copy it now): ', h('code', {}, w.secret || '(the one you gave)'));
      chosen = w.id;
      await draw();
    });
  });
  page.every(3000, draw);
}
