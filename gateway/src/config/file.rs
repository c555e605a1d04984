//! The config file as written: serde types that mirror the YAML, unknown fields rejected.
//!
//! Every value that validation may complain about is wrapped in [`Spanned`] so the error can
//! name its line and column. Nothing here interprets a value; `validate.rs` does that.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A string with its position in the file.
pub type Str = Spanned<String>;

/// The whole config file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where clients connect (HTTPS or plain HTTP). Needs a restart to change.
    pub listeners: Vec<FileListener>,
    /// The admin listener: health, readiness and metrics.
    #[serde(default)]
    pub admin: Option<FileAdmin>,
    /// Connection and request limits shared by every listener.
    #[serde(default)]
    pub limits: Option<FileLimits>,
    /// Addresses (CIDR) of proxies whose forwarding headers are trusted.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<Str>,
    /// Routes, matched by host, longest path prefix, then method.
    #[serde(default)]
    pub routes: Vec<FileRoute>,
    /// Upstream pools that routes forward to.
    #[serde(default)]
    pub upstreams: Vec<FileUpstream>,
    /// Identity providers that routes may require tokens from.
    #[serde(default)]
    pub identity: Option<FileIdentity>,
    /// The embedded baseline engine.
    #[serde(default)]
    pub engine: Option<FileEngine>,
    /// Telemetry: the tap to the baseline engine and runtime sampling.
    #[serde(default)]
    pub telemetry: Option<FileTelemetry>,
    /// Shutdown behaviour.
    #[serde(default)]
    pub shutdown: Option<FileShutdown>,
    /// Config reload behaviour.
    #[serde(default)]
    pub reload: Option<FileReload>,
    /// Service level objectives, for `gateway slo-rules` (Prometheus recording and alerting
    /// rules); the gateway itself does not act on them.
    #[serde(default)]
    pub slos: Vec<FileSlo>,
}

/// A service level objective over one or more routes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSlo {
    /// Name (the `slo` label of the generated series and alerts).
    #[schemars(with = "String")]
    pub name: Str,
    /// Routes it covers (names from `routes`).
    #[schemars(with = "Vec<String>")]
    pub routes: Vec<Str>,
    /// Rolling window: `28d` or `30d` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub window: Option<Str>,
    /// Percent of requests not answered 5xx, e.g. 99.9.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub availability: Option<Spanned<f64>>,
    /// Percent of requests answered within a threshold.
    #[serde(default)]
    pub latency: Option<FileLatencySlo>,
}

/// A latency objective.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLatencySlo {
    /// The threshold, one of the duration histogram's bucket bounds (e.g. `256ms`, `512ms`).
    #[schemars(with = "String")]
    pub threshold: Str,
    /// Percent of requests under it, e.g. 99.
    #[schemars(with = "f64")]
    pub objective: Spanned<f64>,
}

/// One listening socket.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// Name used in metrics and logs.
    #[schemars(with = "String")]
    pub name: Str,
    /// `IP:port` to bind.
    #[schemars(with = "String")]
    pub address: Str,
    /// TLS settings; absent means plain HTTP.
    #[serde(default)]
    pub tls: Option<FileTls>,
    /// HTTP/3 over QUIC on the same port number over UDP, with the same certificates (needs
    /// `tls`); absent means no QUIC. Needs a restart to turn on or off.
    #[serde(default)]
    pub quic: Option<FileQuic>,
    /// On a plain listener: answer every request with a 308 redirect to the same URL over
    /// HTTPS on this port (e.g. 443, left out of the URL), unless a trusted proxy says the
    /// request came in over HTTPS (`X-Forwarded-Proto: https`).
    #[serde(default)]
    #[schemars(with = "Option<u16>")]
    pub redirect_to_https: Option<Spanned<u64>>,
}

