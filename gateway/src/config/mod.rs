//! Config: `YAML file -> FileConfig (serde) -> validate() -> Config -> Snapshot (dynamic.rs)`.
//!
//! Parsing and validation do no I/O beyond reading the file itself; building the [`Snapshot`]
//! reads certificates and CA bundles. Every failure, at any step, is a [`ConfigError`] naming
//! file, line, column and field, and all of them are reported together.

pub mod dynamic;
pub mod file;
pub mod structure;
pub mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use dynamic::Snapshot;
pub use validate::parse_duration;

/// A position in the config file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

/// One problem with the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (as given on the command line).
    pub file: String,
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
    /// Path of the offending field, e.g. `routes[2].upstream`.
    pub field: String,
    /// What is wrong, in plain words.
    pub reason: String,
}

// === impl ConfigError ===

impl ConfigError {
    /// A problem with `field` of `file`, written at `at`.
    pub fn at(file: &str, at: Pos, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: at.line,
            column: at.column,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

// === impl ConfigErrors ===

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Client listeners (static: a change needs a restart).
    pub listeners: Vec<ListenerConfig>,
    /// Admin listener address (static).
    pub admin: SocketAddr,
    /// Limits.
    pub limits: Limits,
    /// Proxies whose forwarding headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
    /// Upstream pools.
    pub upstreams: Vec<UpstreamConfig>,
    /// Identity providers.
    pub providers: Vec<ProviderConfig>,
    /// Identity headers sent upstream.
    pub identity_headers: IdentityHeaders,
    /// The signed identity assertion, when enabled.
    pub assertion: Option<AssertionConfig>,
    /// Browser sessions.
    pub sessions: SessionConfig,
    /// Telemetry.
    pub telemetry: TelemetryConfig,
    /// The embedded baseline engine.
    pub engine: EngineConfig,
    /// Drain deadline on SIGTERM.
    pub drain_timeout: Duration,
    /// Reload behaviour.
    pub reload: ReloadConfig,
    /// Service level objectives.
    pub slos: Vec<SloConfig>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Name (metrics label).
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
    /// TLS, or plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// HTTP/3 over QUIC on the same port over UDP, when present.
    pub quic: Option<QuicConfig>,
    /// Plain listeners only: the HTTPS port every request is redirected to.
    pub redirect_to_https: Option<u16>,
}

/// QUIC settings of a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct QuicConfig {
    /// Idle timeout of a connection.
    pub idle_timeout: Duration,
    /// Concurrent bidirectional streams per connection.
    pub max_streams: u32,
    /// Receive window per stream, bytes.
    pub stream_window: u32,
    /// Receive window per connection, bytes.
    pub connection_window: u32,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections above which new clients must validate their address.
    pub retry_above: usize,
    /// Whether 0-RTT early data is accepted.
    pub early_data: bool,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            max_streams: 100,
            stream_window: 1 << 20,
            connection_window: 8 << 20,
            max_connections: 10_000,
            retry_above: 1000,
            early_data: false,
        }
    }
}

/// Listener TLS settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Certificates, first is the default.
    pub certificates: Vec<CertConfig>,
    /// Whether TLS 1.2 is accepted besides 1.3.
    pub allow_tls12: bool,
    /// Client certificates asked for, when set.
    pub client_auth: Option<ClientAuthConfig>,
}

/// Mutual TLS on a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuthConfig {
    /// CA files with their config positions.
    pub ca_files: Vec<(PathBuf, Pos)>,
    /// Whether a client without a certificate is refused at the handshake.
    pub required: bool,
    /// Field path, for errors.
    pub field: String,
}

/// A certificate and key on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct CertConfig {
    /// Chain file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// Where `cert` is written in the config.
    pub cert_at: Pos,
    /// Where `key` is written in the config.
    pub key_at: Pos,
    /// Field path, for errors.
    pub field: String,
    /// Explicit server names; empty means the certificate's DNS names.
    pub server_names: Vec<String>,
}

