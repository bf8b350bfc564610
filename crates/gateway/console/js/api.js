// The JSON API client: the bearer token from this tab's session storage, JSON errors as
// ApiError, and one sign-in prompt shared by every request that met a 401.

const TOKEN_KEY = 'smith.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
  for (const fn of tokenListeners) fn(t);
}

const tokenListeners = new Set();
export function onToken(fn) {
  tokenListeners.add(fn);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Asks the operator for a token (set by the app); every caller waiting on a 401 shares it.
let prompt = () => Promise.reject(new ApiError(401, 'unauthenticated', 'a token is needed'));
let pending = null;

export function setTokenPrompt(fn) {
  prompt = fn;
}

/** Waits until the operator has entered a token; `refused` says the last one was not taken. */
export function needToken(refused) {
  if (!pending) {
    pending = prompt(refused).finally(() => {
      pending = null;
    });
  }
  return pending;
}

export function headers(extra = {}) {
  const out = { ...extra };
  const t = token();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

async function errorOf(res) {
  let code = 'http_error';
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // not a JSON error body: keep the status line
  }
  return new ApiError(res.status, code, message);
}

/**
 * Sends a request; a 401 asks for a token and tries again with it. Resolves to the parsed
 * JSON body (or the text for `as: 'text'`, a Blob for `as: 'blob'`), rejects with ApiError.
 */
export async function request(method, path, { body, as = 'json', signal } = {}) {
  for (;;) {
    const h = headers({ Accept: as === 'json' ? 'application/json' : '*/*' });
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal,
    });
    if (res.status === 401) {
      await needToken(Boolean(token()));
      continue;
    }
    if (!res.ok) throw await errorOf(res);
    if (res.status === 204) return null;
    if (as === 'blob') return res.blob();
    return as === 'text' ? res.text() : res.json();
  }
}

/**
 * Fetches a file the API serves (with the bearer token, which never goes in a URL) and hands
 * it to the browser as a download named `filename`.
 */
export async function download(path, filename) {
  const blob = await request('GET', path, { as: 'blob' });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, body, opts) => request('POST', path, { ...opts, body: body ?? {} });

/** A query string from the defined, non-empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v != null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