/// QUIC settings of a listener.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileQuic {
    /// A connection with no traffic for this long is closed, e.g. `30s` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Str>,
    /// Requests (bidirectional streams) a client may have open at once on one connection
    /// (default 100); more wait for a stream to finish.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_streams: Option<Spanned<u64>>,
    /// Bytes a client may send on one stream before the gateway reads them (default 1048576).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub stream_window: Option<Spanned<u64>>,
    /// Bytes a client may send on one connection before the gateway reads them (default
    /// 8388608).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub connection_window: Option<Spanned<u64>>,
    /// QUIC connections open at once on this listener (default 10000); beyond, new ones are
    /// refused.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_connections: Option<Spanned<u64>>,
    /// Above this many open connections, a new client must first prove its address with a
    /// Retry round trip (default 1000; 0: always).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub retry_above: Option<Spanned<u64>>,
    /// Accept 0-RTT early data (default false). Early requests are forwarded only for safe
    /// methods on routes with `early_data: true`, with `Early-Data: 1`; others get 425.
    #[serde(default)]
    pub early_data: Option<bool>,
}

/// TLS for a listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// Certificates; the first is the default when SNI matches none.
    pub certificates: Vec<FileCertificate>,
    /// Lowest TLS version accepted: "1.3" (default) or "1.2".
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub min_version: Option<Str>,
    /// Mutual TLS: ask clients for a certificate signed by one of these CAs; absent = none is
    /// asked for.
    #[serde(default)]
    pub client_auth: Option<FileClientAuth>,
}

/// Client certificates a listener asks for.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileClientAuth {
    /// PEM files with the CA certificates that sign client certificates.
    #[schemars(with = "Vec<String>")]
    pub ca_files: Vec<Str>,
    /// Refuse the handshake of a client without a certificate (default true). With false, such
    /// a client connects, and routes with `auth.client_certificate` refuse its requests. A
    /// certificate presented is always verified.
    #[serde(default)]
    pub required: Option<bool>,
}

/// A certificate chain and its private key, both PEM files, that the gateway presents as a
/// client.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileClientCertificate {
    /// PEM file with the certificate chain, leaf first.
    #[schemars(with = "String")]
    pub cert: Str,
    /// PEM file with the private key.
    #[schemars(with = "String")]
    pub key: Str,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCertificate {
    /// PEM file with the certificate chain, leaf first.
    #[schemars(with = "String")]
    pub cert: Str,
    /// PEM file with the private key.
    #[schemars(with = "String")]
    pub key: Str,
    /// Server names (exact or `*.example.com`) this certificate answers for.
    /// Defaults to the DNS names in the certificate.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub server_names: Vec<Str>,
}

/// The admin listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// `IP:port` to bind; default `127.0.0.1:9901`.
    #[schemars(with = "String")]
    pub address: Str,
}

/// Connection and request limits.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest request head (request line plus headers) in bytes; larger gets 431.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_header_bytes: Option<Spanned<u64>>,
    /// Most header fields in one request; more gets 431.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_headers: Option<Spanned<u64>>,
    /// Longest request target (path and query) in bytes; longer gets 414.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_uri_bytes: Option<Spanned<u64>>,
    /// Default largest request body in bytes (routes may override); larger gets 413.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Time a client has to send a complete request head, e.g. `10s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub header_timeout: Option<Str>,
    /// Time an idle keep-alive connection is kept open, e.g. `60s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Str>,
    /// Most client connections open at once across all listeners; beyond it new
    /// connections wait in the accept queue.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_connections: Option<Spanned<u64>>,
}

