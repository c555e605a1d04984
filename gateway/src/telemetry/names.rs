//! Every metric name the gateway exports, in one place (see `docs/metrics.md`).
//!
//! Names are registered under the `gateway_` prefix; counters gain `_total` on export.
//! Dashboards and alerts may only use names listed here.

/// Requests answered, by route, method class and status class (counter).
pub const REQUESTS: &str = "requests";
/// Request duration until the response body ends, by route (histogram, seconds).
pub const REQUEST_DURATION: &str = "request_duration_seconds";
/// Requests the gateway answered itself with an error, by side and reason (counter).
pub const REQUEST_ERRORS: &str = "request_errors";
/// Upstream failures by pool and kind (counter).
pub const UPSTREAM_ERRORS: &str = "upstream_errors";
/// Endpoints currently ejected by passive health, by pool (gauge).
pub const UPSTREAM_ENDPOINTS_EJECTED: &str = "upstream_endpoints_ejected";
/// Ejections started, by pool (counter).
pub const UPSTREAM_EJECTIONS: &str = "upstream_ejections";
/// Upstream connections opened, by pool (counter).
pub const UPSTREAM_CONNECTIONS_OPENED: &str = "upstream_connections_opened";
/// Idle pooled upstream connections now, by pool (gauge).
pub const UPSTREAM_CONNECTIONS_IDLE: &str = "upstream_connections_idle";
/// Client connections open now, by listener and protocol (gauge).
pub const CONNECTIONS_ACTIVE: &str = "connections_active";
/// Client connections accepted, by listener (counter).
pub const CONNECTIONS_ACCEPTED: &str = "connections_accepted";
/// Accepts that had to wait because `max_connections` was reached, by listener (counter).
pub const CONNECTIONS_LIMITED: &str = "connections_limited";
/// Idle HTTP/1 keep-alive connections parked without hyper state, by listener (gauge).
pub const CONNECTIONS_PARKED: &str = "connections_parked";
/// Connections closed by a timeout, by listener and kind (header, idle, handshake) (counter).
pub const CONNECTION_TIMEOUTS: &str = "connection_timeouts";
/// Failed TLS handshakes, by listener (counter).
pub const TLS_HANDSHAKE_ERRORS: &str = "tls_handshake_errors";
/// Bearer authentication outcomes, by provider, outcome and reason (counter).
pub const AUTH_OUTCOMES: &str = "auth_outcomes";
/// Key set loads by provider and result (counter).
pub const IDENTITY_KEY_REFRESHES: &str = "identity_key_refreshes";
/// Key refreshes forced by unknown key ids, by provider and result (counter).
pub const IDENTITY_FORCED_REFRESHES: &str = "identity_forced_refreshes";
/// 1 once a provider's keys are loaded, by provider (gauge).
pub const IDENTITY_PROVIDER_READY: &str = "identity_provider_ready";
/// Usable keys in a provider's key set, by provider (gauge).
pub const IDENTITY_KEYS: &str = "identity_keys";
/// Subjects revoked through the admin API (counter).
pub const IDENTITY_REVOCATIONS: &str = "identity_revocations";
/// Browser sessions stored now (gauge).
pub const SESSIONS_ACTIVE: &str = "sessions_active";
/// Browser session events by event (counter).
pub const SESSION_EVENTS: &str = "session_events";
/// Browser sign-ins by provider and result (counter).
pub const LOGINS: &str = "logins";
/// Step-ups by kind and result (counter).
pub const STEP_UPS: &str = "step_ups";
/// Back-channel logout requests by provider and result (counter).
pub const BACKCHANNEL_LOGOUTS: &str = "backchannel_logouts";
/// Config reloads by result (counter).
pub const CONFIG_RELOADS: &str = "config_reloads";
/// Unix time of the last successful config load (gauge, seconds).
pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "config_last_reload_success_timestamp_seconds";
/// Build information, value 1 (gauge).
pub const BUILD_INFO: &str = "build_info";
