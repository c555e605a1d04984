//! Observe stage: the single point where every request's outcome is recorded.
//!
//! An [`Observer`] is created when the request head arrives and travels inside the response
//! body; it records when that body ends or is dropped, whatever happened before: proxied,
//! refused by a limit, failed upstream, or abandoned by the client. It writes the request
//! metrics and one access-log event, offers one [`RequestEvent`] to the tap (never waiting),
//! and releases the connection's and endpoint's in-flight counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baseline_engine::{AuthOutcome, Decision, Method, Outcome, Protocol, RequestEvent};
use tokio::time::Instant;

use super::route::{Route, RouteMetrics};
use crate::conn::ConnInfo;
use crate::telemetry::tap::Tap;
use crate::telemetry::trace::{RequestTrace, TraceIdHex};
use crate::telemetry::MethodClass;
use crate::upstream::{Endpoint, InFlight};

/// What is known about a request while it is handled.
#[derive(Debug)]
pub struct Observer {
    /// When the head arrived.
    pub start: Instant,
    /// Connection.
    pub conn: Arc<ConnInfo>,
    /// Request id.
    pub request_id: http::HeaderValue,
    /// Method.
    pub method: http::Method,
    /// Request target (only its path is logged: queries may carry secrets).
    pub uri: http::Uri,
    /// Host as sent.
    pub host: Option<http::HeaderValue>,
    /// Metrics of the unrouted bucket, used until a route matches.
    pub unrouted: Arc<RouteMetrics>,
    /// Route, when routed.
    pub route: Option<Arc<Route>>,
    /// Endpoint chosen.
    pub endpoint: Option<Arc<Endpoint>>,
    /// Verified subject (`sub`), when the route authenticated the caller.
    pub subject: Option<Arc<str>>,
    /// Browser session handle, when one was used.
    pub session: Option<u64>,
    /// Identity outcome.
    pub auth: AuthOutcome,
    /// Decision and its reasons.
    pub decision: Decision,
    /// Risk the decision used, when a trust policy consulted it.
    pub risk: Option<f32>,
    /// In shadow mode, the decision that would have been taken.
    pub shadow: Option<&'static str>,
    /// Time from sending upstream to the response head.
    pub upstream: Option<Duration>,
    /// Request body bytes read, when the request has a body.
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// Hash of the user agent.
    pub user_agent: u64,
    /// Unix milliseconds at the head's arrival.
    pub unix_ms: u64,
    /// Where the event goes.
    pub tap: Arc<Tap>,
    /// The request's trace.
    pub trace: RequestTrace,
    /// Holds the endpoint's in-flight count.
    pub in_flight: Option<InFlight>,
    /// Response status.
    pub status: u16,
    /// Reason label of a gateway-made error answer.
    pub error: Option<&'static str>,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// The body reached its end.
    pub completed: bool,
    /// The body failed midway.
    pub body_error: bool,
}

// === impl Observer ===

impl Observer {
    /// Starts observing a request.
    pub fn new(
        conn: Arc<ConnInfo>,
        request_id: http::HeaderValue,
        req: &http::Request<crate::pipeline::body::ClientBody>,
        unrouted: Arc<RouteMetrics>,
        tap: Arc<Tap>,
        trace: RequestTrace,
    ) -> Self {
        conn.state.request_started();
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .map(|v| baseline_engine::hash_user_agent(v.as_bytes()))
            .unwrap_or(0);
        let start = Instant::now();
        let unix_ms = crate::unix_ms_at(start);
        let method = req.method().clone();
        let uri = req.uri().clone();
        Self {
            start,
            conn,
            request_id,
            method,
            uri,
            host: None,
            unrouted,
            route: None,
            endpoint: None,
            subject: None,
            session: None,
            auth: AuthOutcome::NotRequired,
            decision: Decision::Allow,
            risk: None,
            shadow: None,
            upstream: None,
            bytes_in: None,
            user_agent,
            unix_ms,
            tap,
            trace,
            in_flight: None,
            status: 0,
            error: None,
            bytes_out: 0,
            completed: false,
            body_error: false,
        }
    }
}