/// A route: which requests it takes and where they go.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Name used in metrics and logs.
    #[schemars(with = "String")]
    pub name: Str,
    /// What the route matches; empty matches everything.
    #[serde(default, rename = "match")]
    pub matches: Option<FileMatch>,
    /// Name of the upstream pool. A route has an upstream, or answers by itself with
    /// `redirect` or `respond`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub upstream: Option<Str>,
    /// Answer with a redirect instead of proxying (a moved site, a retired path).
    #[serde(default)]
    pub redirect: Option<FileRedirect>,
    /// Answer with a fixed status and body instead of proxying (maintenance, a fixed file).
    #[serde(default)]
    pub respond: Option<FileRespond>,
    /// Canary and gradual rollouts: shares of the route's requests sent to other pools, each
    /// request drawn on its own; what is left goes to `upstream`.
    #[serde(default)]
    pub split: Vec<FileSplit>,
    /// What a split draws on: `request` (default: each request on its own), `client` (the
    /// client address: one client stays on one pool) or `subject` (the verified caller, else
    /// the client address).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub split_by: Option<Str>,
    /// Largest request body for this route in bytes.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_body_bytes: Option<Spanned<u64>>,
    /// Time from sending a request to the response head on this route, e.g. `5m` for a slow
    /// export; replaces its upstream's `request_timeout` (504 beyond).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub request_timeout: Option<Str>,
    /// Authentication the route requires; absent means public.
    #[serde(default)]
    pub auth: Option<FileRouteAuth>,
    /// How the baseline engine's risk decides this route's requests; absent: risk is not
    /// consulted.
    #[serde(default)]
    pub trust: Option<FileTrust>,
    /// Forward HTTP/3 0-RTT early data for safe methods (GET, HEAD, OPTIONS) with
    /// `Early-Data: 1` (RFC 8470), for upstreams that can tell a replay (default false: 425).
    #[serde(default)]
    pub early_data: Option<bool>,
    /// Replaces the part of the path that `match.path_prefix` matched before forwarding, e.g.
    /// `/` (so that `/api/users` under the prefix `/api` goes upstream as `/users`); the query
    /// is kept.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub rewrite_prefix: Option<Str>,
    /// Request headers to change before forwarding (after identity and before the gateway's
    /// own forwarding headers, which cannot be changed here).
    #[serde(default)]
    pub request_headers: Option<FileHeaderOps>,
    /// Response headers to change on every answer of this route, the gateway's own included
    /// (e.g. `strict-transport-security`).
    #[serde(default)]
    pub response_headers: Option<FileHeaderOps>,
    /// Caps the route's requests (429 with `Retry-After` beyond); absent = no cap.
    #[serde(default)]
    pub rate_limit: Option<FileRateLimit>,
    /// Cross-origin requests from browsers: preflights answered by the gateway (before any
    /// authentication), CORS headers on every answer to an allowed origin; absent = the
    /// upstream's own business.
    #[serde(default)]
    pub cors: Option<FileCors>,
    /// Client addresses the route serves (after any trusted proxy, the address it saw); others
    /// get 403. Absent = any.
    #[serde(default)]
    pub clients: Option<FileClients>,
    /// Gzip answers for clients that accept it; absent = answers pass as they are.
    #[serde(default)]
    pub compress: Option<FileCompress>,
}

/// A route's compression policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCompress {
    /// Content types compressed: exact (`application/json`) or a whole family (`text/*`).
    /// Default: text/html, text/plain, text/css, text/javascript, application/javascript,
    /// application/json, application/xml, image/svg+xml.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub types: Vec<Str>,
    /// Answers with a known length below this are sent as they are (default 1024).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub min_bytes: Option<Spanned<u64>>,
}

/// Client address rules of a route: `deny` first, then, when `allow` is given, only addresses
/// in it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileClients {
    /// Addresses or CIDR blocks served, e.g. `10.0.0.0/8`; absent or empty = any not denied.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow: Vec<Str>,
    /// Addresses or CIDR blocks refused.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Vec<Str>,
}

