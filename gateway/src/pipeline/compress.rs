//! Compression stage: a route's `compress` policy gzips answers for clients that accept it.
//!
//! Applied to the answer as it leaves, upstream or the gateway's own: only when the client's
//! `Accept-Encoding` takes gzip, the answer is not encoded already, its type is listed, it is
//! not `no-transform`, not a partial or empty answer, and (when its length is known) at least
//! `min_bytes`. The body is compressed as it streams (level 1, as nginx does by default), each
//! chunk flushed as it comes so a streamed answer is not held back; trailers pass after it.
//! `Content-Length` goes (the length changes), `Vary: accept-encoding` is added, and a strong
//! `ETag` becomes weak (the bytes differ from the upstream's).

use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use super::body::ProxyBody;
use crate::config::CompressConfig;
use crate::error::BoxError;

/// A route's compiled compression policy.
#[derive(Debug)]
pub struct Compress {
    /// What it was built from.
    pub config: CompressConfig,
    /// Answers compressed.
    compressed: Counter,
}

/// Whether a request's `Accept-Encoding` takes gzip (`gzip`, `x-gzip` or `*`, not at q=0).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q_zero = parts.any(|p| {
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            !q_zero && (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") || coding == "*")
        })
}

// === impl Compress ===

impl Compress {
    /// Compiles `config`, counting into `compressed`.
    pub fn new(config: CompressConfig, compressed: Counter) -> Compress {
        Compress { config, compressed }
    }

    /// Whether an answer with these `headers` and `status`, to a request with `method`, is one
    /// to compress.
    fn wants(&self, method: &Method, status: StatusCode, headers: &HeaderMap) -> bool {
        if method == Method::HEAD
            || !status.is_success()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::PARTIAL_CONTENT
            || headers.contains_key(header::CONTENT_ENCODING)
            || headers.contains_key(header::CONTENT_RANGE)
        {
            return false;
        }
        let no_transform = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| d.trim().eq_ignore_ascii_case("no-transform"));
        if no_transform {
            return false;
        }
        let long_enough = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_none_or(|n| n >= self.config.min_bytes);
        if !long_enough {
            return false;
        }
        let Some(essence) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        else {
            return false;
        };
        self.config.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(top) => essence.split_once('/').is_some_and(|(a, _)| a == top),
            None => *t == essence,
        })
    }

    /// The answer gzipped, when it is one to compress; else as it was.
    pub fn apply(&self, method: &Method, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        if !self.wants(method, resp.status(), resp.headers()) {
            return resp;
        }
        self.compressed.inc();
        let (mut parts, body) = resp.into_parts();
        let h = &mut parts.headers;
        h.remove(header::CONTENT_LENGTH);
        h.remove(header::ACCEPT_RANGES);
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        super::forward::add_vary(h, "accept-encoding");
        if let Some(etag) = h.get(header::ETAG).filter(|e| !e.as_bytes().starts_with(b"W/")) {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                h.insert(header::ETAG, v);
            }
        }
        Response::from_parts(parts, ProxyBody::Gzip(Box::new(Gzip::new(body))))
    }
}

/// A body gzipped as it streams.
#[derive(Debug)]
pub struct Gzip {
    inner: ProxyBody,
    /// `None` once finished.
    encoder: Option<GzEncoder<Vec<u8>>>,
    /// The inner body's trailers, sent after the last compressed bytes.
    trailers: Option<HeaderMap>,
}

// === impl Gzip ===

impl Gzip {
    fn new(inner: ProxyBody) -> Gzip {
        Gzip {
            inner,
            encoder: Some(GzEncoder::new(Vec::new(), flate2::Compression::fast())),
            trailers: None,
        }
    }
}

impl HttpBody for Gzip {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        encoder.write_all(&data)?;
                        // A sync flush: what came in goes out now (streamed answers stay live).
                        encoder.flush()?;
                        let out = std::mem::take(encoder.get_mut());
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(None) => {
                    let out = this.encoder.take().map(|e| e.finish()).transpose()?.unwrap_or_default();
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    fn policy() -> Compress {
        Compress::new(
            CompressConfig {
                types: vec!["text/*".into(), "application/json".into()],
                min_bytes: 100,
            },
            Counter::default(),
        )
    }

    fn answer(ct: &str, body: &'static str) -> Response<ProxyBody> {
        let mut r = Response::new(ProxyBody::local(Bytes::from_static(body.as_bytes())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(ct).unwrap_or(HeaderValue::from_static("x/y")),
        );
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        r
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            accepts_gzip(&m)
        };
        assert!(h("gzip, deflate, br"));
        assert!(h("br;q=1.0, GZIP;q=0.5"));
        assert!(h("*"));
        assert!(!h("gzip;q=0, br"));
        assert!(!h("br, identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn a_listed_answer_is_gzipped_and_decodes_to_itself() -> Result<(), BoxError> {
        let text = "{\"items\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30]}";
        let mut a = answer("application/json; charset=utf-8", text);
        a.headers_mut().insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        let r = policy().apply(&Method::GET, a);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(r.headers()[header::VARY], "accept-encoding");
        assert_eq!(r.headers()[header::ETAG], "W/\"v1\"");
        assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
        let gz = r.into_body().collect().await?.to_bytes();
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut out)?;
        assert_eq!(out, text);
        Ok(())
    }

    #[test]
    fn other_answers_are_left_alone() {
        let long = "x".repeat(200).leak();
        let p = policy();
        let same = |r: Response<ProxyBody>| !r.headers().contains_key(header::CONTENT_ENCODING);
        assert!(
            same(p.apply(&Method::GET, answer("image/png", long))),
            "type not listed"
        );
        assert!(
            same(p.apply(&Method::GET, answer("text/plain", "short"))),
            "below min_bytes"
        );
        assert!(same(p.apply(&Method::HEAD, answer("text/plain", long))), "HEAD");
        let mut encoded = answer("text/plain", long);
        encoded
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(p.apply(&Method::GET, encoded).headers()[header::CONTENT_ENCODING], "br");
        let mut nt = answer("text/plain", long);
        nt.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("public, no-transform"));
        assert!(same(p.apply(&Method::GET, nt)), "no-transform");
        let mut partial = answer("text/plain", long);
        *partial.status_mut() = StatusCode::PARTIAL_CONTENT;
        assert!(same(p.apply(&Method::GET, partial)), "206");
    }
}
