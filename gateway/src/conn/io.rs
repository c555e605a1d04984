//! Connection timeouts enforced on the socket itself.
//!
//! hyper's own header timer also runs while a keep-alive connection waits for its next request,
//! which would make the idle timeout no longer than the header timeout. This wrapper keeps the
//! two apart: between requests the connection may stay silent for `idle_timeout`; once the first
//! byte of a request head arrives (HTTP/1), the whole head must arrive within `header_timeout`.
//! While a request is in flight, or after a protocol upgrade, neither applies.
//!
//! Parking (HTTP/1): hyper keeps about 16 KiB of buffers per connection for as long as it serves
//! it, idle or not. When a keep-alive connection has been idle for `park_after` with nothing
//! buffered, the wrapper reports end of stream to hyper, which ends the connection normally, and
//! turns hyper's shutdown into a no-op so the client sees nothing. `conn::serve` then holds only
//! the socket until the next request arrives and builds a new hyper connection for it
//! ([`TimedIo::resume`]). Busy connections never park.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
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

    /// A response finished (or was abandoned) at `at`.
    pub fn request_ended(&self, at: Instant) {
        self.idle_since_ms.store(
            at.saturating_duration_since(self.epoch).as_millis() as u64,
            Ordering::Relaxed,
        );
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

    /// When the connection last became idle.
    pub fn idle_since(&self) -> Instant {
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
        // A request head has begun (HTTP/1), and when: stamped when its deadline is first
        // needed, so a head that arrives whole costs no clock read.
        head_started: Option<Option<Instant>>,
        armed: Option<(Instant, Deadline)>,
        sleep: Pin<Box<Sleep>>,
        park_after: Option<Duration>,
        parked: bool,
        prefix: Bytes,
    }
}

/// Which deadline is armed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Check,
    Header,
    Idle,
    Park,
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
            head_started: http1.then_some(Some(now)),
            armed: None,
            sleep: Box::pin(tokio::time::sleep_until(now + Duration::from_secs(3600))),
            park_after: None,
            parked: false,
            prefix: Bytes::new(),
        }
    }

    /// Parks the connection (see the module docs) after it has been idle this long.
    pub fn park_after(mut self, after: Duration) -> Self {
        self.park_after = Some(after);
        self
    }

    /// Whether the connection was parked (hyper saw a made-up end of stream).
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Resumes a parked connection: the next request is arriving; `prefix` holds bytes hyper had
    /// read but not used, which are replayed first.
    pub fn resume(&mut self, prefix: Bytes) {
        self.parked = false;
        self.prefix = prefix;
        self.head_started = Some(Some(Instant::now()));
        self.seen_requests = self.state.requests();
        self.armed = None;
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead> AsyncRead for TimedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        if *this.parked {
            return Poll::Ready(Ok(())); // end of stream, as far as hyper knows
        }
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if this.state.upgraded.load(Ordering::Relaxed) {
            return res; // the upgraded protocol has its own rules
        }
        let busy = this.state.in_flight.load(Ordering::Acquire) > 0;
        let reqs = this.state.requests.load(Ordering::Relaxed);
        if busy {
            *this.head_started = None;
        } else if reqs != *this.seen_requests {
            *this.seen_requests = reqs;
            *this.head_started = None;
        }
        match res {
            Poll::Ready(Ok(())) => {
                if !busy && *this.http1 && this.head_started.is_none() && buf.filled().len() > before {
                    *this.head_started = Some(None);
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // Nothing to read. hyper will not read again until the socket wakes it, so a timer stays
        // armed even while a request is in flight (`Check`): when it fires, the deadlines are
        // looked at again. Timers are re-armed only when a deadline moves earlier, so a busy
        // connection touches the timer wheel about once per period, not once per request, and
        // while that check is armed a busy connection does not read the clock at all.
        loop {
            let busy = this.state.in_flight.load(Ordering::Acquire) > 0;
            let (deadline, kind) = match *this.armed {
                Some(check @ (_, Deadline::Check)) if busy => check,
                _ if busy => (
                    Instant::now() + this.park_after.unwrap_or(this.timeouts.idle),
                    Deadline::Check,
                ),
                _ => match this.head_started {
                    Some(h) => (
                        *h.get_or_insert_with(Instant::now) + this.timeouts.header,
                        Deadline::Header,
                    ),
                    None => {
                        let since = this.state.idle_since();
                        let idle = since + this.timeouts.idle;
                        match *this.park_after {
                            // Only once a request was served: the first head is due at once.
                            Some(p) if reqs > 0 && since + p < idle => (since + p, Deadline::Park),
                            _ => (idle, Deadline::Idle),
                        }
                    }
                },
            };
            if this.armed.is_none_or(|(a, _)| deadline < a) {
                this.sleep.as_mut().reset(deadline);
                *this.armed = Some((deadline, kind));
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *this.armed = None;
            if Instant::now() < deadline {
                continue; // fired for an earlier deadline that has since moved
            }
            let (counter, what) = match kind {
                Deadline::Check => continue,
                Deadline::Park => {
                    *this.parked = true;
                    return Poll::Ready(Ok(()));
                }
                Deadline::Header => (&this.timeouts.header_expired, "request head"),
                Deadline::Idle => (&this.timeouts.idle_expired, "idle"),
            };
            counter.inc();
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, format!("{what} timeout"))));
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
        let this = self.project();
        if *this.parked {
            return Poll::Ready(Ok(())); // parking is not closing
        }
        this.inner.poll_shutdown(cx)
    }
}
