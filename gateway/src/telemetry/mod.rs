//! Telemetry: the metrics every part of the data path records into.
//!
//! `main` (or a test) creates the [`Registry`], [`Metrics::register`] fills a `gateway_`
//! sub-registry, and each part keeps handles to the families it records. No global statics, so
//! tests read the values they caused. Labels come from bounded sets only: route, pool and
//! listener names from the config, method and status classes, fixed reason sets.

pub mod access;
pub mod logs;
pub mod names;
pub mod profile;
pub mod runtime;
pub mod tap;
pub mod trace;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Method class label: the common methods by name, everything else `other`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, missing_docs)]
pub enum MethodClass {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OPTIONS,
    other,
}

// === impl MethodClass ===

impl MethodClass {
    /// All classes, in index order.
    pub const ALL: [MethodClass; 8] = [
        MethodClass::GET,
        MethodClass::HEAD,
        MethodClass::POST,
        MethodClass::PUT,
        MethodClass::PATCH,
        MethodClass::DELETE,
        MethodClass::OPTIONS,
        MethodClass::other,
    ];

    /// The class of a method.
    pub fn of(m: &http::Method) -> Self {
        match *m {
            http::Method::GET => Self::GET,
            http::Method::HEAD => Self::HEAD,
            http::Method::POST => Self::POST,
            http::Method::PUT => Self::PUT,
            http::Method::PATCH => Self::PATCH,
            http::Method::DELETE => Self::DELETE,
            http::Method::OPTIONS => Self::OPTIONS,
            _ => Self::other,
        }
    }
}

/// Labels of `gateway_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name, or `none` when no route matched.
    pub route: String,
    /// Method class.
    pub method: MethodClass,
    /// `1xx` … `5xx`.
    pub status_class: String,
}

/// A single `route` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name.
    pub route: String,
}

/// Labels of `gateway_request_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `downstream`, `upstream` or `internal`.
    pub side: &'static str,
    /// Bounded reason, e.g. `no_route`, `body_too_large`.
    pub reason: &'static str,
}

/// Labels of `gateway_upstream_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// Pool name.
    pub pool: String,
    /// `connect`, `timeout`, `protocol`, `no_healthy_endpoint`, `status_5xx`.
    pub kind: &'static str,
}

/// Labels of `gateway_upstream_health_checks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// Pool name.
    pub pool: String,
    /// `pass` or `fail`.
    pub result: &'static str,
}

/// Labels of `gateway_split_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SplitLabels {
    /// Route name.
    pub route: String,
    /// Pool name.
    pub pool: String,
}

/// Labels of `gateway_cors_preflights_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteResultLabels {
    /// Route name.
    pub route: String,
    /// `allowed` or `refused`.
    pub result: &'static str,
}

/// Labels of `gateway_upstream_retries_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// Pool name.
    pub pool: String,
    /// `connect`, `reset` or `status`.
    pub reason: &'static str,
}

/// A single `pool` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
}

/// Labels of `gateway_connections_active`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// Listener name.
    pub listener: String,
    /// `http1`, `h2` or `h3`.
    pub protocol: &'static str,
}

/// Labels of `gateway_quic_handshakes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// Listener name.
    pub listener: String,
    /// `ok`, `failed`, `timeout`, `refused` or `retry`.
    pub result: &'static str,
}

/// A single `listener` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: String,
}

/// Labels of `gateway_tls_certificate_expiry_timestamp_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// Listener name.
    pub listener: String,
    /// The certificate's file, as configured.
    pub certificate: String,
}

/// Labels of `gateway_connection_timeouts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// Listener name.
    pub listener: String,
    /// `header`, `idle`, `handshake` or `h3_header`.
    pub kind: &'static str,
}

/// Labels of `gateway_http1_handoffs_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoffLabels {
    /// Listener name.
    pub listener: String,
    /// `body`, `special`, `version`, `target`, `malformed` or `large`.
    pub reason: &'static str,
}

/// Labels of `gateway_auth_outcomes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// Provider name.
    pub provider: String,
    /// `ok`, `missing`, `invalid` or `unavailable`.
    pub outcome: &'static str,
    /// Bounded reason (`verified`, `cached`, `expired`, `bad_signature`, ...).
    pub reason: &'static str,
}

/// A single `provider` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// Provider name.
    pub provider: String,
}

/// `provider` and `result` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderResultLabels {
    /// Provider name.
    pub provider: String,
    /// Result.
    pub result: &'static str,
}

/// Labels of `gateway_logins_total` and `gateway_backchannel_logouts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// Provider name (`none` when no provider could be told).
    pub provider: String,
    /// Bounded result.
    pub result: &'static str,
}

/// Labels of `gateway_session_events_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionEventLabels {
    /// Bounded event.
    pub event: &'static str,
}

