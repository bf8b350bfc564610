//! Server-Sent-Event streams without gaps or duplicates: a task's events (`id` = seq) and the
//! all-events feed (`id` = commit-ordered position). A feed reader whose cursor is below the
//! retention horizon gets a `retention` event instead of silently missing deleted events.
//!
//! Each stream hooks into the hub *first*, then replays from the store, then goes live,
//! dropping events already sent and filling any gap from the store before sending past it.
//! The store is the truth; the hub is only the fast path. Every event a stream sends, live or
//! replayed, passes [`smith_core::visible_to`] for the reader's tenant: a live event carries
//! its tenant, and one that does not say (an old publisher) is read from the store instead of
//! being shown. A producer task per stream writes
//! into a small bounded channel that the response body drains: a reader that stops reading
//! for `slow_reader_timeout` is cut off and resumes with `Last-Event-ID`.

use crate::error::{ApiError, ApiResult};
use crate::hub::{LiveEvent, Tap};
use crate::AppState;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use bytes::Bytes;
use smith_core::{Event, EventKind, TaskId};
use smith_store::FeedFilter;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Replay page size.
const PAGE: usize = 500;
/// With no live event for about this long, look at the store anyway; then back off to
/// [`STORE_POLL_MAX`] while the stream stays quiet.
const STORE_POLL: Duration = Duration::from_secs(2);
const STORE_POLL_MAX: Duration = Duration::from_secs(30);

type Frame = Result<SseEvent, Infallible>;
pub type SseBody = Sse<axum::response::sse::KeepAliveStream<ReceiverStream<Frame>>>;

fn frame(id: u64, kind: EventKind, json: &[u8]) -> Frame {
    let data = std::str::from_utf8(json).unwrap_or("{}");
    Ok(SseEvent::default().id(id.to_string()).event(kind.as_str()).data(data))
}

/// The `retention` event (docs/retention.md): the reader asked for events after `after`, but
/// retention may have deleted any at or below `horizon`; the stream goes on after it. Its id is
/// the horizon, so a reader that resumes with it is not told again.
fn retention_frame(after: u64, horizon: u64) -> Frame {
    crate::metrics::retention_told();
    let data = serde_json::json!({
        "type": "retention",
        "after": after,
        "horizon": horizon,
        "first_position": horizon + 1,
        "message": "events at or below the horizon may have been deleted by retention; the stream continues after it",
    });
    Ok(SseEvent::default().id(horizon.to_string()).event("retention").data(data.to_string()))
}

fn encode(ev: &Event) -> Bytes {
    Bytes::from(serde_json::to_vec(ev).expect("event serializes"))
}

/// Sends a frame; false when the reader is gone or too slow (cut off). A frame that fits goes
/// straight in: only a full channel arms the slow-reader timer (no timer per event).
async fn send(tx: &mpsc::Sender<Frame>, f: Frame, slow: Duration) -> bool {
    let f = match tx.try_send(f) {
        Ok(()) => return true,
        Err(mpsc::error::TrySendError::Closed(_)) => return false,
        Err(mpsc::error::TrySendError::Full(f)) => f,
    };
    match tokio::time::timeout(slow, tx.send(f)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            crate::metrics::slow_reader_cut();
            tracing::info!("slow SSE reader cut off; it resumes with Last-Event-ID");
            false
        }
    }
}

/// The store check of a live stream (a lost publish must not stall a reader): a stream with no
/// live event for [`STORE_POLL`] reads the store, then waits twice as long each time it stays
/// quiet, up to [`STORE_POLL_MAX`], so that thousands of idle streams cost the store little; a
/// live event brings the period back down. Each wait is jittered by ±20% so that streams opened
/// together do not poll together. One timer per stream for its life, not one per event. When
/// the hub may have missed messages (`hub::suspect`), every quiet stream reads the store within
/// [`STORE_POLL`], spread over it.
struct Poll {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    period: Duration,
    live: bool,
}

/// What wakes a follower.
enum Wake {
    /// A live event, or `None`: the hub unhooked the tap for lagging.
    Live(Option<Arc<LiveEvent>>),
    /// A period without a live event: read the store.
    Poll,
    /// The reader is gone.
    Closed,
}

/// Waits for the next live event, a due store read or the reader leaving; a suspected miss of
/// the hub brings the next store read forward.
async fn wake(tap: &mut Tap, poll: &mut Poll, tx: &mpsc::Sender<Frame>) -> Wake {
    loop {
        tokio::select! {
            ev = tap.rx.recv() => {
                poll.live = true;
                return Wake::Live(ev);
            }
            _ = poll.due() => return Wake::Poll,
            _ = crate::hub::suspect(&mut tap.missed) => poll.soon(),
            _ = tx.closed() => return Wake::Closed,
        }
    }
}

