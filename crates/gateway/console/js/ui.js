// What every page shares: navigation and flash messages.

import { $, fill, h } from './dom.js';

/** Navigates to a hash route (showing it again when it is the current one). */
export function go(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = hash;
}

let flashTimer = null;

/** A short message at the top of the page; errors stay until the next message. */
export function flash(message, kind = 'info') {
  const el = $('#flash');
  fill(el, h('span', { class: `msg ${kind}` }, message));
  clearTimeout(flashTimer);
  if (kind !== 'error') flashTimer = setTimeout(() => fill(el), 4000);
}

/** Runs an action of a button: disabled while it runs, its error flashed. */
export async function act(button, fn) {
  button.disabled = true;
  try {
    return await fn();
  } catch (e) {
    flash(e.message, 'error');
    return undefined;
  } finally {
    button.disabled = false;
  }
}
