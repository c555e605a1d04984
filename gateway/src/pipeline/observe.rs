//! Observe stage: the single point where every request's outcome is recorded.
//!
//! An [`Observer`] is created when the request head arrives and travels inside the response
//! body; it records when that body ends or is dropped, whatever happened before: proxied,
//! refused by a limit, failed upstream, or abandoned by the client. It writes the request
//! metrics and one access-log event, and releases the connection's and endpoint's in-flight
//! counts.

use std::sync::Arc;

use tokio::time::Instant;

use super::route::{Route, RouteMetrics};
use crate::conn::ConnInfo;
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
    pub subject: Option<String>,
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
        method: http::Method,
        uri: http::Uri,
        unrouted: Arc<RouteMetrics>,
    ) -> Self {
        conn.state.request_started();
        Self {
            start: Instant::now(),
            conn,
            request_id,
            method,
            uri,
            host: None,
            unrouted,
            route: None,
            endpoint: None,
            subject: None,
            in_flight: None,
            status: 0,
            error: None,
            bytes_out: 0,
            completed: false,
            body_error: false,
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.in_flight.take();
        self.conn.state.request_ended();
        let metrics = self.route.as_ref().map(|r| &r.metrics).unwrap_or(&self.unrouted);
        metrics.count(MethodClass::of(&self.method), self.status);
        metrics.observe_duration(elapsed.as_secs_f64());
        let outcome = if self.body_error {
            "body_error"
        } else if self.completed
            || self.method == http::Method::HEAD
            || self.status == 204
            || self.status == 304
            || self.status == 101
        {
            "complete"
        } else {
            "client_gone"
        };
        tracing::info!(
            target: "gateway::access",
            request_id = self.request_id.to_str().unwrap_or(""),
            listener = %self.conn.listener,
            protocol = self.conn.protocol,
            peer = %self.conn.peer,
            method = %self.method,
            host = self.host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""),
            path = self.uri.path(),
            route = self.route.as_ref().map(|r| r.name.as_str()).unwrap_or("none"),
            endpoint = self.endpoint.as_ref().map(|e| e.base.as_str()).unwrap_or(""),
            subject = self.subject.as_deref().unwrap_or(""),
            status = self.status,
            error = self.error.unwrap_or(""),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            bytes_out = self.bytes_out,
            outcome,
            "request"
        );
    }
}
