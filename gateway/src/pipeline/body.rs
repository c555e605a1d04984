//! Body types of the request path: one boxed body, a request-body limit, and a response body
//! wrapper that keeps the request's [`Observer`](super::observe::Observer) alive until the last
//! byte is sent (or the client goes away), so every outcome is recorded exactly once.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use pin_project_lite::pin_project;

use super::observe::Observer;
use crate::error::BoxError;
use crate::upstream::client::{Answer, Loan};

fn release(loan: &mut Option<Loan>) {
    if let Some(l) = loan.take() {
        l.release();
    }
}

/// A boxed body, for answers off the request path (admin, demo upstream).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The body of every answer on the request path: the upstream's body streamed through, or bytes
/// the gateway made itself (problem documents). Concrete, so no box per request.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the upstream; the connection goes back to its pool when the body ends.
    Upstream(Answer, Option<Loan>),
    /// Made by the gateway; `None` once sent.
    Local(Option<Bytes>),
    /// One of the above, gzipped as it streams (a route's `compress`).
    Gzip(Box<super::compress::Gzip>),
}

// === impl ProxyBody ===

impl ProxyBody {
    /// A body holding `bytes`.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        ProxyBody::Local((!b.is_empty()).then_some(b))
    }

    /// The upstream's body, and the connection to release when it ends.
    pub fn upstream(inner: Answer, loan: Option<Loan>) -> Self {
        ProxyBody::Upstream(inner, loan)
    }
}

impl HttpBody for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every variant is Unpin.
        match self.get_mut() {
            ProxyBody::Gzip(g) => Pin::new(&mut **g).poll_frame(cx),
            ProxyBody::Upstream(inner, loan) => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => release(loan),
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => release(loan),
                    Poll::Ready(Some(Err(_))) => drop(loan.take()),
                    _ => {}
                }
                polled
            }
            ProxyBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(inner, _) => inner.is_end_stream(),
            ProxyBody::Local(data) => data.is_none(),
            ProxyBody::Gzip(g) => g.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(inner, _) => inner.size_hint(),
            ProxyBody::Local(data) => SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0)),
            ProxyBody::Gzip(g) => g.size_hint(),
        }
    }
}

/// The body of a client's request: hyper's for HTTP/1.1 and HTTP/2, or an HTTP/3 request
/// stream's receiving side; empty for the gateway's own requests (health checks).
pub enum ClientBody {
    /// HTTP/1.1 or HTTP/2.
    Hyper(hyper::body::Incoming),
    /// HTTP/3 (boxed: the stream's state is four times the size of the others, and every
    /// request, of any protocol, carries this enum).
    H3(Box<H3Body>),
    /// No body.
    Empty,
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientBody::Hyper(b) => b.fmt(f),
            ClientBody::H3(b) => f.debug_struct("H3Body").field("state", &b.state).finish(),
            ClientBody::Empty => f.write_str("Empty"),
        }
    }
}

/// Where an HTTP/3 request body is: in its data frames, at its trailers, or done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H3State {
    Data,
    Trailers,
    Done,
}

/// An HTTP/3 request body, read from the request stream frame by frame.
pub struct H3Body {
    stream: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
    state: H3State,
    length: Option<u64>,
    /// Whether the stream was read to its end.
    finished: bool,
}

impl Drop for H3Body {
    fn drop(&mut self) {
        // Not read to its end (a GET's stream, or a body the answer did not need): ask the
        // client to stop sending with H3_NO_ERROR, as RFC 9114 §4.1 says, rather than with the
        // transport's bare 0.
        if !self.finished {
            self.stream.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

impl H3Body {
    /// The body of a request on `stream`. `length` is its `content-length`; `expect_none` says
    /// that a request without one has no body (a GET, say), so that it is forwarded without
    /// one: HTTP/3 does not tell the end of a stream before it is read.
    pub fn new(
        stream: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
        length: Option<u64>,
        expect_none: bool,
    ) -> Self {
        let done = length == Some(0) || (length.is_none() && expect_none);
        Self {
            stream,
            state: if done { H3State::Done } else { H3State::Data },
            length,
            finished: false,
        }
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(inner) => Pin::new(inner).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
            ClientBody::H3(b) => loop {
                match b.state {
                    H3State::Data => match b.stream.poll_recv_data(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(Some(mut buf))) => {
                            use bytes::Buf as _;
                            let bytes = buf.copy_to_bytes(buf.remaining());
                            if let Some(n) = &mut b.length {
                                *n = n.saturating_sub(bytes.len() as u64);
                            }
                            return Poll::Ready(Some(Ok(Frame::data(bytes))));
                        }
                        Poll::Ready(Ok(None)) => b.state = H3State::Trailers,
                        Poll::Ready(Err(e)) => {
                            b.state = H3State::Done;
                            return Poll::Ready(Some(Err(Box::new(e))));
                        }
                    },
                    H3State::Trailers => {
                        let polled = b.stream.poll_recv_trailers(cx);
                        if polled.is_ready() {
                            b.state = H3State::Done;
                        }
                        if matches!(polled, Poll::Ready(Ok(_))) {
                            b.finished = true;
                        }
                        return match polled {
                            Poll::Pending => Poll::Pending,
                            Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                            Poll::Ready(Ok(None)) => Poll::Ready(None),
                            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
                        };
                    }
                    H3State::Done => return Poll::Ready(None),
                }
            },
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(inner) => inner.is_end_stream(),
            ClientBody::H3(b) => b.state == H3State::Done,
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(inner) => inner.size_hint(),
            ClientBody::H3(b) => match (b.state, b.length) {
                (H3State::Done, _) => SizeHint::with_exact(0),
                (_, Some(n)) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The request body went over the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyLimitExceeded {
    /// The limit in bytes.
    pub limit: u64,
}

pin_project! {
    /// Fails the stream once more than `limit` bytes have passed.
    pub struct Limited<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
        count: Option<Arc<AtomicU64>>,
    }
}

// === impl Limited ===

impl<B> Limited<B> {
    /// Wraps `inner` with a byte limit.
    pub fn new(inner: B, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
            count: None,
        }
    }

    /// A counter of the bytes that pass, shared with the caller.
    pub fn count_into(&mut self) -> Arc<AtomicU64> {
        self.count.get_or_insert_with(Default::default).clone()
    }
}

impl<B> HttpBody for Limited<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded { limit: *this.limit }))));
                    }
                    *this.remaining -= n;
                    if let Some(c) = this.count {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A response body that reports to its observer: bytes sent, and the end of the exchange.
    pub struct Observed<B> {
        #[pin]
        inner: B,
        observer: Option<Observer>,
    }
}

// === impl Observed ===

impl<B> Observed<B> {
    /// Wraps `inner`; `observer` records when the body ends or is dropped.
    pub fn new(inner: B, observer: Observer) -> Self {
        Self {
            inner,
            observer: Some(observer),
        }
    }

    /// The request's id, while its observer is there (until the body ends).
    pub fn request_id(&self) -> Option<&http::HeaderValue> {
        self.observer.as_ref().map(|o| &o.request_id)
    }
}

impl<B> HttpBody for Observed<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(obs)) = (frame.data_ref(), this.observer.as_mut()) {
                    obs.bytes_out += data.len() as u64;
                }
                // hyper stops polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    if let Some(obs) = this.observer.as_mut() {
                        obs.completed = true;
                    }
                    // Dropped where it is: `take` would copy it out first.
                    *this.observer = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(obs) = this.observer.as_mut() {
                    obs.body_error = true;
                }
                *this.observer = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(obs) = this.observer.as_mut() {
                    obs.completed = true;
                }
                *this.observer = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
