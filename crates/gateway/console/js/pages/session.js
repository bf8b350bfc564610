// One session as a chat: each turn's message and the agent's answer, streamed live while the
// turn runs; the next message is a new turn.

import { get, post } from '../api.js';
import { TERMINAL, badge, clip, fill, h, num, shortId, text, time, usd } from '../dom.js';
import { follow } from '../sse.js';
import { act } from '../ui.js';
import { messageInput } from './sessions.js';

export const title = 'Session';

const TERMINAL_KINDS = new Set(['task.succeeded', 'task.failed', 'task.cancelled', 'task.timed_out', 'task.expired']);

/** The text an output event adds to a live answer. */
function outputText(d) {
  if (typeof d === 'string') return d;
  if (d && typeof d === 'object' && typeof d.text === 'string') return d.text;
  return `${text(d)}\n`;
}

function answer(t) {
  if (t.status === 'succeeded') return h('div', { class: 'said' }, clip(text(t.result, true), 20000));
  if (t.error) return h('div', { class: 'said bad' }, `${t.error.code}: ${t.error.message}`);
  if (TERMINAL.has(t.status)) return h('div', { class: 'said muted' }, t.status.replace('_', ' '));
  return null;
}

export async function render(page) {
  const [id] = page.params;
  const head = h('div');
  const chat = h('div', { id: 'chat', class: 'chat' });
  const input = h('textarea', { id: 'say-input', rows: 2, placeholder: 'Message (Enter sends, Shift+Enter for a new line)' });
  const send = h('button', { type: 'submit', id: 'say-send' }, 'Send');
  const form = h('form', { id: 'say', class: 'say' }, input, send);
  fill(page.root, head, chat, form);

  const turns = new Map();
  let session = null;

  const load = async () => {
    session = await get(`/v1/sessions/${id}`);
    const u = session.usage;
    fill(
      head,
      h('h1', {}, 'Session ', h('code', { class: 'id' }, session.id)),
      h(
        'p',
        { class: 'muted' },
        `with `,
        h('b', {}, session.agent),
        ` · started ${time(session.created_at)} · ${session.turns.length} turns · ${num(u.input_tokens + u.output_tokens)} tokens · ${usd(u.cost_usd)}`,
      ),
    );
    session.turns.forEach((t, i) => show(t, i + 1));
  };

  const show = (t, n) => {
    const sig = `${t.status}|${t.attempt}`;
    let turn = turns.get(t.id);
    if (turn && turn.sig === sig) return;
    if (!turn) {
      const live = h('div', { class: 'said live' });
      const agentSays = h('div', { class: 'bubble agent' });
      const el = h(
        'div',
        { class: 'turn', dataset: { taskId: t.id } },
        h('div', { class: 'bubble me' }, h('div', { class: 'said' }, clip(text(t.input, true), 20000)), h('div', { class: 'meta' }, `turn ${n} · `, h('a', { href: `#/tasks/${t.id}` }, `task ${shortId(t.id)}`))),
        agentSays,
      );
      turn = { el, agentSays, live, stream: null, sig: '' };
      turns.set(t.id, turn);
      chat.append(el);
      chat.scrollTop = chat.scrollHeight;
    }
    turn.sig = sig;
    turn.el.dataset.status = t.status;
    const done = answer(t);
    fill(turn.agentSays, done || turn.live, h('div', { class: 'meta' }, session.agent, ' · ', badge(t.status), t.finished_at ? ` · ${time(t.finished_at)}` : ''));
    if (!TERMINAL.has(t.status) && !turn.stream) {
      turn.stream = follow(`/v1/tasks/${t.id}/events`, {
        isLast: (f) => TERMINAL_KINDS.has(f.event),
        onFrame: (f) => {
          if (f.event === 'output') {
            try {
              turn.live.append(outputText(JSON.parse(f.data).data));
            } catch {
              // not JSON: nothing to show
            }
          } else if (f.event === 'task.retrying') {
            turn.live.append(h('div', { class: 'muted' }, 'retrying…'));
          } else if (TERMINAL_KINDS.has(f.event)) {
            load().catch(() => {});
          }
        },
      });
      page.onClose(() => turn.stream.close());
    }
    if (TERMINAL.has(t.status) && turn.stream) {
      turn.stream.close();
    }
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!input.value.trim()) return;
    act(send, async () => {
      await post(`/v1/sessions/${id}/turns`, { input: messageInput(input.value) });
      input.value = '';
      await load();
    });
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  await load();
  page.every(2000, load);
}