/// A route's CORS policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCors {
    /// Allowed origins: `https://app.example.com`, `https://*.example.com` (any subdomain), or
    /// `*` (any origin; not with `allow_credentials`).
    #[schemars(with = "Vec<String>")]
    pub allow_origins: Vec<Str>,
    /// Methods a preflight may ask for (default: the route's `match.methods`, else GET, HEAD,
    /// POST, PUT, PATCH, DELETE).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow_methods: Vec<Str>,
    /// Request headers a preflight may ask for (default: `authorization`, `content-type`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow_headers: Vec<Str>,
    /// Response headers scripts may read (default: `x-request-id`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub expose_headers: Vec<Str>,
    /// How long browsers may cache a preflight answer, e.g. `10m` (default 5m).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Str>,
    /// Let scripts send cookies and read answers to credentialed requests (default false).
    #[serde(default)]
    pub allow_credentials: Option<bool>,
}

/// A redirect a route answers with.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRedirect {
    /// Where to: an absolute URL (`https://new.example.com`) or a path (`/v2`).
    #[schemars(with = "String")]
    pub to: Str,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub status: Option<Spanned<u64>>,
    /// Append the request's path (after the matched prefix) and query to `to` (default true).
    #[serde(default)]
    pub keep_path: Option<bool>,
}

/// A fixed answer of a route.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRespond {
    /// Status, 200 to 599.
    #[schemars(with = "u64")]
    pub status: Spanned<u64>,
    /// Body (default empty).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub body: Option<Str>,
    /// Content type of the body (default `text/plain; charset=utf-8`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub content_type: Option<Str>,
}

/// A share of a route's requests for another pool.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSplit {
    /// Name of the upstream pool.
    #[schemars(with = "String")]
    pub upstream: Str,
    /// Share of the route's requests, in percent (e.g. `5` or `0.5`); the shares of a route add
    /// up to 100 at most.
    #[schemars(with = "f64")]
    pub percent: Spanned<f64>,
}

/// A route's rate limit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    /// Sustained rate: `N/s`, `N/m` or `N/h`, e.g. `100/s`.
    #[schemars(with = "String")]
    pub rate: Str,
    /// Requests that may come at once before the rate applies (default: N).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub burst: Option<Spanned<u64>>,
    /// What is counted: `client` (the address; default), `subject` (the verified caller, or the
    /// address of callers without one), or `route` (all requests together).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub by: Option<Str>,
    /// Most clients or subjects tracked at once (default 100000); beyond, idle ones are
    /// forgotten, and new ones are refused while none is idle.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_keys: Option<Spanned<u64>>,
}

/// Header changes: removals first, then the values set.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderOps {
    /// Headers to set, replacing any the message carries: name → value.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub set: std::collections::BTreeMap<String, Str>,
    /// Headers to remove.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub remove: Vec<Str>,
}

/// A route's adaptive trust policy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTrust {
    /// `enforce` (default) or `shadow`: decide and record every decision, but allow.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub mode: Option<Str>,
    /// Risk (0 to 1) at or above which the caller must authenticate again, more strongly
    /// (default 0.5). On a route without `auth` nobody can step up, and only `deny_at` applies.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub step_up_at: Option<Spanned<f64>>,
    /// Risk at or above which the request is refused with 403 and the caller's session (or
    /// the subject's tokens) revoked until they authenticate again (default 0.85).
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub deny_at: Option<Spanned<f64>>,
    /// What a step-up asks for (default: authentication within the last 5 minutes).
    #[serde(default)]
    pub step_up: Option<FileStepUp>,
    /// When the engine's risk is unavailable (engine off, or its view older than
    /// `engine.stale_after`): `last_known` (default; decide on the last published risk) or
    /// `fail_closed` (answer 503).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_unavailable: Option<Str>,
}

/// What a risk-driven step-up asks for.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileStepUp {
    /// Accepted authentication context classes (`acr`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub acr_values: Vec<Str>,
    /// Longest time since the user authenticated, e.g. `5m`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Str>,
}

