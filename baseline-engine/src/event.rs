//! Event types. Cheap to build and to move: strings the gateway already holds are shared
//! (`Arc<str>`), everything else is plain numbers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Request method, as a small closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// OPTIONS.
    Options,
    /// Anything else.
    Other,
}

// === impl Method ===

impl Method {
    /// The method named `name` (exact, upper case).
    pub fn from_name(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// How the client spoke to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2.
    Http2,
    /// HTTP/3.
    Http3,
}

/// TLS version of the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// What identity checking concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthOutcome {
    /// The route is public, or the request never reached identity checking.
    NotRequired,
    /// A bearer token verified.
    Bearer,
    /// A browser session was found.
    Session,
    /// Credentials were needed and none came (sent to sign in, or 401).
    Missing,
    /// Credentials came and were refused (bad token, revoked).
    Invalid,
    /// Authenticated, but the route's requirements (scopes, claims) were not met.
    Refused,
    /// Authenticated, but not strongly or recently enough: step-up asked for.
    StepUp,
    /// The identity provider could not be used.
    Unavailable,
}

// === impl AuthOutcome ===

impl AuthOutcome {
    /// Its name in logs and traces.
    pub fn name(self) -> &'static str {
        match self {
            AuthOutcome::NotRequired => "not_required",
            AuthOutcome::Bearer => "bearer",
            AuthOutcome::Session => "session",
            AuthOutcome::Missing => "missing",
            AuthOutcome::Invalid => "invalid",
            AuthOutcome::Refused => "refused",
            AuthOutcome::StepUp => "step_up",
            AuthOutcome::Unavailable => "unavailable",
        }
    }
}

/// The decision taken for the request, with its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded (or answered by the gateway without a refusal, e.g. 404).
    Allow,
    /// Asked to authenticate more strongly.
    StepUp {
        /// Why, as bounded codes (`acr`, `max_age`, ...).
        reasons: Vec<&'static str>,
    },
    /// Refused.
    Deny {
        /// Why, as bounded codes (`insufficient_scope`, `invalid_token`, ...).
        reasons: Vec<&'static str>,
    },
}

/// How the response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The whole response was sent.
    Complete,
    /// The client left before the response ended.
    ClientGone,
    /// The response body failed midway (upstream broke).
    BodyError,
}

/// One request, as the gateway answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEvent {
    /// When the request head arrived, Unix milliseconds.
    pub unix_ms: u64,
    /// Route name; `None` when no route matched.
    pub route: Option<Arc<str>>,
    /// [`hash_path`] of the request path (without the query); 0 when unknown.
    pub path: u64,
    /// Method.
    pub method: Method,
    /// Status answered.
    pub status: u16,
    /// Head arrival to the end of the response.
    pub total: Duration,
    /// Request sent upstream to response head received; `None` when no upstream answered.
    pub upstream: Option<Duration>,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Client protocol.
    pub protocol: Protocol,
    /// TLS version; `None` on plain listeners.
    pub tls: Option<TlsVersion>,
    /// Client address (the peer; forwarded-for is not trusted here).
    pub client: IpAddr,
    /// [`hash_user_agent`] of the `User-Agent` header; 0 when absent.
    pub user_agent: u64,
    /// Verified subject, when known.
    pub subject: Option<Arc<str>>,
    /// Browser session handle, when a session was used (not the cookie).
    pub session: Option<u64>,
    /// Identity outcome.
    pub auth: AuthOutcome,
    /// Decision and reasons.
    pub decision: Decision,
    /// Risk score the decision used, when one was consulted.
    pub risk: Option<f32>,
    /// Reason label of an answer the gateway made itself (`no_route`, `upstream_timeout`, ...).
    pub error: Option<&'static str>,
    /// How the response ended.
    pub outcome: Outcome,
}

impl Default for RequestEvent {
    /// A request about which nothing is known yet: no route, status 0, from 0.0.0.0.
    fn default() -> Self {
        RequestEvent {
            unix_ms: 0,
            route: None,
            path: 0,
            method: Method::Get,
            status: 0,
            total: Duration::ZERO,
            upstream: None,
            bytes_in: 0,
            bytes_out: 0,
            protocol: Protocol::Http1,
            tls: None,
            client: IpAddr::from([0, 0, 0, 0]),
            user_agent: 0,
            subject: None,
            session: None,
            auth: AuthOutcome::NotRequired,
            decision: Decision::Allow,
            risk: None,
            error: None,
            outcome: Outcome::Complete,
        }
    }
}

/// One monitored group of tasks over a sampling interval (tokio-metrics `TaskMonitor`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TaskSample {
    /// Tasks started in the interval.
    pub instrumented: u64,
    /// Tasks that ended in the interval.
    pub dropped: u64,
    /// Polls in the interval.
    pub polls: u64,
    /// Polls slower than the slow-poll threshold.
    pub slow_polls: u64,
    /// Mean time a poll took.
    pub mean_poll: Duration,
    /// Mean time a task waited between being woken and being polled.
    pub mean_scheduled: Duration,
    /// Times a task waited longer than the long-delay threshold (50 µs by default) to be polled.
    pub long_delays: u64,
}

/// The runtime over one sampling interval.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuntimeSample {
    /// End of the interval, Unix milliseconds.
    pub unix_ms: u64,
    /// Interval length.
    pub elapsed: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Share of the interval the workers were busy, 0..=1 (summed over workers / workers).
    pub busy_ratio: f64,
    /// Worker parks in the interval.
    pub parks: u64,
    /// Task polls in the interval.
    pub polls: u64,
    /// Mean poll time.
    pub mean_poll: Duration,
    /// Tasks in the global queue at the end.
    pub global_queue: usize,
    /// Tasks in the workers' local queues at the end.
    pub local_queue: usize,
    /// Tasks alive at the end.
    pub alive_tasks: usize,
    /// Threads in the blocking pool.
    pub blocking_threads: usize,
    /// Tasks waiting for a blocking thread.
    pub blocking_queue: usize,
    /// Times tasks yielded because their budget ran out.
    pub budget_forced_yields: u64,
    /// Connection tasks.
    pub connections: TaskSample,
    /// Request handling.
    pub requests: TaskSample,
    /// Process resident memory, bytes.
    pub resident_bytes: u64,
    /// Process CPU time (user + system) in the interval.
    pub cpu: Duration,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Events the tap dropped in the interval (channel full).
    pub tap_dropped: u64,
}

/// A stable 64-bit hash of a request path (FNV-1a, as [`hash_user_agent`]), so the engine can
/// tell paths apart without keeping them.
pub fn hash_path(path: &[u8]) -> u64 {
    hash_user_agent(path)
}

/// A stable 64-bit hash of a user agent (FNV-1a), so the engine can tell agents apart without
/// keeping the text.
pub fn hash_user_agent(ua: &[u8]) -> u64 {
    if ua.is_empty() {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ua {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_hash_is_stable_and_spreads() {
        // FNV-1a reference values.
        assert_eq!(hash_user_agent(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash_user_agent(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(hash_user_agent(b""), 0);
        assert_ne!(hash_user_agent(b"curl/8.0"), hash_user_agent(b"curl/8.1"));
    }

    #[test]
    fn methods_by_name() {
        assert_eq!(Method::from_name("GET"), Method::Get);
        assert_eq!(Method::from_name("get"), Method::Other);
        assert_eq!(Method::from_name("PROPFIND"), Method::Other);
    }
}