/// A single `group` label: `connections` or `requests`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskGroupLabels {
    /// Monitored task group.
    pub group: &'static str,
}

/// Labels of `gateway_profiles_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabels {
    /// `admin` or `internal`.
    pub trigger: &'static str,
    /// `ok`, `busy` or `failed`.
    pub result: &'static str,
}

/// Labels of the `gateway_baseline_*` series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeriesLabels {
    /// `service`, `route:<name>` or `runtime`.
    pub scope: String,
    /// Signal name.
    pub signal: &'static str,
}

/// Labels of `gateway_trust_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrustLabels {
    /// Route.
    pub route: String,
    /// `allow`, `step_up` or `deny`.
    pub decision: &'static str,
    /// `enforce` or `shadow`.
    pub mode: &'static str,
}

/// Labels of `gateway_trust_reasons_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrustReasonLabels {
    /// Route.
    pub route: String,
    /// `step_up` or `deny`.
    pub decision: &'static str,
    /// One of the engine's signal names.
    pub reason: &'static str,
}

/// Labels of `gateway_trust_unavailable_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnavailableLabels {
    /// Route.
    pub route: String,
    /// `last_known` or `fail_closed`.
    pub policy: &'static str,
}

/// Labels of `gateway_trust_revocations_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevocationLabels {
    /// `session` or `subject`.
    pub kind: &'static str,
}

/// Labels of `gateway_engine_state_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `load` or `save`.
    pub op: &'static str,
    /// `ok`, `missing`, `corrupt` or `failed`.
    pub result: &'static str,
}

/// Labels of `gateway_tap_events_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TapLabels {
    /// `sent` or `dropped`.
    pub result: &'static str,
}

/// Every `event` of `gateway_session_events_total`.
pub const SESSION_EVENT_NAMES: [&str; 10] = [
    "created",
    "replaced",
    "logged_out",
    "expired_idle",
    "expired_absolute",
    "revoked",
    "backchannel_logout",
    "evicted",
    "invalid_cookie",
    "unknown",
];

/// Labels of `gateway_step_ups_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepUpLabels {
    /// `bearer` or `browser`.
    pub kind: &'static str,
    /// `issued`, `satisfied` or `failed`.
    pub result: &'static str,
}

/// Labels of `gateway_engine_alerts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertDeliveryLabels {
    /// `alertmanager`, `webhook`, or `queue` (the batch never left the gateway).
    pub target: &'static str,
    /// `sent`, `failed` or `dropped`.
    pub result: &'static str,
}

/// A single `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of `gateway_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: &'static str,
}

