//! The accept loop behind [`crate::Gateway::serve`] and [`crate::serve_metrics`]: HTTP/1.1
//! over plain TCP or TLS (rustls), with the limits that keep a slow or silent client from
//! holding a connection forever.
//!
//! Each connection is in one of three phases, and only a connection waiting for its client
//! has a deadline:
//!
//! - **head**: a request is due — the first one after the connection opens, or the next one
//!   once its first byte has arrived. The whole request head must arrive within
//!   `header_timeout` of that moment, however slowly it dribbles in (slow loris).
//! - **idle**: a kept-alive connection between requests; closed after `idle_timeout`.
//! - **busy**: a request is being answered (its handler runs or its body, an SSE stream
//!   included, is still being sent): no deadline here. Slow SSE readers are cut off by the
//!   stream itself (`slow_reader_timeout`).
//!
//! The deadline lives in the connection's reader ([`Watched`]): when hyper waits for bytes
//! past it, the read fails and hyper drops the connection. A connection that is busy costs no
//! timer at all.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::ServerCert;

/// How a listener serves: TLS or not, and how long a client may keep the server waiting.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Serve HTTPS with this certificate (reloadable); plain HTTP when `None`.
    pub tls: Option<Arc<ServerCert>>,
    /// From the moment a request is due (connection open, or the first byte of the next
    /// request) to its last header line; also bounds the TLS handshake.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { tls: None, header_timeout: Duration::from_secs(10), idle_timeout: Duration::from_secs(60) }
    }
}

/// Why the gateway cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the listener's address: {0}")]
    Listener(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Serves `router` on `listener` until `stop`; then stops accepting, lets every in-flight
/// response finish (the caller ends its SSE streams) and closes idle connections.
pub(crate) async fn run(
    listener: TcpListener,
    router: axum::Router,
    opts: &ServeOptions,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let tls = match &opts.tls {
        Some(cert) => Some(tokio_rustls::TlsAcceptor::from(cert.server_config()?)),
        None => None,
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    let http = Arc::new(http);
    let connections = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            http: http.clone(),
            router: router.clone(),
            remote,
            header_timeout: opts.header_timeout,
            idle_timeout: opts.idle_timeout,
            stop: stop.clone(),
        };
        match &tls {
            None => connections.spawn(conn.serve(tcp)),
            Some(acceptor) => connections.spawn(conn.handshake(acceptor.clone(), tcp)),
        };
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Like axum's: a connection that failed before it was accepted is its client's business; any
/// other error (out of file descriptors) is logged and accepting pauses a second.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One accepted connection, about to be served.
struct Connection {
    http: Arc<hyper::server::conn::http1::Builder>,
    router: axum::Router,
    remote: SocketAddr,
    header_timeout: Duration,
    idle_timeout: Duration,
    stop: CancellationToken,
}

impl Connection {
    /// The TLS handshake, bounded by the header timeout, then HTTP. A client speaking plain
    /// HTTP to the TLS port gets a `400` that says so, not a hang or a bare reset.
    async fn handshake(self, acceptor: tokio_rustls::TlsAcceptor, tcp: TcpStream) {
        let deadline = Instant::now() + self.header_timeout;
        let mut first = [0u8; 1];
        let peeked = tokio::select! {
            _ = self.stop.cancelled() => return,
            r = tokio::time::timeout_at(deadline, tcp.peek(&mut first)) => r,
        };
        match peeked {
            Err(_) => {
                tracing::debug!(remote = %self.remote, "no TLS handshake within the header timeout; closing");
                return;
            }
            Ok(Err(_)) | Ok(Ok(0)) => return,
            // 0x16: a TLS handshake record; an ASCII letter: an HTTP method
            Ok(Ok(_)) if first[0].is_ascii_uppercase() => return refuse_plain_http(tcp, deadline).await,
            Ok(Ok(_)) => {}
        }
        let accepted = tokio::select! {
            _ = self.stop.cancelled() => return,
            r = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => r,
        };
        match accepted {
            Ok(Ok(tls)) => self.serve(tls).await,
            Ok(Err(e)) => tracing::debug!(remote = %self.remote, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(remote = %self.remote, "TLS handshake not done within the header timeout"),
        }
    }

    /// Serves HTTP/1.1 on `io` until the client leaves, a deadline passes, or `stop` (then
    /// the request in flight is answered and the connection closed).
    async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: S) {
        let phase = Arc::new(PhaseCell::new(self.header_timeout, self.idle_timeout));
        let io = TokioIo::new(Watched::new(io, phase.clone()));
        let router = TowerToHyperService::new(self.router);
        let remote = self.remote;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            let busy = Busy::begin(phase.clone());
            let response = hyper::service::Service::call(&router, req);
            async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| TrackedBody { body, _busy: busy }))
            }
        });
        let conn = self.http.serve_connection(io, service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = self.stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(remote = %remote, error = %e, "connection closed");
        }
    }
}

