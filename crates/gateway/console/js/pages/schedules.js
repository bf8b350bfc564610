// Schedules: the tenant's cron schedules with their next fire and last run, refreshed every two
// seconds, each with a Pause or Resume button. docs/schedules.md.

import { get, post } from '../api.js';
import { badge, fill, h, shortId, time } from '../dom.js';
import { act, flash } from '../ui.js';

export const title = 'Schedules';

function toggle(s, after) {
  const verb = s.paused ? 'resume' : 'pause';
  const button = h('button', { type: 'button', class: `small schedule-${verb}` }, s.paused ? 'Resume' : 'Pause');
  button.addEventListener('click', () =>
    act(button, async () => {
      await post(`/v1/schedules/${encodeURIComponent(s.id)}/${verb}`);
      flash(s.paused ? `Resumed ${s.name}.` : `Paused ${s.name}.`);
      after();
    }),
  );
  return button;
}

export function render(page) {
  const tbody = h('tbody', { id: 'schedule-rows' });
  fill(
    page.root,
    h('h1', {}, 'Schedules'),
    h('p', { class: 'hint' }, 'Tasks submitted on a cron timetable in a time zone, fired by the leading supervisor. Create them with `smith schedule create` or POST /v1/schedules.'),
    h('div', { class: 'scroll' }, h('table', { id: 'schedules' },
      h('thead', {}, h('tr', {}, ['name', 'agent', 'cron', 'time zone', 'overlap', 'next fire', 'last run', 'skipped', 'missed', ''].map((c) => h('th', {}, c)))),
      tbody)),
  );
  const load = async () => {
    const list = await get('/v1/schedules', { signal: page.signal });
    const rows = list.items.map((s) => h('tr', { dataset: { id: s.id } },
      h('td', { title: s.id }, s.name),
      h('td', {}, s.agent),
      h('td', { class: 'mono' }, s.cron),
      h('td', {}, s.timezone),
      h('td', {}, s.overlap),
      h('td', { class: 'next-fire' }, s.paused ? badge('paused') : (s.next_fire_at ? time(s.next_fire_at) : '—')),
      h('td', {}, s.last_task_id
        ? [h('a', { href: `#/tasks/${encodeURIComponent(s.last_task_id)}` }, shortId(s.last_task_id)), ' ', s.last_task_status ? badge(s.last_task_status) : '']
        : '—'),
      h('td', { class: 'num' }, String(s.skipped)),
      h('td', { class: 'num' }, String(s.missed)),
      h('td', { class: 'actions' }, toggle(s, load)),
    ));
    fill(tbody, rows.length ? rows : h('tr', {}, h('td', { colspan: 10, class: 'muted' }, 'No schedules yet.')));
  };
  page.every(2000, load);
}