/// A route's authentication requirement.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRouteAuth {
    /// Name of the identity provider whose bearer tokens (`Authorization: Bearer`) the route
    /// accepts.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub bearer: Option<Str>,
    /// Name of the identity provider browsers sign in with (its `login` client): a request
    /// without a session is sent to sign in, and the session cookie authenticates afterwards.
    /// With `bearer` too, a request carrying a bearer token is checked as one.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub login: Option<Str>,
    /// Scopes the token must carry (all of them; from `scope` or `scp`); else 403.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub scopes: Vec<Str>,
    /// Claims the token must carry: the claim equals the value, or is a list containing it
    /// (e.g. `groups: admins`); else 403.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub claims: std::collections::BTreeMap<String, Str>,
    /// Accepted authentication context classes (`acr`); otherwise the answer is an RFC 9470
    /// step-up challenge.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub acr_values: Vec<Str>,
    /// Longest time since the user authenticated (`auth_time`), e.g. `5m`; older gets a step-up
    /// challenge.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Str>,
    /// Require a verified client certificate on the connection (a listener's `tls.client_auth`);
    /// else 403. Independent of `bearer` and `login`.
    #[serde(default)]
    pub client_certificate: Option<bool>,
}

/// Identity settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileIdentity {
    /// OpenID providers.
    #[serde(default)]
    pub providers: Vec<FileProvider>,
    /// Headers that carry the verified identity to upstreams. Clients cannot send them: they
    /// are removed from every request before the gateway sets them.
    #[serde(default)]
    pub upstream_headers: Option<FileUpstreamHeaders>,
    /// A signed identity assertion (JWT) sent to upstreams on authenticated routes.
    #[serde(default)]
    pub assertion: Option<FileAssertion>,
    /// Browser sessions (for routes with `auth.login`).
    #[serde(default)]
    pub sessions: Option<FileSessions>,
}

/// Browser sessions: stored by the gateway, named by an encrypted cookie.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSessions {
    /// File holding the cookie encryption key: 32 random bytes, base64 (e.g. `openssl rand
    /// -base64 32`). Without it a random key is made at start, and sessions end with the process.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub key_file: Option<Str>,
    /// Session cookie name (default `__Host-gateway-session`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub cookie_name: Option<Str>,
    /// A session unused this long ends, e.g. `30m` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Str>,
    /// A session ends this long after sign-in whatever its use, e.g. `12h` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub absolute_timeout: Option<Str>,
    /// Most sessions kept (default 100000); beyond it the least recently used one ends.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_sessions: Option<Spanned<u64>>,
    /// Path of the sign-in callback on every host (default `/.gateway/callback`); the
    /// provider must know `https://<host><path>` as a redirect URI.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub callback_path: Option<Str>,
    /// Path that starts a sign-in, `?return_to=/path` (default `/.gateway/login`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub login_path: Option<Str>,
    /// Path that ends the session, `?return_to=/path` (default `/.gateway/logout`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub logout_path: Option<Str>,
    /// Path receiving OpenID back-channel logout tokens (default
    /// `/.gateway/backchannel-logout`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backchannel_logout_path: Option<Str>,
}

/// The gateway as an OpenID client of a provider, for browser sign-in.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLogin {
    /// Client id registered at the provider.
    #[schemars(with = "String")]
    pub client_id: Str,
    /// Client secret (`client_secret_basic`); or use `client_secret_file`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub client_secret: Option<Str>,
    /// File holding the client secret.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub client_secret_file: Option<Str>,
    /// Scopes asked for (default `[openid]`; `openid` is always asked).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub scopes: Vec<Str>,
    /// Where the provider sends the browser after a logout at the provider (must be registered
    /// there); absent, the provider shows its own page.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub post_logout_redirect_uri: Option<Str>,
}

/// The identity assertion for upstreams.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAssertion {
    /// Header carrying it (default `x-gateway-assertion`); removed from client requests.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub header: Option<Str>,
    /// Its `iss` (default `gateway`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub issuer: Option<Str>,
    /// Lifetime, e.g. `60s` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ttl: Option<Str>,
    /// Signing key rotation, e.g. `24h` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub rotate_every: Option<Str>,
}