/// Limits applied to every connection and request.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest request target in bytes.
    pub max_uri_bytes: usize,
    /// Default largest body in bytes.
    pub max_body_bytes: u64,
    /// Time to receive a complete request head.
    pub header_timeout: Duration,
    /// Idle keep-alive time.
    pub idle_timeout: Duration,
    /// Most concurrent client connections.
    pub max_connections: usize,
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 25_000,
        }
    }
}

/// A route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Name (metrics label).
    pub name: String,
    /// Host pattern, lowercase; `None` matches any host.
    pub host: Option<String>,
    /// Path prefix (at least `/`).
    pub path_prefix: String,
    /// Methods; empty matches any.
    pub methods: Vec<http::Method>,
    /// Header conditions: name and value (`None`: present with any value).
    pub headers: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    /// Upstream pool name; `None` for a route that answers by itself.
    pub upstream: Option<String>,
    /// The answer of a route without an upstream.
    pub direct: Option<DirectAnswer>,
    /// Other pools with their share of requests, in percent.
    pub split: Vec<(String, f64)>,
    /// What a split draws on.
    pub split_by: SplitBy,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Time to response head, when it replaces the upstream's.
    pub request_timeout: Option<Duration>,
    /// Provider whose bearer tokens the route accepts.
    pub bearer: Option<String>,
    /// Provider browsers sign in with. Neither this nor `bearer`: the route is public.
    pub login: Option<String>,
    /// What the token must also satisfy.
    pub requirements: Requirements,
    /// Whether requests need a verified client certificate on their connection.
    pub client_certificate: bool,
    /// How risk decides the route's requests; `None`: not consulted.
    pub trust: Option<TrustConfig>,
    /// Whether 0-RTT early data is forwarded for safe methods.
    pub early_data: bool,
    /// What replaces the matched path prefix upstream.
    pub rewrite_prefix: Option<String>,
    /// Request header changes.
    pub request_headers: HeaderOps,
    /// Response header changes.
    pub response_headers: HeaderOps,
    /// Rate limit, when set.
    pub rate_limit: Option<RateLimitConfig>,
    /// CORS policy, when set.
    pub cors: Option<CorsConfig>,
    /// Client address rules, when set.
    pub clients: Option<ClientRules>,
    /// Compression policy, when set.
    pub compress: Option<CompressConfig>,
}

/// A route's compression policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressConfig {
    /// Content types (lowercase essence, or `family/*`).
    pub types: Vec<String>,
    /// Known lengths below this are not compressed.
    pub min_bytes: u64,
}

/// Which client addresses a route serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRules {
    /// Served (empty: any not denied).
    pub allow: Vec<ipnet::IpNet>,
    /// Refused.
    pub deny: Vec<ipnet::IpNet>,
}

// === impl ClientRules ===

impl ClientRules {
    /// Whether `ip` is served.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

/// An allowed origin of a CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// Any origin (`*`).
    Any,
    /// Exactly this origin, lowercase (`https://app.example.com`).
    Exact(String),
    /// `scheme://` followed by any subdomain of `suffix` (`https://*.example.com`).
    Subdomains {
        /// `https://` or `http://`.
        scheme: String,
        /// `.example.com`.
        suffix: String,
    },
}

/// A route's CORS policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsConfig {
    /// Allowed origins.
    pub origins: Vec<OriginPattern>,
    /// Methods a preflight may ask for.
    pub methods: Vec<http::Method>,
    /// Request headers a preflight may ask for (lowercase).
    pub headers: Vec<http::HeaderName>,
    /// Response headers exposed to scripts.
    pub expose: Vec<http::HeaderName>,
    /// Preflight cache lifetime.
    pub max_age: Duration,
    /// Whether credentials are allowed.
    pub credentials: bool,
}

/// What a route without an upstream answers.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectAnswer {
    /// A redirect to `to`, with the request's path after the matched prefix (and its query)
    /// appended when `keep_path`.
    Redirect {
        /// Target URL or path.
        to: String,
        /// 301, 302, 303, 307 or 308.
        status: http::StatusCode,
        /// Whether the request's path and query are appended.
        keep_path: bool,
    },
    /// A fixed answer.
    Respond {
        /// Status.
        status: http::StatusCode,
        /// Body.
        body: bytes::Bytes,
        /// Content type.
        content_type: http::HeaderValue,
    },
}

