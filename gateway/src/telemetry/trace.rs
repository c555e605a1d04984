//! Traces: W3C trace context on every request, OpenTelemetry spans for a sampled share of them,
//! exported with OTLP (gRPC or HTTP/protobuf) when an endpoint is configured.
//!
//! - Every request gets a trace id (continued from a `traceparent` sent by a trusted proxy, else
//!   new) and the upstream receives a `traceparent` naming the gateway's span, sampled or not,
//!   so traces stay joined across hops. `tracestate` passes through from trusted peers; from
//!   anyone else both headers are replaced.
//! - Sampling is decided once per request, before any span exists: a trusted parent's sampled
//!   flag, else `sampling_ratio`. Unsampled requests cost two random numbers; only sampled
//!   ones create spans (`request`, `identity`, `decision`, `upstream`).
//! - The access log carries the trace id of every request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::config::{OtlpProtocol, TraceConfig};

/// `traceparent`.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The exporter side: present when an endpoint is configured.
#[derive(Debug)]
pub struct Tracing {
    /// What it was built from (reused across reloads while unchanged).
    pub config: TraceConfig,
    exporting: Option<(SdkTracerProvider, SdkTracer)>,
}

/// A span the gateway made; ends when dropped. Boxed: an unsampled request holds `None`, and
/// the request future, which holds these across the upstream exchange, stays smaller by the
/// span's size (288 bytes) each.
pub type SpanGuard = Box<opentelemetry_sdk::trace::Span>;

// === impl Tracing ===

impl Tracing {
    /// Builds the exporter for `config` (inside a tokio runtime: the exporters' connections run
    /// on it). Without an endpoint, or outside a runtime, nothing is exported.
    pub fn build(config: &TraceConfig) -> Result<Tracing, String> {
        let handle = tokio::runtime::Handle::try_current().ok();
        let exporting = match (&config.endpoint, handle) {
            (Some(endpoint), Some(handle)) => {
                let exporter = match config.protocol {
                    OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint.clone())
                        .with_timeout(Duration::from_secs(10))
                        .build(),
                    OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_http_client(ExportClient { handle })
                        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                        .with_timeout(Duration::from_secs(10))
                        .build(),
                }
                .map_err(|e| format!("the OTLP exporter cannot be built: {e}"))?;
                let resource = opentelemetry_sdk::Resource::builder_empty()
                    .with_service_name(config.service_name.clone())
                    .with_attributes([
                        KeyValue::new("service.instance.id", config.instance.clone()),
                        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                    ])
                    .build();
                let provider = SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build();
                let tracer = provider.tracer("gateway");
                Some((provider, tracer))
            }
            _ => None,
        };
        Ok(Tracing {
            config: config.clone(),
            exporting,
        })
    }

    /// Flushes and stops the exporter off the runtime's workers (after a reload replaced it,
    /// or at shutdown). Returns when done.
    pub async fn shutdown(self: Arc<Self>) {
        if self.exporting.is_none() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Some((provider, _)) = &self.exporting {
                let _ = provider.shutdown_with_timeout(Duration::from_secs(5));
            }
        })
        .await;
    }

    /// Starts a request's trace from its headers (`traceparent` honoured only when `trusted`).
    pub fn start(&self, headers: &http::HeaderMap, trusted: bool) -> RequestTrace {
        let parent = if trusted { parse_traceparent(headers) } else { None };
        let tracestate = if trusted {
            headers.get(&TRACESTATE).cloned()
        } else {
            None
        };
        let sampled = match &parent {
            Some(p) => p.sampled,
            None => self.config.sampling_ratio > 0.0 && fastrand::f64() < self.config.sampling_ratio,
        };
        if let (true, Some((_, tracer))) = (sampled, &self.exporting) {
            let parent_cx = match &parent {
                Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from(p.trace_id),
                    SpanId::from(p.span_id),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                )),
                None => Context::new(),
            };
            let span = tracer
                .span_builder("request")
                .with_kind(SpanKind::Server)
                .start_with_context(tracer, &parent_cx);
            let sc = span.span_context().clone();
            return RequestTrace {
                trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
                span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                sampled: true,
                tracestate,
                recording: Some((Context::new().with_span(span), tracer.clone())),
            };
        }
        RequestTrace {
            trace_id: parent.as_ref().map(|p| p.trace_id).unwrap_or_else(random_trace_id),
            span_id: random_span_id(),
            sampled,
            tracestate,
            recording: None,
        }
    }
}