/// Identity headers sent upstream.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamHeaders {
    /// Header for the verified subject (`sub`); default `x-auth-subject`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub subject: Option<Str>,
    /// Claims to send: claim name → header name (lists are joined with `,`).
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub claims: std::collections::BTreeMap<String, Str>,
}

/// An OpenID provider, found by discovery from its issuer URL.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileProvider {
    /// Name routes refer to.
    #[schemars(with = "String")]
    pub name: Str,
    /// Issuer URL; `/.well-known/openid-configuration` is read from it, and tokens' `iss` must
    /// equal it.
    #[schemars(with = "String")]
    pub issuer: Str,
    /// Accepted audiences (a token's `aud` must contain one).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub audiences: Vec<Str>,
    /// Allowed signature algorithms (default RS256, ES256, EdDSA).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub algorithms: Vec<Str>,
    /// Require `typ: at+jwt` access tokens (RFC 9068; default false).
    #[serde(default)]
    pub require_at_jwt: Option<bool>,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, e.g. `30s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub leeway: Option<Str>,
    /// Largest accepted token in bytes (default 8192).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_token_bytes: Option<Spanned<u64>>,
    /// Least time between key refreshes forced by unknown key ids, e.g. `10s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub min_refresh_interval: Option<Str>,
    /// PEM files with extra CA certificates for an `https://` issuer.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub ca_files: Vec<Str>,
    /// Browser sign-in through this provider (authorization code flow with PKCE).
    #[serde(default)]
    pub login: Option<FileLogin>,
}

/// Request matching.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    /// Host, exact (`api.example.com`) or wildcard (`*.example.com`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host: Option<Str>,
    /// Path prefix, on segment boundaries; the longest matching prefix wins.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub path_prefix: Option<Str>,
    /// Methods; absent matches any.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub methods: Vec<Str>,
    /// Request headers that must be present with exactly this value (`"*"`: with any value),
    /// e.g. `{ x-canary: "1" }`. At the same path prefix, routes with header conditions are
    /// tried before routes without.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub headers: std::collections::BTreeMap<String, Str>,
}

/// An upstream pool.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    /// Name routes refer to.
    #[schemars(with = "String")]
    pub name: Str,
    /// Endpoint URLs, `http://host:port` or `https://host:port`.
    #[schemars(with = "Vec<String>")]
    pub endpoints: Vec<Str>,
    /// `round_robin` (default) or `least_in_flight` (power of two choices).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub balance: Option<Str>,
    /// `http1` (default) or `h2`: HTTP/2 to every endpoint (over TLS with ALPN for `https://`,
    /// with prior knowledge for `http://`), one multiplexed connection per endpoint; for gRPC.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub protocol: Option<Str>,
    /// The `Host` endpoints get: `client` (default: as the client sent it; the original is
    /// also in `X-Forwarded-Host`) or `endpoint` (the endpoint's own `host:port` as written,
    /// for upstreams that serve several sites by name, such as hosted services).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host: Option<Str>,
    /// Time to establish a connection, e.g. `2s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub connect_timeout: Option<Str>,
    /// Time from sending the request to receiving the response head, e.g. `30s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub request_timeout: Option<Str>,
    /// Time an idle pooled connection is kept, e.g. `90s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Str>,
    /// Most idle pooled connections per endpoint.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_idle_per_endpoint: Option<Spanned<u64>>,
    /// Most requests in flight to one endpoint (absent = no cap). A request goes to another
    /// endpoint with a place left; when none has one, it is answered 503 at once
    /// (`upstream-overloaded`, `Retry-After: 1`) instead of piling up on a saturated upstream.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_in_flight_per_endpoint: Option<Spanned<u64>>,
    /// Endpoints a request may try to connect to before it is answered 502 (default 3; 1 = no
    /// retry). A request moves to another endpoint only when no connection could be made, so
    /// nothing of it has been sent and any method may move.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub connect_attempts: Option<Spanned<u64>>,
    /// Sending a request again after its exchange failed: idempotent requests without a body
    /// only.
    #[serde(default)]
    pub retry: Option<FileRetry>,
    /// TLS to `https://` endpoints.
    #[serde(default)]
    pub tls: Option<FileUpstreamTls>,
    /// Passive health checking.
    #[serde(default)]
    pub health: Option<FileHealth>,
}