/// What a route's split draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitBy {
    /// Each request on its own.
    Request,
    /// The client address.
    Client,
    /// The verified subject, else the client address.
    Subject,
}

/// What a rate limit counts requests under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKeyKind {
    /// The client address.
    Client,
    /// The verified subject (else the address).
    Subject,
    /// The whole route.
    Route,
}

/// A route's rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Time for one request's cell to come back (the inverse of the rate).
    pub period: Duration,
    /// Requests at once.
    pub burst: std::num::NonZeroU32,
    /// What is counted.
    pub by: RateKeyKind,
    /// Keys tracked at most.
    pub max_keys: usize,
}

/// Header changes of a route: `remove` first, then `set`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    /// Values set, replacing any present.
    pub set: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Names removed.
    pub remove: Vec<http::HeaderName>,
}

// === impl HeaderOps ===

impl HeaderOps {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Applies the changes to `headers`.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
    }
}

/// A service level objective (for `gateway slo-rules`).
#[derive(Debug, Clone, PartialEq)]
pub struct SloConfig {
    /// Name.
    pub name: String,
    /// Routes covered.
    pub routes: Vec<String>,
    /// Rolling window, days.
    pub window_days: u32,
    /// Share of requests not answered 5xx (e.g. 0.999).
    pub availability: Option<f64>,
    /// Latency threshold in seconds (a bucket bound) and the share of requests under it.
    pub latency: Option<(f64, f64)>,
}

/// A route's adaptive trust policy.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustConfig {
    /// Decide and record, but allow.
    pub shadow: bool,
    /// Risk at or above which a step-up is asked.
    pub step_up_at: f64,
    /// Risk at or above which the request is denied.
    pub deny_at: f64,
    /// What a step-up asks for (only `acr_values` and `max_age` are used).
    pub step_up: Requirements,
    /// Answer 503 while the risk is unavailable (else decide on the last known risk).
    pub fail_closed: bool,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            shadow: false,
            step_up_at: 0.5,
            deny_at: 0.85,
            step_up: Requirements {
                max_age: Some(Duration::from_secs(300)),
                ..Default::default()
            },
            fail_closed: false,
        }
    }
}

/// The identity assertion for upstreams.
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionConfig {
    /// Header.
    pub header: http::HeaderName,
    /// `iss`.
    pub issuer: String,
    /// Lifetime.
    pub ttl: Duration,
    /// Key rotation interval.
    pub rotate_every: Duration,
}

/// Headers carrying the verified identity upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityHeaders {
    /// Subject header.
    pub subject: http::HeaderName,
    /// Claim name and header.
    pub claims: Vec<(String, http::HeaderName)>,
}

// === impl IdentityHeaders ===

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            subject: http::HeaderName::from_static("x-auth-subject"),
            claims: Vec::new(),
        }
    }
}

impl IdentityHeaders {
    /// Every header name, to strip from client requests.
    pub fn names(&self) -> impl Iterator<Item = &http::HeaderName> {
        std::iter::once(&self.subject).chain(self.claims.iter().map(|(_, h)| h))
    }
}

/// What a route requires of an authenticated caller beyond a valid token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    /// Scopes, all required.
    pub scopes: Vec<String>,
    /// Claim name and required value.
    pub claims: Vec<(String, String)>,
    /// Accepted `acr` values (empty: any).
    pub acr_values: Vec<String>,
    /// Longest age of `auth_time`.
    pub max_age: Option<Duration>,
}

/// An identity provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    /// Name.
    pub name: String,
    /// Issuer URL as configured (no trailing slash added or removed).
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Allowed algorithms.
    pub algorithms: Vec<crate::identity::jwt::Alg>,
    /// Require `typ: at+jwt`.
    pub require_at_jwt: bool,
    /// Leeway in seconds.
    pub leeway_secs: u64,
    /// Largest token.
    pub max_token_bytes: usize,
    /// Least time between forced key refreshes.
    pub min_refresh_interval: Duration,
    /// Extra CA files.
    pub ca_files: Vec<(PathBuf, Pos)>,
    /// Browser sign-in client, when enabled.
    pub login: Option<LoginClient>,
}

