// The fleet over time: a sampler that reads the live API (agents, scaling, usage) and the
// Prometheus text of `/metrics` every few seconds, and keeps the last minutes in memory for
// the overview and scaling charts. Rates and latency quantiles are the change between two
// samples of a counter or histogram.

import { get } from './api.js';

/** Parses Prometheus text: name → [{labels, value}]. */
export function parseProm(textBody) {
  const out = new Map();
  for (const raw of textBody.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    const value = Number(m[4]);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value });
  }
  return out;
}

/** Sum of a metric's series whose labels match `where`; null when the metric is absent. */
export function sum(prom, name, where = {}) {
  const series = prom && prom.get(name);
  if (!series) return null;
  let total = 0;
  for (const s of series) {
    if (Object.entries(where).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

/** A histogram's cumulative buckets summed over series: [[le, count]] sorted by le. */
function buckets(prom, name) {
  const series = prom && prom.get(`${name}_bucket`);
  if (!series) return null;
  const byLe = new Map();
  for (const s of series) {
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
}

/** The q-quantile of the observations between two scrapes, interpolated within its bucket. */
export function quantile(q, before, after, name) {
  const b0 = buckets(before, name);
  const b1 = buckets(after, name);
  if (!b0 || !b1) return null;
  const prev = new Map(b0);
  const delta = b1.map(([le, c]) => [le, c - (prev.get(le) || 0)]);
  const total = delta.length ? delta[delta.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, c] of delta) {
    if (c >= rank) {
      if (le === Infinity) return lower;
      const inBucket = c - below;
      return inBucket > 0 ? lower + ((le - lower) * (rank - below)) / inBucket : le;
    }
    lower = le;
    below = c;
  }
  return lower;
}

function rate(before, after, name, dt, where) {
  const a = sum(before, name, where);
  const b = sum(after, name, where);
  if (a == null || b == null || dt <= 0) return null;
  return Math.max(0, b - a) / dt;
}

const PERIOD_MS = 2000;
const KEEP = 300;

/** The samples so far (oldest first) and their subscribers. */
export const history = [];
const listeners = new Set();
let timer = null;
let lastProm = null;
let lastAt = 0;

export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

async function optional(promise) {
  try {
    return await promise;
  } catch {
    return null;
  }
}

async function sample() {
  const at = Date.now();
  const [agents, scaling, usage, metricsText] = await Promise.all([
    optional(get('/v1/agents')),
    optional(get('/v1/scaling')),
    optional(get('/v1/usage')),
    optional(get('/metrics', { as: 'text' })),
  ]);
  const prom = metricsText ? parseProm(metricsText) : null;
  const dt = (at - lastAt) / 1000;
  const s = { at, agents, scaling, prom };
  if (agents) {
    s.running = agents.items.reduce((n, a) => n + a.running, 0);
    s.queued = agents.items.reduce((n, a) => n + a.queued, 0);
  }
  if (scaling) {
    s.desired = scaling.desired_slots;
    s.current = scaling.current_slots;
    s.load = scaling.load;
  }
  if (usage) {
    s.cost = usage.items.reduce((n, u) => n + u.cost_usd, 0);
    s.tokens = usage.items.reduce((n, u) => n + u.input_tokens + u.output_tokens, 0);
  }
  if (prom) {
    s.busy = sum(prom, 'smith_agent_slots', { state: 'busy' });
    s.idle = sum(prom, 'smith_agent_slots', { state: 'idle' });
    s.queueDepth = sum(prom, 'smith_queue_depth');
    if (lastProm) {
      const all = rate(lastProm, prom, 'smith_task_attempts_finished_total', dt);
      const retrying = rate(lastProm, prom, 'smith_task_attempts_finished_total', dt, { outcome: 'retrying' });
      s.finished = all == null ? null : all - (retrying || 0);
      s.submitted = rate(lastProm, prom, 'smith_tasks_submitted_total', dt);
      s.dispatchP50 = quantile(0.5, lastProm, prom, 'smith_dispatch_latency_seconds');
      s.dispatchP99 = quantile(0.99, lastProm, prom, 'smith_dispatch_latency_seconds');
      s.durationP50 = quantile(0.5, lastProm, prom, 'smith_task_duration_seconds');
      s.deliveryP99 = quantile(0.99, lastProm, prom, 'smith_event_delivery_seconds');
    }
    lastProm = prom;
  }
  if (s.queueDepth == null && s.queued != null) s.queueDepth = s.queued;
  lastAt = at;
  history.push(s);
  if (history.length > KEEP) history.shift();
  for (const fn of listeners) fn(s);
}

/** Starts sampling (once); the first sample is taken at once. */
export function start() {
  if (timer) return;
  const tick = async () => {
    try {
      await sample();
    } finally {
      timer = setTimeout(tick, PERIOD_MS);
    }
  };
  timer = setTimeout(tick, 0);
}

/** Chart series from the history: `{ 'shown name': 'field of a reading', … }` → `[{ name, values }]`. */
export function series(fields) {
  return Object.entries(fields).map(([name, key]) => ({ name, values: history.map((x) => x[key] ?? null) }));
}