/// Retries of requests already sent. Only requests that can be sent again as they were are
/// retried: an idempotent method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), no body, no upgrade.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRetry {
    /// Tries in all for such a request (default 2; 1 = never again). A try is retried when its
    /// connection closed or broke before a response head came (a pooled connection the
    /// upstream closed as the request went out, a crashed endpoint), or when the answer's
    /// status is listed in `statuses`. Each try after the first goes to another endpoint when
    /// one is usable, on a new connection, all within the pool's `request_timeout`.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub attempts: Option<Spanned<u64>>,
    /// 5xx statuses that are retried too, e.g. `[502, 503]` (default none); the last try's
    /// answer is passed on as it is.
    #[serde(default)]
    #[schemars(with = "Vec<u64>")]
    pub statuses: Vec<Spanned<u64>>,
}

/// TLS towards an upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// PEM files with extra trusted CA certificates.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub ca_files: Vec<Str>,
    /// Trust the system's root certificates too (default true).
    #[serde(default)]
    pub system_roots: Option<bool>,
    /// Mutual TLS: the certificate the gateway presents to endpoints that ask for one.
    #[serde(default)]
    pub client_certificate: Option<FileClientCertificate>,
}

/// Passive health: eject endpoints that keep failing; and, with `check`, active health checks.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    /// Consecutive connect failures or 5xx answers that eject an endpoint (default 5).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub consecutive_failures: Option<Spanned<u64>>,
    /// How long an ejected endpoint receives no traffic, e.g. `30s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub ejection_time: Option<Str>,
    /// Active checks: a `GET` of `path` to every endpoint every `interval`; absent = passive
    /// health only.
    #[serde(default)]
    pub check: Option<FileHealthCheck>,
}

/// Active health checks of a pool's endpoints.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    /// Path to request, e.g. `/healthz`; a 2xx or 3xx answer passes.
    #[schemars(with = "String")]
    pub path: Str,
    /// Time between checks of an endpoint, e.g. `10s` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub interval: Option<Str>,
    /// Time a check may take, connecting included, e.g. `2s` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Str>,
    /// Failed checks in a row that take an endpoint out of rotation (default 2).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub unhealthy_after: Option<Spanned<u64>>,
    /// Passed checks in a row that bring it back (default 2).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub healthy_after: Option<Spanned<u64>>,
}

/// The embedded baseline engine. Needs a restart to change.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEngine {
    /// Run it (default true). Off, the tap keeps filling and its drops are counted.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Ticks (runtime samples) each series learns before it is scored (default 60).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub warmup: Option<Spanned<u64>>,
    /// Consecutive anomalous ticks that make a runtime anomaly (default 5).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub sustained: Option<Spanned<u64>>,
    /// File keeping the learned state across restarts (written atomically); absent: a restart
    /// learns again from scratch.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub state_file: Option<Str>,
    /// How often the state is written, e.g. `60s` (default); also at shutdown.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub save_every: Option<Str>,
    /// Risk older than this is unavailable to routes' trust policies (default `5s`); the engine
    /// publishes every 10 ms while it keeps up.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub stale_after: Option<Str>,
    /// Most sessions, principals and client addresses tracked at once (default 100000); beyond
    /// it the least recently seen are forgotten. Needs a restart to change.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub max_entities: Option<Spanned<u64>>,
    /// An entity idle this long is forgotten (default `1h`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub entity_idle: Option<Str>,
    /// Train and use the population model (default true).
    #[serde(default)]
    pub population: Option<bool>,
    /// How much faster than the wall clock the engine's entity clock runs (default 1). Only for
    /// simulations that compress hours of traffic into minutes; leave it at 1 in production.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub time_scale: Option<Spanned<f64>>,
    /// The engine's anomalies posted as alerts, for installs without Prometheus.
    #[serde(default)]
    pub alerts: Option<FileEngineAlerts>,
}