/// The gateway as an OpenID client of a provider.
#[derive(Clone, PartialEq)]
pub struct LoginClient {
    /// `client_id`.
    pub client_id: String,
    /// Where `client_secret` comes from.
    pub client_secret: Secret,
    /// Scopes asked for, `openid` first.
    pub scopes: Vec<String>,
    /// `post_logout_redirect_uri` for RP-initiated logout.
    pub post_logout_redirect_uri: Option<String>,
}

/// A secret written in the config or kept in a file (read when the config is applied).
#[derive(Clone, PartialEq)]
pub enum Secret {
    /// In the config.
    Inline(String),
    /// In this file (trailing whitespace dropped), named at this position.
    File(PathBuf, Pos),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(..)"),
            Secret::File(p, _) => write!(f, "File({})", p.display()),
        }
    }
}

impl fmt::Debug for LoginClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginClient")
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The embedded baseline engine (static: read at start).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Whether it runs (and consumes the tap).
    pub enabled: bool,
    /// Ticks a series learns before it is scored.
    pub warmup: u32,
    /// Consecutive anomalous ticks that make a runtime anomaly.
    pub sustained: u32,
    /// Where learned state is kept across restarts; `None`: not kept.
    pub state_file: Option<PathBuf>,
    /// How often the state is written (and once more at shutdown).
    pub save_every: Duration,
    /// Risk older than this is unavailable.
    pub stale_after: Duration,
    /// Most entities tracked (static).
    pub max_entities: usize,
    /// An entity idle this long is forgotten.
    pub entity_idle: Duration,
    /// Whether the population model is trained and used.
    pub population: bool,
    /// How much faster than the wall clock the entity clock runs.
    pub time_scale: f64,
    /// Where anomaly alerts are posted (static).
    pub alerts: EngineAlerts,
}

/// Where the engine posts its anomaly alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineAlerts {
    /// Alertmanager base URLs (no trailing slash).
    pub alertmanagers: Vec<String>,
    /// Webhook URLs.
    pub webhooks: Vec<String>,
    /// Re-send interval of firing alerts to Alertmanager.
    pub resend_every: Duration,
    /// The alerts' `instance` label.
    pub instance: String,
}

impl Default for EngineAlerts {
    fn default() -> Self {
        Self {
            alertmanagers: Vec::new(),
            webhooks: Vec::new(),
            resend_every: Duration::from_secs(60),
            instance: host_name(),
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, then `$HOSTNAME`, then `gateway`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_string())
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            warmup: 60,
            sustained: 5,
            state_file: None,
            save_every: Duration::from_secs(60),
            stale_after: Duration::from_secs(5),
            max_entities: 100_000,
            entity_idle: Duration::from_secs(3600),
            population: true,
            time_scale: 1.0,
            alerts: EngineAlerts::default(),
        }
    }
}

/// Telemetry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Request events the tap holds (static).
    pub tap_capacity: usize,
    /// Runtime sampling interval.
    pub runtime_interval: Duration,
    /// One connection and one request in this many run under a task monitor (static).
    pub task_sampling: u64,
    /// Log filter (reloadable; `RUST_LOG` wins when set).
    pub log_level: String,
    /// Log format; `None`: text unless `--log-format` says otherwise.
    pub log_format: Option<crate::telemetry::logs::Format>,
    /// Profiles captured by the gateway itself.
    pub profiles: ProfileConfig,
    /// Traces.
    pub traces: TraceConfig,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// Trace settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// OTLP endpoint (`http://host:port`); `None`: nothing is exported.
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Share of new traces sampled, 0..=1.
    pub sampling_ratio: f64,
    /// `service.name`.
    pub service_name: String,
    /// `service.instance.id`.
    pub instance: String,
}

impl Default for TraceConfig {
    fn default() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Self {
            endpoint: None,
            protocol: OtlpProtocol::Grpc,
            sampling_ratio: 0.01,
            service_name: "gateway".into(),
            instance: if host.is_empty() { "gateway".into() } else { host },
        }
    }
}