/// Reads what a plain-HTTP client sent to the TLS port (so closing does not reset the
/// connection under the reply) and answers `400` with a JSON error.
async fn refuse_plain_http(mut tcp: TcpStream, deadline: Instant) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await;
    let body = r#"{"error":{"code":"invalid_argument","message":"this port serves HTTPS; use an https:// URL"}}"#;
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout_at(deadline, async {
        tcp.write_all(reply.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

/// Where a connection is between its requests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// A request head is due: `header_timeout` from `since`.
    Head { since: Instant },
    /// Kept alive with nothing to do: `idle_timeout` from `since`.
    Idle { since: Instant },
    /// Answering `requests` requests (hyper answers one at a time; a count keeps it honest).
    Busy { requests: usize },
}

struct PhaseCell {
    phase: Mutex<Phase>,
    /// The reader that found no deadline (busy) and waits on the socket alone: woken when the
    /// connection turns idle, so that it arms the idle deadline.
    reader: Mutex<Option<Waker>>,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl PhaseCell {
    fn new(header_timeout: Duration, idle_timeout: Duration) -> PhaseCell {
        PhaseCell {
            phase: Mutex::new(Phase::Head { since: Instant::now() }),
            reader: Mutex::new(None),
            header_timeout,
            idle_timeout,
        }
    }

    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut p = self.phase.lock().expect("phase lock");
        *p = f(*p);
    }

    /// Bytes arrived: between requests they begin the next one, whose head is now due.
    fn bytes_read(&self) {
        self.update(|p| match p {
            Phase::Idle { .. } => Phase::Head { since: Instant::now() },
            other => other,
        })
    }

    /// When waiting for the client must end, and why; `None` while a request is answered.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        match *self.phase.lock().expect("phase lock") {
            Phase::Head { since } => Some((since + self.header_timeout, "request headers not received in time")),
            Phase::Idle { since } => Some((since + self.idle_timeout, "idle connection")),
            Phase::Busy { .. } => None,
        }
    }
}

/// Marks its connection busy from the request's arrival until its response body is done or
/// dropped.
struct Busy(Arc<PhaseCell>);

impl Busy {
    fn begin(cell: Arc<PhaseCell>) -> Busy {
        cell.update(|p| match p {
            Phase::Busy { requests } => Phase::Busy { requests: requests + 1 },
            _ => Phase::Busy { requests: 1 },
        });
        Busy(cell)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|p| match p {
            Phase::Busy { requests } if requests > 1 => Phase::Busy { requests: requests - 1 },
            _ => Phase::Idle { since: Instant::now() },
        });
        if let Some(reader) = self.0.reader.lock().expect("reader lock").take() {
            reader.wake();
        }
    }
}

/// A response body that keeps its connection busy while it is being sent.
struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's byte stream with its phase's deadline: a read still waiting when the
/// deadline passes fails with `TimedOut`, and hyper closes the connection.
struct Watched<S> {
    inner: S,
    cell: Arc<PhaseCell>,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl<S> Watched<S> {
    fn new(inner: S, cell: Arc<PhaseCell>) -> Self {
        Watched { inner, cell, timer: Box::pin(tokio::time::sleep(Duration::ZERO)), armed: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.cell.bytes_read();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some((deadline, why)) = self.cell.deadline() else {
            let mut reader = self.cell.reader.lock().expect("reader lock");
            if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *reader = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        if self.armed != Some(deadline) {
            self.timer.as_mut().reset(deadline);
            self.armed = Some(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn cell() -> Arc<PhaseCell> {
        Arc::new(PhaseCell::new(Duration::from_secs(10), Duration::from_secs(60)))
    }

    #[tokio::test(start_paused = true)]
    async fn phases_and_deadlines() {
        let c = cell();
        let t0 = Instant::now();
        assert_eq!(c.deadline().unwrap().0, t0 + Duration::from_secs(10), "the first request is due");
        let a = Busy::begin(c.clone());
        assert_eq!(c.deadline(), None, "busy: no deadline");
        let b = Busy::begin(c.clone());
        drop(a);
        assert_eq!(c.deadline(), None, "still one request");
        tokio::time::advance(Duration::from_secs(100)).await;
        drop(b);
        let t1 = Instant::now();
        assert_eq!(c.deadline().unwrap().0, t1 + Duration::from_secs(60), "idle after the last response");
        tokio::time::advance(Duration::from_secs(5)).await;
        c.bytes_read();
        assert_eq!(c.deadline().unwrap().0, t1 + Duration::from_secs(15), "head due from its first byte");
        c.bytes_read();
        assert_eq!(c.deadline().unwrap().0, t1 + Duration::from_secs(15), "more bytes do not extend it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out_a_busy_one_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let c = cell();
        let mut watched = Watched::new(server, c.clone());
        let mut buf = [0u8; 8];
        let started = Instant::now();
        let err = watched.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        let busy = Busy::begin(c.clone());
        let read = tokio::time::timeout(Duration::from_secs(3600), watched.read(&mut buf)).await;
        assert!(read.is_err(), "a busy connection waits as long as it takes");
        let mut client = client;
        client.write_all(b"x").await.unwrap();
        assert_eq!(watched.read(&mut buf).await.unwrap(), 1);

        // a read already waiting while busy gets the idle deadline when the response ends
        let reading = tokio::spawn(async move {
            let started = Instant::now();
            let err = watched.read(&mut buf).await.unwrap_err();
            (err.kind(), started.elapsed())
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(busy);
        let (kind, waited) = reading.await.unwrap();
        assert_eq!((kind, waited), (io::ErrorKind::TimedOut, Duration::from_secs(90)));
    }
}