impl Observer {
    /// Writes the access line.
    fn access(&self, elapsed: std::time::Duration, outcome: Outcome) {
        let (decision, reasons): (&str, &[&'static str]) = match &self.decision {
            Decision::Allow => ("allow", &[]),
            Decision::StepUp { reasons } => ("step_up", reasons),
            Decision::Deny { reasons } => ("deny", reasons),
        };
        crate::telemetry::access::log(&crate::telemetry::access::Entry {
            request_id: self.request_id.to_str().unwrap_or(""),
            trace_id: &TraceIdHex(self.trace.trace_id).to_string(),
            listener: &self.conn.listener,
            protocol: self.conn.protocol,
            peer: self.conn.peer,
            method: self.method.as_str(),
            host: self.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
            path: self.uri.path(),
            route: self.route.as_ref().map(|r| &*r.name).unwrap_or("none"),
            endpoint: self.endpoint.as_ref().map(|e| e.base.as_str()).unwrap_or(""),
            subject: self.subject.as_deref().unwrap_or(""),
            client_cert: self.conn.client_cert.as_ref().map_or("", |c| c.subject.as_str()),
            auth: self.auth.name(),
            decision,
            reasons,
            risk: &self.risk.map(|r| format!("{r:.2}")).unwrap_or_default(),
            shadow: self.shadow.unwrap_or(""),
            status: self.status,
            error: self.error.unwrap_or(""),
            duration_ms: elapsed.as_secs_f64() * 1e3,
            upstream_ms: self.upstream.map(|u| u.as_secs_f64() * 1e3),
            bytes_out: self.bytes_out,
            outcome: match outcome {
                Outcome::Complete => "complete",
                Outcome::ClientGone => "client_gone",
                Outcome::BodyError => "body_error",
            },
        });
    }

    /// Ends the request span with what is known at the end (sampled requests only).
    fn finish_span(&mut self, outcome: Outcome) {
        use opentelemetry::KeyValue;
        let route = self.route.as_ref().map(|r| r.name.to_string());
        let name = format!("{} {}", self.method, route.as_deref().unwrap_or("unrouted"));
        let mut attrs = vec![
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("url.path", self.uri.path().to_string()),
            KeyValue::new("client.address", self.conn.peer.ip().to_string()),
            KeyValue::new("client.port", i64::from(self.conn.peer.port())),
            KeyValue::new("network.protocol.name", "http"),
            KeyValue::new("gateway.listener", self.conn.listener.to_string()),
            KeyValue::new("gateway.request_id", self.request_id.to_str().unwrap_or("").to_string()),
            KeyValue::new("gateway.auth", self.auth.name()),
            KeyValue::new("gateway.outcome", format!("{outcome:?}")),
            KeyValue::new("http.response.body.size", self.bytes_out as i64),
        ];
        if let Some(r) = route {
            attrs.push(KeyValue::new("http.route", r));
        }
        if let Some(h) = self.host.as_ref().and_then(|h| h.to_str().ok()) {
            attrs.push(KeyValue::new("server.address", h.to_string()));
        }
        if let Some(s) = &self.subject {
            attrs.push(KeyValue::new("enduser.id", s.to_string()));
        }
        if let Some(c) = &self.conn.client_cert {
            attrs.push(KeyValue::new("tls.client.subject", c.subject.clone()));
            attrs.push(KeyValue::new("tls.client.hash.sha256", c.sha256.clone()));
        }
        let (decision, reasons) = match &self.decision {
            Decision::Allow => ("allow", String::new()),
            Decision::StepUp { reasons } => ("step_up", reasons.join(",")),
            Decision::Deny { reasons } => ("deny", reasons.join(",")),
        };
        attrs.push(KeyValue::new("gateway.decision", decision));
        attrs.push(KeyValue::new("gateway.reasons", reasons));
        if let Some(r) = self.risk {
            attrs.push(KeyValue::new("gateway.risk", f64::from(r)));
        }
        if let Some(s) = self.shadow {
            attrs.push(KeyValue::new("gateway.shadow_decision", s));
        }
        if let Some(e) = self.error {
            attrs.push(KeyValue::new("error.type", e));
        }
        self.trace.finish(name, self.status, attrs);
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let end = Instant::now();
        let elapsed = end.saturating_duration_since(self.start);
        self.in_flight.take();
        self.conn.state.request_ended(end);
        let metrics = self.route.as_ref().map(|r| &r.metrics).unwrap_or(&self.unrouted);
        metrics.count(MethodClass::of(&self.method), self.status);
        metrics.observe_duration(elapsed.as_secs_f64());
        let outcome = if self.body_error {
            Outcome::BodyError
        } else if self.completed
            || self.method == http::Method::HEAD
            || self.status == 204
            || self.status == 304
            || self.status == 101
        {
            Outcome::Complete
        } else {
            Outcome::ClientGone
        };
        if crate::telemetry::access::enabled() {
            self.access(elapsed, outcome);
        }
        if self.trace.sampled {
            self.finish_span(outcome);
        }
        let event = RequestEvent {
            unix_ms: self.unix_ms,
            route: self.route.as_ref().map(|r| r.name.clone()),
            path: baseline_engine::hash_path(self.uri.path().as_bytes()),
            method: Method::from_name(self.method.as_str()),
            status: self.status,
            total: elapsed,
            upstream: self.upstream,
            bytes_in: self.bytes_in.as_ref().map(|b| b.load(Ordering::Relaxed)).unwrap_or(0),
            bytes_out: self.bytes_out,
            protocol: match self.conn.protocol {
                "h2" => Protocol::Http2,
                "h3" => Protocol::Http3,
                _ => Protocol::Http1,
            },
            tls: self.conn.tls_version,
            client: self.conn.peer.ip(),
            user_agent: self.user_agent,
            subject: self.subject.take(),
            session: self.session,
            auth: self.auth,
            decision: std::mem::replace(&mut self.decision, Decision::Allow),
            risk: self.risk,
            error: self.error,
            outcome,
        };
        self.tap.send(event);
    }
}
