//! Connection timeouts enforced on the socket itself.
//!
//! hyper's own header timer also runs while a keep-alive connection waits for its next request,
//! which would make the idle timeout no longer than the header timeout. This wrapper keeps the
//! two apart: between requests the connection may stay silent for `idle_timeout`; once the first
//! byte of a request head arrives (HTTP/1), the whole head must arrive within `header_timeout`.
//! While a request is in flight, or after a protocol upgrade, neither applies.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// State shared by a connection's socket wrapper and the requests it carries.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// Milliseconds since `epoch` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    upgraded: AtomicBool,
}

// === impl ConnState ===

impl ConnState {
    /// New state for a connection accepted now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
        }
    }

    /// A request head was received.
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A response finished (or was abandoned).
    pub fn request_ended(&self) {
        self.idle_since_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The connection was handed to a protocol upgrade (e.g. WebSocket).
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
    }
}

impl Default for ConnState {
    fn default() -> Self {
        Self::new()
    }
}

/// Timeouts of one connection and the counters they bump.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Time for a full request head once it has started (HTTP/1).
    pub header: Duration,
    /// Silence allowed between requests.
    pub idle: Duration,
    /// Counts header timeouts.
    pub header_expired: Counter,
    /// Counts idle timeouts.
    pub idle_expired: Counter,
}

pin_project! {
    /// A socket with header and idle deadlines.
    pub struct TimedIo<T> {
        #[pin]
        inner: T,
        state: std::sync::Arc<ConnState>,
        timeouts: Timeouts,
        http1: bool,
        seen_requests: u64,
        head_started: Option<Instant>,
        armed: Option<Instant>,
        sleep: Pin<Box<Sleep>>,
    }
}

// === impl TimedIo ===

impl<T> TimedIo<T> {
    /// Wraps an accepted socket. For HTTP/1 the header deadline starts now (the first request
    /// head is due right away); for HTTP/2 the idle deadline does.
    pub fn new(inner: T, state: std::sync::Arc<ConnState>, timeouts: Timeouts, http1: bool) -> Self {
        let now = Instant::now();
        Self {
            inner,
            state,
            timeouts,
            http1,
            seen_requests: 0,
            head_started: http1.then_some(now),
            armed: None,
            sleep: Box::pin(tokio::time::sleep_until(now + Duration::from_secs(3600))),
        }
    }
}

impl<T: AsyncRead> AsyncRead for TimedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if this.state.upgraded.load(Ordering::Relaxed) || this.state.in_flight.load(Ordering::Acquire) > 0 {
            *this.head_started = None;
            return res;
        }
        let reqs = this.state.requests.load(Ordering::Relaxed);
        if reqs != *this.seen_requests {
            *this.seen_requests = reqs;
            *this.head_started = None;
        }
        match res {
            Poll::Ready(Ok(())) => {
                if *this.http1 && this.head_started.is_none() && buf.filled().len() > before {
                    *this.head_started = Some(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (deadline, header) = match *this.head_started {
                    Some(h) => (h + this.timeouts.header, true),
                    None => (this.state.idle_since() + this.timeouts.idle, false),
                };
                // The timer is re-armed only when the deadline moves earlier; a later deadline
                // is picked up when the armed timer fires, so a busy keep-alive connection does
                // not touch the timer wheel on every request.
                if this.armed.is_none_or(|a| deadline < a) {
                    this.sleep.as_mut().reset(deadline);
                    *this.armed = Some(deadline);
                }
                while this.sleep.as_mut().poll(cx).is_ready() {
                    if Instant::now() < deadline {
                        this.sleep.as_mut().reset(deadline);
                        *this.armed = Some(deadline);
                        continue;
                    }
                    *this.armed = None;
                    let (counter, what) = if header {
                        (&this.timeouts.header_expired, "request head")
                    } else {
                        (&this.timeouts.idle_expired, "idle")
                    };
                    counter.inc();
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, format!("{what} timeout"))));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for TimedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
