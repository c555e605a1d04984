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
use crate::upstream::client::Loan;

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
    Upstream(hyper::body::Incoming, Option<Loan>),
    /// Made by the gateway; `None` once sent.
    Local(Option<Bytes>),
}

// === impl ProxyBody ===

impl ProxyBody {
    /// A body holding `bytes`.
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        let b = bytes.into();
        ProxyBody::Local((!b.is_empty()).then_some(b))
    }

    /// The upstream's body, and the connection to release when it ends.
    pub fn upstream(inner: hyper::body::Incoming, loan: Option<Loan>) -> Self {
        ProxyBody::Upstream(inner, loan)
    }
}

impl HttpBody for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both variants are Unpin.
        match self.get_mut() {
            ProxyBody::Upstream(inner, loan) => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => release(loan),
                    Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => release(loan),
                    Poll::Ready(Some(Err(_))) => drop(loan.take()),
                    _ => {}
                }
                polled.map_err(|e| Box::new(e) as BoxError)
            }
            ProxyBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(inner, _) => inner.is_end_stream(),
            ProxyBody::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(inner, _) => inner.size_hint(),
            ProxyBody::Local(data) => SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0)),
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
                    this.observer.take();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(obs) = this.observer.as_mut() {
                    obs.body_error = true;
                }
                this.observer.take();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(obs) = this.observer.as_mut() {
                    obs.completed = true;
                }
                this.observer.take();
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