fn jittered(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + d.mul_f64(0.8 + 0.4 * fastrand::f64())
}

impl Poll {
    fn new() -> Poll {
        Poll { sleep: Box::pin(tokio::time::sleep_until(jittered(STORE_POLL))), period: STORE_POLL, live: false }
    }

    /// The hub may have missed messages: read the store within the next [`STORE_POLL`] unless a
    /// live event comes first (a gap in what comes shows by itself). Spread over that period,
    /// so that a gateway's thousands of streams do not all read the store at once.
    fn soon(&mut self) {
        self.period = STORE_POLL;
        self.live = false;
        let at = tokio::time::Instant::now() + STORE_POLL.mul_f64(fastrand::f64());
        self.sleep.as_mut().reset(at);
    }

    /// Resolves when the store should be read: a period with no live event.
    async fn due(&mut self) {
        loop {
            self.sleep.as_mut().await;
            let quiet = !std::mem::take(&mut self.live);
            self.period = if quiet { (self.period * 2).min(STORE_POLL_MAX) } else { STORE_POLL };
            let next = jittered(self.period);
            self.sleep.as_mut().reset(next);
            if quiet {
                return;
            }
        }
    }
}

fn respond(state: &AppState, rx: mpsc::Receiver<Frame>) -> SseBody {
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(state.opts.keepalive).text("keep-alive"))
}

/// `GET /v1/tasks/{id}/events`: replay after `after`, then live; closes after the terminal event.
/// `reader` is the reader's tenant (`None`: the platform); a task of another tenant is missing.
pub async fn task_stream(state: Arc<AppState>, reader: Option<String>, id: TaskId, after: u64) -> ApiResult<SseBody> {
    match state.store.get_task(id).await? {
        Some(t) if reader.as_deref().is_none_or(|r| r == t.tenant) => {}
        _ => return Err(ApiError::not_found(format!("task {id} not found"))),
    }
    let (tx, rx) = mpsc::channel(state.opts.sse_buffer);
    let st = state.clone();
    let closing = state.closing();
    tokio::spawn(async move {
        let _conn = crate::metrics::SseConnection::open("task");
        tokio::select! {
            _ = follow_task(&st, reader.as_deref(), id, after, &tx) => {}
            _ = closing.cancelled() => {}
        }
    });
    Ok(respond(&state, rx))
}

enum Flow {
    Going,
    /// The terminal event was sent, or the reader is gone.
    Done,
}

async fn follow_task(state: &Arc<AppState>, reader: Option<&str>, id: TaskId, after: u64, tx: &mpsc::Sender<Frame>) {
    let slow = state.opts.slow_reader_timeout;
    let mut next = after + 1;
    'hook: loop {
        let mut tap: Tap = state.hub.tap_task(id);
        // Read the status before the events: a task already terminal then has its terminal
        // event in the replay, or the reader resumed past it — either way the stream is over.
        let terminal = matches!(state.store.get_task(id).await, Ok(Some(t)) if t.status.is_terminal());
        if let Flow::Done = replay_task(state, id, &mut next, tx).await {
            return;
        }
        if terminal {
            return;
        }
        let mut poll = Poll::new();
        loop {
            let live = match wake(&mut tap, &mut poll, tx).await {
                Wake::Live(ev) => ev,
                Wake::Poll => {
                    if let Flow::Done = replay_task(state, id, &mut next, tx).await {
                        return;
                    }
                    continue;
                }
                Wake::Closed => return,
            };
            let Some(ev) = live else {
                // unhooked for lagging: read what was missed, then hook in again
                let _ = tap.lagged();
                continue 'hook;
            };
            if ev.event.task_id != Some(id) {
                // a task's tap carries that task's events only; anything else is never sent
                continue;
            }
            if !smith_core::visible_to(reader, ev.event.kind, ev.event.tenant.as_deref()) {
                // the task was checked at open, so this live event did not say whose it is (an old
                // publisher): send the store's copy, not the bus's
                if let Flow::Done = replay_task(state, id, &mut next, tx).await {
                    return;
                }
                continue;
            }
            let seq = ev.event.seq;
            if seq < next {
                continue;
            }
            if seq > next {
                // a gap: the store has what the hub skipped (it is published only after commit)
                if let Flow::Done = replay_task(state, id, &mut next, tx).await {
                    return;
                }
                continue;
            }
            if !send(tx, frame(seq, ev.event.kind, &ev.json), slow).await {
                return;
            }
            next = seq + 1;
            if ev.event.kind.is_terminal() {
                return;
            }
        }
    }
}