/// Every metric family of the data plane.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `gateway_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `gateway_request_duration_seconds`.
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `gateway_request_errors_total`.
    pub request_errors: Family<ErrorLabels, Counter>,
    /// `gateway_upstream_errors_total`.
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// `gateway_upstream_endpoints_ejected`.
    pub endpoints_ejected: Family<PoolLabels, Gauge>,
    /// `gateway_upstream_ejections_total`.
    pub ejections: Family<PoolLabels, Counter>,
    /// `gateway_upstream_retries_total`.
    pub upstream_retries: Family<RetryLabels, Counter>,
    /// `gateway_upstream_endpoints_down`.
    pub endpoints_down: Family<PoolLabels, Gauge>,
    /// `gateway_upstream_requests_in_flight` (set when scraped).
    pub upstream_in_flight: Family<PoolLabels, Gauge>,
    /// `gateway_rate_limited_total`.
    pub rate_limited: Family<RouteLabels, Counter>,
    /// `gateway_cors_preflights_total`.
    pub cors_preflights: Family<RouteResultLabels, Counter>,
    /// `gateway_split_requests_total`.
    pub split_requests: Family<SplitLabels, Counter>,
    /// `gateway_compressed_responses_total`.
    pub compressed_responses: Family<RouteLabels, Counter>,
    /// `gateway_rate_limit_untracked_total`.
    pub rate_limit_untracked: Family<RouteLabels, Counter>,
    /// `gateway_upstream_health_checks_total`.
    pub health_checks: Family<CheckLabels, Counter>,
    /// `gateway_upstream_connections_opened_total`.
    pub upstream_connections_opened: Family<PoolLabels, Counter>,
    /// `gateway_upstream_connections_idle`.
    pub upstream_connections_idle: Family<PoolLabels, Gauge>,
    /// `gateway_connections_active`.
    pub connections_active: Family<ConnLabels, Gauge>,
    /// `gateway_connections_accepted_total`.
    pub connections_accepted: Family<ListenerLabels, Counter>,
    /// `gateway_https_redirects_total`.
    pub https_redirects: Family<ListenerLabels, Counter>,
    /// `gateway_connections_limited_total`.
    pub connections_limited: Family<ListenerLabels, Counter>,
    /// `gateway_connections_parked`.
    pub connections_parked: Family<ListenerLabels, Gauge>,
    /// `gateway_connection_timeouts_total`.
    pub connection_timeouts: Family<TimeoutLabels, Counter>,
    /// `gateway_http1_handoffs_total`.
    pub http1_handoffs: Family<HandoffLabels, Counter>,
    /// `gateway_tls_handshake_errors_total`.
    pub tls_handshake_errors: Family<ListenerLabels, Counter>,
    /// `gateway_tls_client_certificates_total`.
    pub tls_client_certificates: Family<ListenerLabels, Counter>,
    /// `gateway_quic_handshakes_total`.
    pub quic_handshakes: Family<HandshakeLabels, Counter>,
    /// `gateway_quic_streams_total`.
    pub quic_streams: Family<ListenerLabels, Counter>,
    /// `gateway_quic_rtt_seconds`.
    pub quic_rtt: Family<ListenerLabels, Histogram>,
    /// `gateway_quic_lost_packets_total`.
    pub quic_lost_packets: Family<ListenerLabels, Counter>,
    /// `gateway_quic_migrations_total`.
    pub quic_migrations: Family<ListenerLabels, Counter>,
    /// `gateway_tls_certificate_expiry_timestamp_seconds`.
    pub tls_certificate_expiry: Family<CertificateLabels, Gauge>,
    /// `gateway_config_reloads_total`.
    pub config_reloads: Family<ResultLabels, Counter>,
    /// `gateway_auth_outcomes_total`.
    pub auth_outcomes: Family<AuthLabels, Counter>,
    /// `gateway_identity_key_refreshes_total`.
    pub key_refreshes: Family<ProviderResultLabels, Counter>,
    /// `gateway_identity_forced_refreshes_total`.
    pub forced_refreshes: Family<ProviderResultLabels, Counter>,
    /// `gateway_identity_provider_ready`.
    pub provider_ready: Family<ProviderLabels, Gauge>,
    /// `gateway_identity_keys`.
    pub provider_keys: Family<ProviderLabels, Gauge>,
    /// `gateway_identity_revocations_total`.
    pub revocations: Counter,
    /// `gateway_sessions_active`.
    pub sessions_active: Gauge,
    /// `gateway_session_events_total`.
    pub session_events: Family<SessionEventLabels, Counter>,
    /// `gateway_logins_total`.
    pub logins: Family<LoginLabels, Counter>,
    /// `gateway_step_ups_total`.
    pub step_ups: Family<StepUpLabels, Counter>,
    /// `gateway_backchannel_logouts_total`.
    pub backchannel_logouts: Family<LoginLabels, Counter>,
    /// `gateway_baseline_value`.
    pub baseline_value: Family<SeriesLabels, Gauge<f64, AtomicU64>>,
    /// `gateway_baseline_expected`.
    pub baseline_expected: Family<SeriesLabels, Gauge<f64, AtomicU64>>,
    /// `gateway_baseline_lower`.
    pub baseline_lower: Family<SeriesLabels, Gauge<f64, AtomicU64>>,
    /// `gateway_baseline_upper`.
    pub baseline_upper: Family<SeriesLabels, Gauge<f64, AtomicU64>>,
    /// `gateway_baseline_score`.
    pub baseline_score: Family<SeriesLabels, Gauge<f64, AtomicU64>>,
    /// `gateway_engine_events_total`.
    pub engine_events: Counter,
    /// `gateway_engine_state_total`.
    pub engine_state: Family<StateLabels, Counter>,
    /// `gateway_trust_decisions_total`.
    pub trust_decisions: Family<TrustLabels, Counter>,
    /// `gateway_trust_reasons_total`.
    pub trust_reasons: Family<TrustReasonLabels, Counter>,
    /// `gateway_trust_unavailable_total`.
    pub trust_unavailable: Family<UnavailableLabels, Counter>,
    /// `gateway_trust_revocations_total`.
    pub trust_revocations: Family<RevocationLabels, Counter>,
    /// `gateway_risk_score`.
    pub risk_score: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `gateway_engine_entities`.
    pub engine_entities: Gauge,
    /// `gateway_engine_risky_entities`.
    pub engine_risky_entities: Gauge,
    /// `gateway_engine_evicted_entities_total`.
    pub engine_evicted_entities: Counter,
    /// `gateway_engine_model_samples`.
    pub engine_model_samples: Gauge,
    /// `gateway_engine_last_publish_timestamp_seconds`.
    pub engine_last_publish: Gauge<f64, AtomicU64>,
    /// `gateway_runtime_anomaly_score`.
    pub runtime_anomaly_score: Gauge<f64, AtomicU64>,
    /// `gateway_runtime_anomaly`.
    pub runtime_anomaly: Gauge,
    /// `gateway_runtime_anomalies_total`.
    pub runtime_anomalies: Counter,
    /// `gateway_engine_alerts_total`.
    pub engine_alerts: Family<AlertDeliveryLabels, Counter>,
    /// `gateway_engine_alerts_firing`.
    pub engine_alerts_firing: Gauge,
    /// `gateway_log_lines_dropped_total`.
    pub log_lines_dropped: Counter,
    /// `gateway_profiles_total`.
    pub profiles: Family<ProfileLabels, Counter>,
    /// `gateway_tap_events_total`.
    pub tap_events: Family<TapLabels, Counter>,
    /// `gateway_tap_capacity`.
    pub tap_capacity: Gauge,
    /// `gateway_tap_depth`.
    pub tap_depth: Gauge,
    /// `gateway_runtime_workers`.
    pub runtime_workers: Gauge,
    /// `gateway_runtime_busy_ratio`.
    pub runtime_busy_ratio: Gauge<f64, AtomicU64>,
    /// `gateway_runtime_parks_total`.
    pub runtime_parks: Counter,
    /// `gateway_runtime_polls_total`.
    pub runtime_polls: Counter,
    /// `gateway_runtime_mean_poll_seconds`.
    pub runtime_mean_poll: Gauge<f64, AtomicU64>,
    /// `gateway_runtime_global_queue_depth`.
    pub runtime_global_queue: Gauge,
    /// `gateway_runtime_local_queue_depth`.
    pub runtime_local_queue: Gauge,
    /// `gateway_runtime_alive_tasks`.
    pub runtime_alive_tasks: Gauge,
    /// `gateway_runtime_blocking_threads`.
    pub runtime_blocking_threads: Gauge,
    /// `gateway_runtime_blocking_queue_depth`.
    pub runtime_blocking_queue: Gauge,
    /// `gateway_runtime_budget_forced_yields_total`.
    pub runtime_budget_forced_yields: Counter,
    /// `gateway_task_polls_total`.
    pub task_polls: Family<TaskGroupLabels, Counter>,
    /// `gateway_task_slow_polls_total`.
    pub task_slow_polls: Family<TaskGroupLabels, Counter>,
    /// `gateway_task_long_delays_total`.
    pub task_long_delays: Family<TaskGroupLabels, Counter>,
    /// `gateway_task_mean_poll_seconds`.
    pub task_mean_poll: Family<TaskGroupLabels, Gauge<f64, AtomicU64>>,
    /// `gateway_task_mean_scheduled_seconds`.
    pub task_mean_scheduled: Family<TaskGroupLabels, Gauge<f64, AtomicU64>>,
    /// `process_resident_memory_bytes`.
    pub process_resident: Gauge,
    /// `process_cpu_seconds_total`.
    pub process_cpu: Counter<f64, AtomicU64>,
    /// `process_open_fds`.
    pub process_fds: Gauge,
    /// `gateway_config_last_reload_success_timestamp_seconds`.
    pub config_last_success: Gauge<f64, AtomicU64>,
    /// `gateway_build_info`.
    pub build_info: Family<BuildLabels, Gauge>,
}