/// Where internal profile captures go.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// Directory of recent captures.
    pub dir: PathBuf,
    /// Captures kept.
    pub keep: usize,
    /// Length of one capture in seconds.
    pub seconds: u64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            dir: std::env::temp_dir().join("gateway-profiles"),
            keep: 10,
            seconds: 10,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            tap_capacity: 8192,
            runtime_interval: Duration::from_secs(1),
            task_sampling: 16,
            log_level: "info".into(),
            log_format: None,
            profiles: ProfileConfig::default(),
            traces: TraceConfig::default(),
        }
    }
}

/// Browser session settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Cookie encryption key file and where it is named; `None`: a random key per process.
    pub key_file: Option<(PathBuf, Pos)>,
    /// Session cookie name.
    pub cookie_name: String,
    /// Idle expiry.
    pub idle_timeout: Duration,
    /// Absolute expiry.
    pub absolute_timeout: Duration,
    /// Most sessions.
    pub max_sessions: usize,
    /// Sign-in callback path.
    pub callback_path: String,
    /// Sign-in start path.
    pub login_path: String,
    /// Logout path.
    pub logout_path: String,
    /// Back-channel logout path.
    pub backchannel_logout_path: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            cookie_name: "__Host-gateway-session".into(),
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            max_sessions: 100_000,
            callback_path: "/.gateway/callback".into(),
            login_path: "/.gateway/login".into(),
            logout_path: "/.gateway/logout".into(),
            backchannel_logout_path: "/.gateway/backchannel-logout".into(),
        }
    }
}

impl SessionConfig {
    /// Whether `path` is one the gateway answers itself.
    pub fn is_own_path(&self, path: &str) -> bool {
        path == self.callback_path
            || path == self.login_path
            || path == self.logout_path
            || path == self.backchannel_logout_path
    }
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each endpoint in turn.
    RoundRobin,
    /// Of two random endpoints, the one with fewer requests in flight.
    LeastInFlight,
}

/// The protocol spoken to a pool's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, pooled connections.
    Http1,
    /// HTTP/2, one multiplexed connection per endpoint.
    Http2,
}

/// An upstream pool.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Name.
    pub name: String,
    /// Canonical endpoint URLs (`scheme://authority`).
    pub endpoints: Vec<String>,
    /// Policy.
    pub balance: Balance,
    /// Protocol to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Whether endpoints get their own authority as `Host` (else the client's).
    pub host_from_endpoint: bool,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time to response head.
    pub request_timeout: Duration,
    /// Idle pooled connection lifetime.
    pub idle_timeout: Duration,
    /// Idle pooled connections per endpoint.
    pub max_idle_per_endpoint: usize,
    /// Requests in flight per endpoint at most (`usize::MAX`: no cap).
    pub max_in_flight_per_endpoint: usize,
    /// Endpoints a request may try to connect to (1 = no retry on connect failure).
    pub connect_attempts: u32,
    /// Retries of requests already sent.
    pub retry: RetryConfig,
    /// TLS to https endpoints.
    pub tls: UpstreamTls,
    /// Passive health.
    pub health: HealthConfig,
}

/// Retries of idempotent requests without a body after a failed exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Tries in all (1 = none).
    pub attempts: u32,
    /// Answer statuses retried too.
    pub statuses: Vec<http::StatusCode>,
}

/// Upstream TLS trust.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Extra CA files with their config positions.
    pub ca_files: Vec<(PathBuf, Pos)>,
    /// Whether system roots are trusted.
    pub system_roots: bool,
    /// The certificate presented to endpoints that ask for one.
    pub client_certificate: Option<CertConfig>,
}

/// Passive health settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Consecutive failures that eject.
    pub consecutive_failures: u32,
    /// Ejection length.
    pub ejection_time: Duration,
    /// Active checks, when configured.
    pub check: Option<HealthCheck>,
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Path requested (origin form).
    pub path: http::uri::PathAndQuery,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Failed checks in a row that take an endpoint out.
    pub unhealthy_after: u32,
    /// Passed checks in a row that bring it back.
    pub healthy_after: u32,
}

/// Reload settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadConfig {
    /// Watch the file.
    pub watch: bool,
    /// Poll interval.
    pub poll_interval: Duration,
}