async fn replay_task(state: &AppState, id: TaskId, next: &mut u64, tx: &mpsc::Sender<Frame>) -> Flow {
    let slow = state.opts.slow_reader_timeout;
    loop {
        let page = match state.store.events(id, *next - 1, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(task_id = %id, error = %e, "replay failed; closing the stream for the reader to resume");
                return Flow::Done;
            }
        };
        let n = page.len();
        for ev in page {
            if ev.seq != *next {
                continue;
            }
            if !send(tx, frame(ev.seq, ev.kind, &encode(&ev)), slow).await {
                return Flow::Done;
            }
            *next = ev.seq + 1;
            if ev.kind.is_terminal() {
                return Flow::Done;
            }
        }
        if n < PAGE {
            return Flow::Going;
        }
    }
}

/// `GET /v1/events`: the feed after `cursor` (or from now), filtered, resumable by position.
pub async fn feed_stream(state: Arc<AppState>, cursor: Option<u64>, filter: FeedFilter) -> ApiResult<SseBody> {
    let cursor = match cursor {
        Some(c) => c,
        None => state.store.feed_head().await?,
    };
    let (tx, rx) = mpsc::channel(state.opts.sse_buffer);
    let st = state.clone();
    let closing = state.closing();
    tokio::spawn(async move {
        let _conn = crate::metrics::SseConnection::open("feed");
        tokio::select! {
            _ = follow_feed(&st, cursor, &filter, &tx) => {}
            _ = closing.cancelled() => {}
        }
    });
    Ok(respond(&state, rx))
}

async fn follow_feed(state: &Arc<AppState>, mut cursor: u64, filter: &FeedFilter, tx: &mpsc::Sender<Frame>) {
    let slow = state.opts.slow_reader_timeout;
    'hook: loop {
        let mut tap = state.hub.tap_all();
        if !replay_feed(state, &mut cursor, filter, tx).await {
            return;
        }
        let mut poll = Poll::new();
        loop {
            let live = match wake(&mut tap, &mut poll, tx).await {
                Wake::Live(ev) => ev,
                Wake::Poll => {
                    if !replay_feed(state, &mut cursor, filter, tx).await {
                        return;
                    }
                    continue;
                }
                Wake::Closed => return,
            };
            let Some(ev) = live else { continue 'hook };
            let pos = ev.event.pos;
            if pos <= cursor {
                continue;
            }
            if pos > cursor + 1 {
                // published out of commit order, or skipped: the store decides
                if !replay_feed(state, &mut cursor, filter, tx).await {
                    return;
                }
                continue;
            }
            let h = &ev.event;
            if filter.tenant.is_some() && h.tenant.is_none() && h.kind != EventKind::System {
                // a live event that does not say whose it is (an old publisher): a tenant's
                // reader is never shown it from the bus; the store knows its tenant
                if !replay_feed(state, &mut cursor, filter, tx).await {
                    return;
                }
                continue;
            }
            cursor = pos;
            if filter.accepts(h.kind, h.agent.as_deref(), h.tenant.as_deref())
                && !send(tx, frame(pos, h.kind, &ev.json), slow).await
            {
                return;
            }
        }
    }
}

async fn replay_feed(state: &AppState, cursor: &mut u64, filter: &FeedFilter, tx: &mpsc::Sender<Frame>) -> bool {
    let slow = state.opts.slow_reader_timeout;
    loop {
        let page = match state.store.feed(*cursor, filter, PAGE).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "feed replay failed; closing the stream for the reader to resume");
                return false;
            }
        };
        if page.horizon > *cursor {
            // retention deleted events this reader has not seen: say so, and go on from the
            // horizon (whatever is still stored below it is skipped, as the event says)
            if !send(tx, retention_frame(*cursor, page.horizon), slow).await {
                return false;
            }
            *cursor = page.horizon;
        }
        for ev in &page.events {
            if ev.pos <= *cursor {
                continue;
            }
            // the store filtered already; the same rule again here, so that no backend's query
            // can show a reader what the live path would not
            if !filter.matches(ev) {
                *cursor = ev.pos;
                continue;
            }
            if !send(tx, frame(ev.pos, ev.kind, &encode(ev)), slow).await {
                return false;
            }
            *cursor = ev.pos;
        }
        *cursor = (*cursor).max(page.cursor);
        if !page.more {
            return true;
        }
    }
}