// Drawn over the whole range and redrawn on zero: a range that leaves zero out is drawn with
// a modulo, which for 128 bits is a slow library division on every request.
fn random_trace_id() -> u128 {
    std::iter::repeat_with(|| fastrand::u128(..))
        .find(|&n| n != 0)
        .unwrap_or(1)
}

fn random_span_id() -> u64 {
    std::iter::repeat_with(|| fastrand::u64(..))
        .find(|&n| n != 0)
        .unwrap_or(1)
}

/// A parsed W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// Trace id.
    pub trace_id: u128,
    /// The caller's span id.
    pub span_id: u64,
    /// Sampled flag.
    pub sampled: bool,
}

/// Parses `traceparent` (version 00, or a later version read as 00); `None` when absent,
/// repeated or malformed, including all-zero ids.
pub fn parse_traceparent(headers: &http::HeaderMap) -> Option<Parent> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let v = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// One request's trace.
#[derive(Debug)]
pub struct RequestTrace {
    /// Trace id.
    pub trace_id: u128,
    /// The gateway's span id for this request.
    pub span_id: u64,
    /// Whether the trace is sampled.
    pub sampled: bool,
    tracestate: Option<HeaderValue>,
    recording: Option<(Context, SdkTracer)>,
}

/// Lowercase hex of a trace id, for logs.
#[derive(Debug, Clone, Copy)]
pub struct TraceIdHex(pub u128);

impl std::fmt::Display for TraceIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

// === impl RequestTrace ===

impl RequestTrace {
    /// A trace that records nothing (requests the pipeline never saw).
    pub fn none() -> RequestTrace {
        RequestTrace {
            trace_id: random_trace_id(),
            span_id: random_span_id(),
            sampled: false,
            tracestate: None,
            recording: None,
        }
    }

    /// Starts a child span of the request span, when sampled.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Option<SpanGuard> {
        let (cx, tracer) = self.recording.as_ref()?;
        Some(Box::new(
            tracer.span_builder(name).with_kind(kind).start_with_context(tracer, cx),
        ))
    }

    /// The trace fields for the upstream: `traceparent` naming `span` (the upstream call's
    /// span) or the request's span, and `tracestate` when it came from a trusted peer (`None`:
    /// the upstream gets none).
    pub fn upstream_fields(&self, span: Option<&SpanGuard>) -> [(&'static http::HeaderName, Option<HeaderValue>); 2] {
        let span_id = span
            .map(|s| u64::from_be_bytes(s.span_context().span_id().to_bytes()))
            .unwrap_or(self.span_id);
        [
            (&TRACEPARENT, Some(traceparent(self.trace_id, span_id, self.sampled))),
            (&TRACESTATE, self.tracestate.clone()),
        ]
    }

    /// Adds attributes to the request span.
    pub fn annotate(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some((cx, _)) = &self.recording {
            cx.span().set_attributes(attributes);
        }
    }

    /// Ends the request span with its name, final attributes and, for 5xx, an error status.
    pub fn finish(&mut self, name: String, status: u16, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some((cx, _)) = self.recording.take() {
            let span = cx.span();
            span.update_name(name);
            span.set_attributes(attributes);
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            if status >= 500 {
                span.set_status(Status::error(""));
            }
            span.end();
        }
    }
}

/// `00-<trace id>-<span id>-<flags>`, written without the formatting machinery (it is on every
/// request's path).
fn traceparent(trace_id: u128, span_id: u64, sampled: bool) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 55];
    b[..3].copy_from_slice(b"00-");
    for (i, byte) in trace_id.to_be_bytes().iter().enumerate() {
        b[3 + 2 * i] = HEX[usize::from(byte >> 4)];
        b[4 + 2 * i] = HEX[usize::from(byte & 15)];
    }
    b[35] = b'-';
    for (i, byte) in span_id.to_be_bytes().iter().enumerate() {
        b[36 + 2 * i] = HEX[usize::from(byte >> 4)];
        b[37 + 2 * i] = HEX[usize::from(byte & 15)];
    }
    b[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
    HeaderValue::from_bytes(&b).unwrap_or_else(|_| HeaderValue::from_static("00-0-0-00"))
}

