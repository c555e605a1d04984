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
/// Answers gzipped by a route's compress policy, by route (counter).
pub const COMPRESSED_RESPONSES: &str = "compressed_responses";
/// Requests a route's split sent to another pool, by route and pool (counter).
pub const SPLIT_REQUESTS: &str = "split_requests";
/// CORS preflights answered by a route's policy, by route and result (counter).
pub const CORS_PREFLIGHTS: &str = "cors_preflights";
/// Requests refused by a route's rate limit, by route (counter).
pub const RATE_LIMITED: &str = "rate_limited";
/// Requests of new clients passed uncounted by a full rate limit table, by route (counter).
pub const RATE_LIMIT_UNTRACKED: &str = "rate_limit_untracked";
/// Endpoints out of rotation by active health checks, by pool (gauge).
pub const UPSTREAM_ENDPOINTS_DOWN: &str = "upstream_endpoints_down";
/// Requests in flight to a pool's endpoints, by pool (gauge, set when scraped).
pub const UPSTREAM_IN_FLIGHT: &str = "upstream_requests_in_flight";
/// Active health checks by pool and result (counter).
pub const UPSTREAM_HEALTH_CHECKS: &str = "upstream_health_checks";
/// Upstream tries after a request's first, by pool and reason (counter).
pub const UPSTREAM_RETRIES: &str = "upstream_retries";
/// Upstream connections opened, by pool (counter).
pub const UPSTREAM_CONNECTIONS_OPENED: &str = "upstream_connections_opened";
/// Idle pooled upstream connections now, by pool (gauge).
pub const UPSTREAM_CONNECTIONS_IDLE: &str = "upstream_connections_idle";
/// Client connections open now, by listener and protocol (gauge).
pub const CONNECTIONS_ACTIVE: &str = "connections_active";
/// Client connections accepted, by listener (counter).
pub const CONNECTIONS_ACCEPTED: &str = "connections_accepted";
/// Requests on a plain listener redirected to HTTPS, by listener (counter).
pub const HTTPS_REDIRECTS: &str = "https_redirects";
/// Accepts that had to wait because `max_connections` was reached, by listener (counter).
pub const CONNECTIONS_LIMITED: &str = "connections_limited";
/// Idle HTTP/1 keep-alive connections parked without hyper state, by listener (gauge).
pub const CONNECTIONS_PARKED: &str = "connections_parked";
/// HTTP/1.1 connections handed to hyper's codec, by listener and reason (counter).
pub const HTTP1_HANDOFFS: &str = "http1_handoffs";
/// Connections closed by a timeout, by listener and kind (header, idle, handshake) (counter).
pub const CONNECTION_TIMEOUTS: &str = "connection_timeouts";
/// Failed TLS handshakes, by listener (counter).
pub const TLS_HANDSHAKE_ERRORS: &str = "tls_handshake_errors";
/// Connections with a verified client certificate, by listener (counter).
pub const TLS_CLIENT_CERTIFICATES: &str = "tls_client_certificates";
/// QUIC connection attempts by listener and result (counter).
pub const QUIC_HANDSHAKES: &str = "quic_handshakes";
/// HTTP/3 request streams accepted, by listener (counter).
pub const QUIC_STREAMS: &str = "quic_streams";
/// Smoothed RTT of QUIC connections at close, by listener (histogram, seconds).
pub const QUIC_RTT: &str = "quic_rtt";
/// Packets lost by QUIC connections, by listener (counter).
pub const QUIC_LOST_PACKETS: &str = "quic_lost_packets";
/// QUIC connections that moved to a new client address, by listener (counter).
pub const QUIC_MIGRATIONS: &str = "quic_migrations";
/// Unix time a listener's certificate expires, by listener and certificate file (gauge).
pub const TLS_CERTIFICATE_EXPIRY: &str = "tls_certificate_expiry_timestamp_seconds";
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
/// Request events offered to the tap, by result (counter).
pub const TAP_EVENTS: &str = "tap_events";
/// Runtime worker threads (gauge).
pub const RUNTIME_WORKERS: &str = "runtime_workers";
/// Share of the last interval the workers were busy (gauge, 0..1).
pub const RUNTIME_BUSY_RATIO: &str = "runtime_busy_ratio";
/// Worker parks (counter).
pub const RUNTIME_PARKS: &str = "runtime_parks";
/// Task polls (counter).
pub const RUNTIME_POLLS: &str = "runtime_polls";
/// Mean task poll time over the last interval (gauge, seconds).
pub const RUNTIME_MEAN_POLL: &str = "runtime_mean_poll_seconds";
/// Tasks in the global queue (gauge).
pub const RUNTIME_GLOBAL_QUEUE: &str = "runtime_global_queue_depth";
/// Tasks in the local queues (gauge).
pub const RUNTIME_LOCAL_QUEUE: &str = "runtime_local_queue_depth";
/// Tasks alive (gauge).
pub const RUNTIME_ALIVE_TASKS: &str = "runtime_alive_tasks";
/// Blocking pool threads (gauge).
pub const RUNTIME_BLOCKING_THREADS: &str = "runtime_blocking_threads";
/// Tasks waiting for a blocking thread (gauge).
pub const RUNTIME_BLOCKING_QUEUE: &str = "runtime_blocking_queue_depth";
/// Budget-forced yields (counter).
pub const RUNTIME_BUDGET_FORCED_YIELDS: &str = "runtime_budget_forced_yields";
/// Polls of monitored tasks by group (counter).
pub const TASK_POLLS: &str = "task_polls";
/// Slow polls of monitored tasks by group (counter).
pub const TASK_SLOW_POLLS: &str = "task_slow_polls";
/// Long scheduling delays of monitored tasks by group (counter).
pub const TASK_LONG_DELAYS: &str = "task_long_delays";
/// Mean poll time of monitored tasks by group (gauge, seconds).
pub const TASK_MEAN_POLL: &str = "task_mean_poll_seconds";
/// Mean scheduling delay of monitored tasks by group (gauge, seconds).
pub const TASK_MEAN_SCHEDULED: &str = "task_mean_scheduled_seconds";
/// A learned series' value, by scope and signal (gauge).
pub const BASELINE_VALUE: &str = "baseline_value";
/// A learned series' expected value (gauge).
pub const BASELINE_EXPECTED: &str = "baseline_expected";
/// Lower edge of the normal band (gauge).
pub const BASELINE_LOWER: &str = "baseline_lower";
/// Upper edge of the normal band (gauge).
pub const BASELINE_UPPER: &str = "baseline_upper";
/// Anomaly score, 0 to 1 (gauge).
pub const BASELINE_SCORE: &str = "baseline_score";
/// Request events taken by the engine (counter).
pub const ENGINE_EVENTS: &str = "engine_events";
/// Loads and saves of the engine's learned state (counter).
pub const ENGINE_STATE: &str = "engine_state";
/// Trust decisions by route, decision and mode (counter).
pub const TRUST_DECISIONS: &str = "trust_decisions";
/// Reasons of step-up and deny decisions by route, decision and reason (counter).
pub const TRUST_REASONS: &str = "trust_reasons";
/// Requests decided while the risk view was unavailable, by route and policy (counter).
pub const TRUST_UNAVAILABLE: &str = "trust_unavailable";
/// Sessions and subjects revoked by a deny (counter).
pub const TRUST_REVOCATIONS: &str = "trust_revocations";
/// Risk a trust policy used, by route (histogram).
pub const RISK_SCORE: &str = "risk_score";
/// Entities the engine tracks (gauge).
pub const ENGINE_ENTITIES: &str = "engine_entities";
/// Entities with some risk (gauge).
pub const ENGINE_RISKY_ENTITIES: &str = "engine_risky_entities";
/// Entities evicted from a full table (counter).
pub const ENGINE_EVICTED_ENTITIES: &str = "engine_evicted_entities";
/// Samples the population model was trained on; 0 without a model (gauge).
pub const ENGINE_MODEL_SAMPLES: &str = "engine_model_samples";
/// Unix time of the engine's last risk view publication (gauge, seconds).
pub const ENGINE_LAST_PUBLISH: &str = "engine_last_publish_timestamp";
/// Highest runtime series score (gauge).
pub const RUNTIME_ANOMALY_SCORE: &str = "runtime_anomaly_score";
/// 1 during a sustained runtime anomaly (gauge).
pub const RUNTIME_ANOMALY: &str = "runtime_anomaly";
/// Sustained runtime anomalies raised (counter).
pub const RUNTIME_ANOMALIES: &str = "runtime_anomalies";
/// Alert batches the engine posted to Alertmanager and webhooks, by target and result (counter).
pub const ENGINE_ALERTS: &str = "engine_alerts";
/// Alerts the engine holds firing now (gauge).
pub const ENGINE_ALERTS_FIRING: &str = "engine_alerts_firing";
/// Log lines dropped because the writer was behind (counter).
pub const LOG_LINES_DROPPED: &str = "log_lines_dropped";
/// CPU profile captures by trigger and result (counter).
pub const PROFILES: &str = "profiles";
/// Request events the tap holds at most (gauge).
pub const TAP_CAPACITY: &str = "tap_capacity";
/// Request events waiting in the tap (gauge).
pub const TAP_DEPTH: &str = "tap_depth";
/// Config reloads by result (counter).
pub const CONFIG_RELOADS: &str = "config_reloads";
/// Unix time of the last successful config load (gauge, seconds).
pub const CONFIG_LAST_RELOAD_SUCCESS: &str = "config_last_reload_success_timestamp_seconds";
/// Build information, value 1 (gauge).
pub const BUILD_INFO: &str = "build_info";
