// Server-Sent-Event streams read with fetch(): EventSource cannot send the Authorization
// header. Frames are parsed as the HTML standard says (CR, LF or CRLF line ends, comments,
// multi-line data), and a stream that breaks is reopened with `Last-Event-ID` so that no
// event is lost or repeated.

import { headers, needToken, token } from './api.js';

/** An incremental `text/event-stream` parser; `onFrame({id, event, data})` per dispatched frame. */
export class SseParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buf = '';
    this.reset();
  }

  reset() {
    this.id = null;
    this.event = '';
    this.data = [];
  }

  push(chunk) {
    this.buf += chunk;
    for (;;) {
      const i = this.buf.search(/[\r\n]/);
      if (i < 0) return;
      // a CR at the end may be the first half of a CRLF: wait for the next chunk
      if (this.buf[i] === '\r' && i === this.buf.length - 1) return;
      const line = this.buf.slice(0, i);
      const skip = this.buf[i] === '\r' && this.buf[i + 1] === '\n' ? 2 : 1;
      this.buf = this.buf.slice(i + skip);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length) this.onFrame({ id: this.id, event: this.event || 'message', data: this.data.join('\n') });
      this.reset();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

/** Silence this long (the server sends a keep-alive comment every 15 s by default) is a dead connection. */
const STALL_MS = 45000;
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/** The JSON a frame carries, or `undefined` when it is not JSON. */
function parsed(data) {
  try {
    return JSON.parse(data);
  } catch {
    return undefined;
  }
}

/**
 * Follows an SSE stream until `close()`, or until `isLast(frame)` says a frame was the last
 * (a task's terminal event). Reopens a broken stream with `Last-Event-ID` after a growing
 * delay; a 401 asks for a token first. `onFrame(frame)` sees every frame; `onEvent(ev, frame)`
 * those whose data is JSON, parsed. `onState(state, detail)`: `connecting` and `live`
 * (detail: reconnects so far), `reconnecting` (detail: why), `ended`, `error` (detail: an Error; the stream stops).
 */
export function follow(path, { after = null, onFrame = () => {}, onEvent = () => {}, onState = () => {}, isLast = () => false }) {
  const ctl = new AbortController();
  let last = after;
  let reconnects = 0;
  const run = async () => {
    let delay = 250;
    while (!ctl.signal.aborted) {
      let why = 'the stream closed';
      const attempt = new AbortController();
      const stop = () => attempt.abort();
      ctl.signal.addEventListener('abort', stop);
      let watchdog = null;
      try {
        onState('connecting', reconnects);
        const h = headers({ Accept: 'text/event-stream' });
        if (last != null) h['Last-Event-ID'] = String(last);
        const res = await fetch(path, { headers: h, cache: 'no-store', signal: attempt.signal });
        if (res.status === 401) {
          await needToken(Boolean(token()));
          continue;
        }
        if (!res.ok) {
          let message = `${res.status} ${res.statusText}`;
          try {
            message = (await res.json()).error.message;
          } catch {
            // keep the status line
          }
          // a missing task or a refused filter does not get better by asking again
          if (res.status >= 400 && res.status < 500 && res.status !== 429) {
            onState('error', new Error(message));
            return;
          }
          throw new Error(message);
        }
        onState('live', reconnects);
        delay = 250;
        let done = false;
        const parser = new SseParser((frame) => {
          if (done) return;
          if (frame.id != null && frame.id !== '') last = frame.id;
          onFrame(frame);
          const ev = parsed(frame.data);
          if (ev !== undefined) onEvent(ev, frame);
          if (isLast(frame)) done = true;
        });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        const arm = () => {
          clearTimeout(watchdog);
          watchdog = setTimeout(() => attempt.abort(), STALL_MS);
        };
        arm();
        for (;;) {
          const { value, done: eof } = await reader.read();
          if (eof) break;
          arm();
          parser.push(value);
          if (done) {
            reader.cancel().catch(() => {});
            break;
          }
        }
        if (done) {
          onState('ended');
          return;
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
        why = attempt.signal.aborted ? 'no data for a while' : e.message || String(e);
      } finally {
        clearTimeout(watchdog);
        ctl.signal.removeEventListener('abort', stop);
      }
      if (ctl.signal.aborted) return;
      reconnects += 1;
      onState('reconnecting', why);
      await sleep(delay, ctl.signal);
      delay = Math.min(delay * 2, 5000);
    }
  };
  // started after the caller holds the handle, which its callbacks may use
  queueMicrotask(run);
  return {
    close: () => ctl.abort(),
    get last() {
      return last;
    },
    get reconnects() {
      return reconnects;
    },
  };
}