/// Parses and validates config text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    let syntax = |e: serde_saphyr::Error| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            column,
            field: String::new(),
            reason: syntax_reason(&e),
        }])
    };
    // Structure first, so every unknown field, wrong type and missing field is reported at once.
    let tree: structure::Node = serde_saphyr::from_str(text).map_err(syntax)?;
    let mut problems = validate::Problems::new(file);
    structure::check_file(&tree, &mut problems);
    if !problems.list.is_empty() {
        let mut e = problems.list;
        e.sort_by_key(|p| (p.line, p.column));
        return Err(ConfigErrors(e));
    }
    let raw: file::FileConfig = serde_saphyr::from_str(text).map_err(syntax)?;
    validate::validate(file, raw).map_err(|mut e| {
        e.sort_by_key(|p| (p.line, p.column));
        ConfigErrors(e)
    })
}

/// Validates a config file and also reads every file it names (certificates, keys, CA
/// bundles), as starting the gateway would; binds nothing.
pub fn check(path: &Path) -> Result<Config, ConfigErrors> {
    let cfg = load(path)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::telemetry::Metrics::register(&mut registry);
    Snapshot::build(&path.display().to_string(), cfg.clone(), &metrics, None)?;
    Ok(cfg)
}

/// The parser's own message without its source snippet and trailing position.
fn syntax_reason(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    // The position is reported in our own prefix.
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 1,
            column: 1,
            field: "(file)".into(),
            reason: format!("cannot read the file: {e}"),
        }])
    })?;
    parse(&name, &text)
}

/// The JSON Schema of the config file, for editors.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(file::FileConfig)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
listeners:
  - name: https
    address: 127.0.0.1:8443
    tls:
      min_version: "1.2"
      certificates:
        - { cert: a.pem, key: a.key, server_names: [a.example.com, "*.example.com"] }
  - { name: http, address: "127.0.0.1:8080" }
admin: { address: 127.0.0.1:9901 }
limits: { max_header_bytes: 8192, max_headers: 50, header_timeout: 5s, idle_timeout: 1m }
trusted_proxies: [10.0.0.0/8, 192.168.1.1]
routes:
  - { name: api, upstream: api, match: { host: api.example.com, path_prefix: /v1, methods: [GET, POST] } }
  - { name: web, upstream: web }
upstreams:
  - { name: api, endpoints: ["http://10.0.0.1:8080", "https://api.internal"], balance: least_in_flight }
  - name: web
    endpoints: ["http://[::1]:9000"]
    health: { consecutive_failures: 3, ejection_time: 10s }
shutdown: { drain_timeout: 20s }
"#;

    #[test]
    fn valid_config_parses() {
        let c = parse("t.yaml", VALID).expect("valid");
        assert_eq!(c.listeners.len(), 2);
        assert!(c.listeners[0].tls.as_ref().is_some_and(|t| t.allow_tls12));
        assert_eq!(c.limits.header_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.routes[0].methods, vec![http::Method::GET, http::Method::POST]);
        assert_eq!(c.upstreams[0].balance, Balance::LeastInFlight);
        assert_eq!(c.upstreams[1].endpoints, vec!["http://[::1]:9000".to_string()]);
        assert_eq!(c.drain_timeout, Duration::from_secs(20));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    /// Thousands of corrupted variants of a valid file: each parses or yields positioned errors,
    /// and none panics.
    #[test]
    fn corrupted_files_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let bytes = VALID.as_bytes();
        let junk = b":-[]{}\"' \n\t#&*!|>%@`,?0";
        for _ in 0..3000 {
            let mut b = bytes.to_vec();
            for _ in 0..rng.usize(1..6) {
                let i = rng.usize(..b.len());
                match rng.u8(..3) {
                    0 => b[i] = junk[rng.usize(..junk.len())],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, junk[rng.usize(..junk.len())]),
                }
            }
            let text = String::from_utf8_lossy(&b);
            if let Err(e) = parse("t.yaml", &text) {
                assert!(!e.0.is_empty());
                assert!(e.0.iter().all(|p| p.line >= 1 && p.column >= 1 && !p.reason.is_empty()));
            }
        }
    }
}