/// Where the engine posts its anomaly alerts (runtime anomaly, route error-ratio and latency
/// anomalies), with the same names and labels as the Prometheus rules in `alerts/`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEngineAlerts {
    /// Alertmanager base URLs, e.g. `http://127.0.0.1:9093`; alerts go to `/api/v2/alerts`,
    /// re-sent while they last and resolved when the anomaly ends.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub alertmanagers: Vec<Str>,
    /// Webhook URLs posted Alertmanager's webhook payload (version 4), once when an alert
    /// fires and once when it resolves.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub webhooks: Vec<Str>,
    /// How often alerts still firing are sent to Alertmanager again, e.g. `1m` (default); each
    /// one ends by itself four of these after the last send if the gateway goes away.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub resend_every: Option<Str>,
    /// The `instance` label of the alerts (default: the host name).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub instance: Option<Str>,
}

/// Telemetry.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTelemetry {
    /// Request events the tap to the baseline engine holds before it drops (default 8192).
    /// Needs a restart to change.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub tap_capacity: Option<Spanned<u64>>,
    /// How often the runtime is sampled, e.g. `1s` (default).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub runtime_interval: Option<Str>,
    /// Instrument one connection and one request in this many with a task monitor (poll and
    /// scheduling times; default 16, 1 = every one). Needs a restart to change.
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub task_sampling: Option<Spanned<u64>>,
    /// Logs.
    #[serde(default)]
    pub logs: Option<FileLogs>,
    /// CPU profiles the gateway captures by itself (when its runtime looks abnormal).
    #[serde(default)]
    pub profiles: Option<FileProfiles>,
    /// OpenTelemetry traces.
    #[serde(default)]
    pub traces: Option<FileTraces>,
}

/// OpenTelemetry traces.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTraces {
    /// OTLP endpoint, `http://host:port` (a collector or agent; plain text). Absent: trace
    /// context is still propagated, nothing is exported.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<Str>,
    /// `grpc` (default, port 4317 usually) or `http` (HTTP/protobuf to `<endpoint>/v1/traces`,
    /// port 4318 usually).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub protocol: Option<Str>,
    /// Share of new traces recorded, 0 to 1 (default 0.01); a trusted caller's sampled flag
    /// decides for the traces it continues.
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    pub sampling_ratio: Option<Spanned<f64>>,
    /// `service.name` (default `gateway`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub service_name: Option<Str>,
    /// `service.instance.id` (default: the host name).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub instance: Option<Str>,
}

/// Internal profile captures.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileProfiles {
    /// Directory for the captures (default: `gateway-profiles` in the system temp directory).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub dir: Option<Str>,
    /// Captures kept; older ones are removed (default 10).
    #[serde(default)]
    #[schemars(with = "Option<u64>")]
    pub keep: Option<Spanned<u64>>,
    /// Length of a capture, e.g. `10s` (default; at most 60s).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub duration: Option<Str>,
}

/// Logs.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLogs {
    /// Filter, e.g. `info` (default) or `warn,gateway::access=info`; applied on reload. The
    /// `RUST_LOG` environment variable, when set, takes its place.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub level: Option<Str>,
    /// `text` (default) or `json`; `--log-format` takes its place. Needs a restart to change.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub format: Option<Str>,
}

/// Shutdown behaviour.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileShutdown {
    /// How long in-flight requests may finish after SIGTERM, e.g. `30s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub drain_timeout: Option<Str>,
}

/// Config reload behaviour.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileReload {
    /// Reload when the file changes (default true).
    #[serde(default)]
    pub watch: Option<bool>,
    /// How often the file is checked for changes, e.g. `1s`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub poll_interval: Option<Str>,
}