fn rtt_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

fn risk_histogram() -> Histogram {
    Histogram::new([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 0.95, 1.0])
}

/// The bucket bounds of `gateway_request_duration_seconds`: 0.5 ms doubling to about 65 s.
pub fn duration_bounds() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 18)
}

fn duration_histogram() -> Histogram {
    Histogram::new(duration_bounds())
}

// === impl Metrics ===

impl Metrics {
    /// Creates the families and registers them under `gateway_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        use names::*;
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            request_errors: Family::default(),
            upstream_errors: Family::default(),
            endpoints_ejected: Family::default(),
            ejections: Family::default(),
            upstream_retries: Family::default(),
            endpoints_down: Family::default(),
            upstream_in_flight: Family::default(),
            rate_limited: Family::default(),
            cors_preflights: Family::default(),
            split_requests: Family::default(),
            compressed_responses: Family::default(),
            rate_limit_untracked: Family::default(),
            health_checks: Family::default(),
            upstream_connections_opened: Family::default(),
            upstream_connections_idle: Family::default(),
            connections_active: Family::default(),
            connections_accepted: Family::default(),
            https_redirects: Family::default(),
            connections_limited: Family::default(),
            connections_parked: Family::default(),
            connection_timeouts: Family::default(),
            http1_handoffs: Family::default(),
            tls_handshake_errors: Family::default(),
            tls_client_certificates: Family::default(),
            tls_certificate_expiry: Family::default(),
            quic_handshakes: Family::default(),
            quic_streams: Family::default(),
            quic_rtt: Family::new_with_constructor(rtt_histogram as fn() -> Histogram),
            quic_lost_packets: Family::default(),
            quic_migrations: Family::default(),
            config_reloads: Family::default(),
            auth_outcomes: Family::default(),
            key_refreshes: Family::default(),
            forced_refreshes: Family::default(),
            provider_ready: Family::default(),
            provider_keys: Family::default(),
            revocations: Counter::default(),
            sessions_active: Gauge::default(),
            session_events: Family::default(),
            logins: Family::default(),
            step_ups: Family::default(),
            backchannel_logouts: Family::default(),
            baseline_value: Family::default(),
            baseline_expected: Family::default(),
            baseline_lower: Family::default(),
            baseline_upper: Family::default(),
            baseline_score: Family::default(),
            engine_events: Counter::default(),
            engine_state: Family::default(),
            trust_decisions: Family::default(),
            trust_reasons: Family::default(),
            trust_unavailable: Family::default(),
            trust_revocations: Family::default(),
            risk_score: Family::new_with_constructor(risk_histogram as fn() -> Histogram),
            engine_entities: Gauge::default(),
            engine_risky_entities: Gauge::default(),
            engine_evicted_entities: Counter::default(),
            engine_model_samples: Gauge::default(),
            engine_last_publish: Gauge::default(),
            runtime_anomaly_score: Gauge::default(),
            runtime_anomaly: Gauge::default(),
            runtime_anomalies: Counter::default(),
            engine_alerts: Family::default(),
            engine_alerts_firing: Gauge::default(),
            log_lines_dropped: Counter::default(),
            profiles: Family::default(),
            tap_events: Family::default(),
            tap_capacity: Gauge::default(),
            tap_depth: Gauge::default(),
            runtime_workers: Gauge::default(),
            runtime_busy_ratio: Gauge::default(),
            runtime_parks: Counter::default(),
            runtime_polls: Counter::default(),
            runtime_mean_poll: Gauge::default(),
            runtime_global_queue: Gauge::default(),
            runtime_local_queue: Gauge::default(),
            runtime_alive_tasks: Gauge::default(),
            runtime_blocking_threads: Gauge::default(),
            runtime_blocking_queue: Gauge::default(),
            runtime_budget_forced_yields: Counter::default(),
            task_polls: Family::default(),
            task_slow_polls: Family::default(),
            task_long_delays: Family::default(),
            task_mean_poll: Family::default(),
            task_mean_scheduled: Family::default(),
            process_resident: Gauge::default(),
            process_cpu: Counter::default(),
            process_fds: Gauge::default(),
            config_last_success: Gauge::default(),
            build_info: Family::default(),
        };
        // Process figures under their conventional names, as other exporters write them.
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the process",
            Unit::Bytes,
            m.process_resident.clone(),
        );
        registry.register_with_unit(
            "process_cpu",
            "CPU time of the process, user and system",
            Unit::Seconds,
            m.process_cpu.clone(),
        );
        registry.register("process_open_fds", "Open file descriptors", m.process_fds.clone());
        let r = registry.sub_registry_with_prefix("gateway");
        r.register(
            REQUESTS,
            "Requests answered, by route, method class and status class",
            m.requests.clone(),
        );
        r.register_with_unit(
            REQUEST_DURATION.trim_end_matches("_seconds"),
            "Time from request head to the end of the response body, by route",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register(
            REQUEST_ERRORS,
            "Requests the gateway answered itself with an error, by side and reason",
            m.request_errors.clone(),
        );
        r.register(
            UPSTREAM_ERRORS,
            "Upstream failures by pool and kind",
            m.upstream_errors.clone(),
        );
        r.register(
            UPSTREAM_ENDPOINTS_EJECTED,
            "Endpoints currently ejected by passive health checking",
            m.endpoints_ejected.clone(),
        );
        r.register(
            UPSTREAM_EJECTIONS,
            "Endpoint ejections started by passive health checking",
            m.ejections.clone(),
        );
        r.register(
            UPSTREAM_RETRIES,
            "Upstream tries after the first: after a connect failure, a broken exchange or a listed status",
            m.upstream_retries.clone(),
        );
        r.register(
            COMPRESSED_RESPONSES,
            "Answers a route's compress policy gzipped",
            m.compressed_responses.clone(),
        );
        r.register(
            SPLIT_REQUESTS,
            "Requests a route's split sent to a pool other than its own upstream",
            m.split_requests.clone(),
        );
        r.register(
            CORS_PREFLIGHTS,
            "CORS preflights a route's cors policy answered, by result",
            m.cors_preflights.clone(),
        );
        r.register(
            RATE_LIMITED,
            "Requests refused by a route's rate limit",
            m.rate_limited.clone(),
        );
        r.register(
            RATE_LIMIT_UNTRACKED,
            "Requests of new clients passed uncounted: the route's rate limit table was full of active clients",
            m.rate_limit_untracked.clone(),
        );
        r.register(
            UPSTREAM_ENDPOINTS_DOWN,
            "Endpoints out of rotation because they failed their active health checks",
            m.endpoints_down.clone(),
        );
        r.register(
            UPSTREAM_IN_FLIGHT,
            "Requests in flight to the pool's endpoints when scraped",
            m.upstream_in_flight.clone(),
        );
        r.register(
            UPSTREAM_HEALTH_CHECKS,
            "Active health checks by result",
            m.health_checks.clone(),
        );
        r.register(
            UPSTREAM_CONNECTIONS_OPENED,
            "Upstream connections opened (pooled reuse opens none)",
            m.upstream_connections_opened.clone(),
        );
        r.register(
            UPSTREAM_CONNECTIONS_IDLE,
            "Idle pooled upstream connections now",
            m.upstream_connections_idle.clone(),
        );
        r.register(
            CONNECTIONS_ACTIVE,
            "Client connections open now, by listener and protocol",
            m.connections_active.clone(),
        );
        r.register(
            CONNECTIONS_ACCEPTED,
            "Client connections accepted, by listener",
            m.connections_accepted.clone(),
        );
        r.register(
            HTTPS_REDIRECTS,
            "Requests on a plain listener redirected to HTTPS",
            m.https_redirects.clone(),
        );
        r.register(
            CONNECTIONS_LIMITED,
            "Accepts that waited because max_connections was reached",
            m.connections_limited.clone(),
        );
        r.register(
            CONNECTIONS_PARKED,
            "Idle HTTP/1 keep-alive connections held without per-connection HTTP state",
            m.connections_parked.clone(),
        );
        r.register(
            HTTP1_HANDOFFS,
            "HTTP/1.1 connections handed to the general HTTP/1 codec, by the request that needed it",
            m.http1_handoffs.clone(),
        );
        r.register(
            CONNECTION_TIMEOUTS,
            "Client connections closed by a timeout, by kind",
            m.connection_timeouts.clone(),
        );
        r.register(
            TLS_HANDSHAKE_ERRORS,
            "Failed TLS handshakes, by listener",
            m.tls_handshake_errors.clone(),
        );
        r.register(
            TLS_CLIENT_CERTIFICATES,
            "TLS and QUIC connections that presented a client certificate the listener's CAs verified",
            m.tls_client_certificates.clone(),
        );
        r.register(
            QUIC_HANDSHAKES,
            "QUIC connection attempts by listener and result",
            m.quic_handshakes.clone(),
        );
        r.register(
            QUIC_STREAMS,
            "HTTP/3 request streams accepted, by listener",
            m.quic_streams.clone(),
        );
        r.register_with_unit(
            QUIC_RTT,
            "Smoothed round-trip time of QUIC connections when they close, by listener",
            prometheus_client::registry::Unit::Seconds,
            m.quic_rtt.clone(),
        );
        r.register(
            QUIC_LOST_PACKETS,
            "Packets QUIC connections lost, counted when they close, by listener",
            m.quic_lost_packets.clone(),
        );
        r.register(
            QUIC_MIGRATIONS,
            "QUIC connections seen coming from a new client address, by listener",
            m.quic_migrations.clone(),
        );
        r.register(
            TLS_CERTIFICATE_EXPIRY,
            "Unix time the certificate stops being valid (its notAfter), by listener and certificate file",
            m.tls_certificate_expiry.clone(),
        );
        r.register(CONFIG_RELOADS, "Config reloads by result", m.config_reloads.clone());
        r.register(
            AUTH_OUTCOMES,
            "Bearer authentication outcomes, by provider, outcome and reason",
            m.auth_outcomes.clone(),
        );
        r.register(
            IDENTITY_KEY_REFRESHES,
            "Identity provider key set loads, by result",
            m.key_refreshes.clone(),
        );
        r.register(
            IDENTITY_FORCED_REFRESHES,
            "Key refreshes forced by unknown key ids, performed or rate limited",
            m.forced_refreshes.clone(),
        );
        r.register(
            IDENTITY_PROVIDER_READY,
            "1 once the provider's keys are loaded",
            m.provider_ready.clone(),
        );
        r.register(
            IDENTITY_KEYS,
            "Usable keys in the provider's key set",
            m.provider_keys.clone(),
        );
        r.register(
            IDENTITY_REVOCATIONS,
            "Subjects revoked through the admin API",
            m.revocations.clone(),
        );
        r.register(
            SESSIONS_ACTIVE,
            "Browser sessions stored now",
            m.sessions_active.clone(),
        );
        r.register(
            SESSION_EVENTS,
            "Browser session events: created, replaced, logged out, expired, revoked, evicted, invalid cookies",
            m.session_events.clone(),
        );
        r.register(
            LOGINS,
            "Browser sign-ins started and finished, by provider and result",
            m.logins.clone(),
        );
        r.register(
            STEP_UPS,
            "Step-ups asked for and their outcome, by kind (bearer, browser)",
            m.step_ups.clone(),
        );
        r.register(
            BACKCHANNEL_LOGOUTS,
            "Back-channel logout requests from providers, by result",
            m.backchannel_logouts.clone(),
        );
        r.register(
            TAP_EVENTS,
            "Request events offered to the tap, sent or dropped (channel full or no consumer)",
            m.tap_events.clone(),
        );
        r.register(RUNTIME_WORKERS, "Runtime worker threads", m.runtime_workers.clone());
        r.register(
            RUNTIME_BUSY_RATIO,
            "Share of the last interval the workers were busy (0 to 1)",
            m.runtime_busy_ratio.clone(),
        );
        r.register(RUNTIME_PARKS, "Worker parks", m.runtime_parks.clone());
        r.register(RUNTIME_POLLS, "Task polls", m.runtime_polls.clone());
        r.register_with_unit(
            RUNTIME_MEAN_POLL.trim_end_matches("_seconds"),
            "Mean task poll time over the last interval",
            Unit::Seconds,
            m.runtime_mean_poll.clone(),
        );
        r.register(
            RUNTIME_GLOBAL_QUEUE,
            "Tasks in the runtime's global queue",
            m.runtime_global_queue.clone(),
        );
        r.register(
            RUNTIME_LOCAL_QUEUE,
            "Tasks in the workers' local queues",
            m.runtime_local_queue.clone(),
        );
        r.register(RUNTIME_ALIVE_TASKS, "Tasks alive", m.runtime_alive_tasks.clone());
        r.register(
            RUNTIME_BLOCKING_THREADS,
            "Threads in the blocking pool",
            m.runtime_blocking_threads.clone(),
        );
        r.register(
            RUNTIME_BLOCKING_QUEUE,
            "Tasks waiting for a blocking thread",
            m.runtime_blocking_queue.clone(),
        );
        r.register(
            RUNTIME_BUDGET_FORCED_YIELDS,
            "Times tasks yielded because their budget ran out",
            m.runtime_budget_forced_yields.clone(),
        );
        r.register(TASK_POLLS, "Polls of monitored tasks, by group", m.task_polls.clone());
        r.register(
            TASK_SLOW_POLLS,
            "Polls of monitored tasks slower than 1 ms, by group",
            m.task_slow_polls.clone(),
        );
        r.register(
            TASK_LONG_DELAYS,
            "Times a monitored task waited over 50 us to be polled after waking, by group",
            m.task_long_delays.clone(),
        );
        r.register_with_unit(
            TASK_MEAN_POLL.trim_end_matches("_seconds"),
            "Mean poll time of monitored tasks over the last interval, by group",
            Unit::Seconds,
            m.task_mean_poll.clone(),
        );
        r.register_with_unit(
            TASK_MEAN_SCHEDULED.trim_end_matches("_seconds"),
            "Mean time monitored tasks waited to be polled after waking, by group",
            Unit::Seconds,
            m.task_mean_scheduled.clone(),
        );
        r.register(
            BASELINE_VALUE,
            "A learned series' value over the last tick, by scope and signal",
            m.baseline_value.clone(),
        );
        r.register(
            BASELINE_EXPECTED,
            "A learned series' expected value for the last tick",
            m.baseline_expected.clone(),
        );
        r.register(
            BASELINE_LOWER,
            "Lower edge of a learned series' normal band",
            m.baseline_lower.clone(),
        );
        r.register(
            BASELINE_UPPER,
            "Upper edge of a learned series' normal band",
            m.baseline_upper.clone(),
        );
        r.register(
            BASELINE_SCORE,
            "Anomaly score of a learned series' last tick, 0 to 1",
            m.baseline_score.clone(),
        );
        r.register(
            ENGINE_EVENTS,
            "Request events the baseline engine has taken from the tap",
            m.engine_events.clone(),
        );
        r.register(
            ENGINE_STATE,
            "Loads and saves of the engine's learned state, by result",
            m.engine_state.clone(),
        );
        r.register(
            TRUST_DECISIONS,
            "Trust decisions on routes with a trust policy, by route, decision and mode",
            m.trust_decisions.clone(),
        );
        r.register(
            TRUST_REASONS,
            "Reasons of step-up and deny trust decisions, by route, decision and reason",
            m.trust_reasons.clone(),
        );
        r.register(
            TRUST_UNAVAILABLE,
            "Requests decided while the risk view was unavailable, by route and policy",
            m.trust_unavailable.clone(),
        );
        for kind in ["session", "subject"] {
            let _ = m.trust_revocations.get_or_create(&RevocationLabels { kind });
        }
        r.register(
            TRUST_REVOCATIONS,
            "Sessions and subjects revoked by a trust deny",
            m.trust_revocations.clone(),
        );
        r.register(
            RISK_SCORE,
            "Risk the trust policy used per request, by route",
            m.risk_score.clone(),
        );
        r.register(
            ENGINE_ENTITIES,
            "Sessions, principals and client addresses the engine tracks",
            m.engine_entities.clone(),
        );
        r.register(
            ENGINE_RISKY_ENTITIES,
            "Entities with some risk in the published risk view",
            m.engine_risky_entities.clone(),
        );
        r.register(
            ENGINE_EVICTED_ENTITIES,
            "Entities forgotten because the table was full",
            m.engine_evicted_entities.clone(),
        );
        r.register(
            ENGINE_MODEL_SAMPLES,
            "Samples the population model was trained on; 0 without a model",
            m.engine_model_samples.clone(),
        );
        r.register_with_unit(
            ENGINE_LAST_PUBLISH,
            "Unix time of the engine's last risk view publication",
            Unit::Seconds,
            m.engine_last_publish.clone(),
        );
        r.register(
            RUNTIME_ANOMALY_SCORE,
            "Highest anomaly score among the runtime series at the last tick",
            m.runtime_anomaly_score.clone(),
        );
        r.register(
            RUNTIME_ANOMALY,
            "1 while a sustained runtime anomaly lasts",
            m.runtime_anomaly.clone(),
        );
        r.register(
            RUNTIME_ANOMALIES,
            "Sustained runtime anomalies raised",
            m.runtime_anomalies.clone(),
        );
        r.register(
            ENGINE_ALERTS,
            "Alert batches the engine posted, by target and result",
            m.engine_alerts.clone(),
        );
        r.register(
            ENGINE_ALERTS_FIRING,
            "Alerts the engine holds firing now",
            m.engine_alerts_firing.clone(),
        );
        r.register(
            LOG_LINES_DROPPED,
            "Log lines dropped because the log writer thread was behind",
            m.log_lines_dropped.clone(),
        );
        r.register(
            PROFILES,
            "CPU profile captures by trigger (admin, internal) and result (ok, busy, failed)",
            m.profiles.clone(),
        );
        r.register(
            TAP_CAPACITY,
            "Request events the tap holds at most",
            m.tap_capacity.clone(),
        );
        r.register(TAP_DEPTH, "Request events waiting in the tap", m.tap_depth.clone());
        r.register_with_unit(
            CONFIG_LAST_RELOAD_SUCCESS
                .trim_end_matches("_timestamp_seconds")
                .to_string()
                + "_timestamp",
            "Unix time of the last successful config load",
            Unit::Seconds,
            m.config_last_success.clone(),
        );
        r.register(
            BUILD_INFO,
            "Build information; the value is always 1",
            m.build_info.clone(),
        );
        // Series that exist from the start, so rates and alerts see zeros rather than nothing.
        for event in SESSION_EVENT_NAMES {
            let _ = m.session_events.get_or_create(&SessionEventLabels { event });
        }
        for (kind, result) in [
            ("bearer", "issued"),
            ("browser", "issued"),
            ("browser", "satisfied"),
            ("browser", "failed"),
        ] {
            let _ = m.step_ups.get_or_create(&StepUpLabels { kind, result });
        }
        for (op, result) in [
            ("load", "ok"),
            ("load", "missing"),
            ("load", "corrupt"),
            ("load", "failed"),
            ("save", "ok"),
            ("save", "failed"),
        ] {
            let _ = m.engine_state.get_or_create(&StateLabels { op, result });
        }
        for trigger in ["admin", "internal"] {
            for result in ["ok", "busy", "failed"] {
                let _ = m.profiles.get_or_create(&ProfileLabels { trigger, result });
            }
        }
        for group in ["connections", "requests"] {
            let g = TaskGroupLabels { group };
            let _ = m.task_polls.get_or_create(&g);
            let _ = m.task_slow_polls.get_or_create(&g);
            let _ = m.task_long_delays.get_or_create(&g);
            let _ = m.task_mean_poll.get_or_create(&g);
            let _ = m.task_mean_scheduled.get_or_create(&g);
        }
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        m
    }
}

/// Renders the registry in the OpenMetrics text format.
pub fn render_openmetrics(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Renders the registry in the classic Prometheus text format (0.0.4), for scrapers and tools
/// that do not ask for OpenMetrics: counter families carry their `_total` name, and the
/// OpenMetrics-only `# UNIT` and `# EOF` lines are left out.
pub fn render_classic(registry: &Registry) -> String {
    let open = render_openmetrics(registry);
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