/// Sets a 5xx or error status on a child span.
pub fn fail(span: &mut Option<SpanGuard>, error: &'static str) {
    if let Some(s) = span {
        s.set_attribute(KeyValue::new("error.type", error));
        s.set_status(Status::error(error));
    }
}

/// The HTTP/protobuf exporter's client: one plain HTTP/1.1 connection per export, run on the
/// gateway's runtime (the batch exporter calls from its own thread).
#[derive(Debug, Clone)]
struct ExportClient {
    handle: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        self.handle.spawn(send(request)).await?
    }
}

async fn send(request: http::Request<Bytes>) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("http") {
        return Err("only http:// OTLP endpoints are supported".into());
    }
    let host = uri.host().ok_or("no host")?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().ok_or("no authority")?.as_str().to_string();
    let exchange = async move {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let (mut parts, body) = request.into_parts();
        parts.uri = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").parse()?;
        parts
            .headers
            .insert(http::header::HOST, HeaderValue::from_str(&authority)?);
        let resp = sender
            .send_request(http::Request::from_parts(parts, Full::new(body)))
            .await?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, 1 << 20).collect().await?.to_bytes();
        Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "the OTLP endpoint did not answer within 10s")?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(tp: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in tp {
            h.append(
                &TRACEPARENT,
                HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("x")),
            );
        }
        h
    }

    #[test]
    fn traceparent_writing() {
        let v = traceparent(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true);
        assert_eq!(v, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            traceparent(1, 2, false),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
    }

    #[test]
    fn traceparent_parsing() {
        // The W3C recommendation's example.
        let p = parse_traceparent(&headers(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]));
        assert_eq!(
            p,
            Some(Parent {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                span_id: 0x00f067aa0ba902b7,
                sampled: true
            })
        );
        let unsampled = parse_traceparent(&headers(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"]));
        assert_eq!(unsampled.map(|p| p.sampled), Some(false));
        // A later version with more fields is read as version 00.
        assert!(parse_traceparent(&headers(&[
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"
        ]))
        .is_some());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
            "",
        ] {
            assert_eq!(parse_traceparent(&headers(&[bad])), None, "{bad}");
        }
        assert_eq!(
            parse_traceparent(&headers(&[
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            ])),
            None,
            "repeated"
        );
    }

    /// The trace fields set on `up` as the pipeline sets them on a request's fields.
    fn inject(rt: &RequestTrace, up: &mut http::HeaderMap) {
        let mut added = crate::pipeline::forward::Added::default();
        for (name, value) in rt.upstream_fields(None) {
            added.set(name, value);
        }
        added.take_from(up);
        added.apply(up);
    }

    #[test]
    fn unsampled_requests_still_propagate() {
        let t = Tracing::build(&TraceConfig::default()).expect("no exporter");
        let mut trusted = headers(&["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"]);
        trusted.insert(&TRACESTATE, HeaderValue::from_static("vendor=x"));
        let rt = t.start(&trusted, true);
        assert_eq!(rt.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert!(!rt.sampled && rt.child("x", SpanKind::Internal).is_none());
        let mut up = http::HeaderMap::new();
        inject(&rt, &mut up);
        let sent = parse_traceparent(&up).expect("traceparent upstream");
        assert_eq!(
            (sent.trace_id, sent.span_id, sent.sampled),
            (rt.trace_id, rt.span_id, false)
        );
        assert_ne!(sent.span_id, 0x00f067aa0ba902b7, "the gateway's own span");
        assert_eq!(up[&TRACESTATE], "vendor=x");
        // From an untrusted client: a new trace, and its tracestate is not passed on.
        let rt = t.start(&trusted, false);
        assert_ne!(rt.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        let mut up = trusted.clone();
        inject(&rt, &mut up);
        assert_eq!(parse_traceparent(&up).map(|p| p.trace_id), Some(rt.trace_id));
        assert!(up.get(&TRACESTATE).is_none());
    }
}
