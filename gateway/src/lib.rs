//! The adaptive gateway's data plane: an identity-aware reverse proxy.
//!
//! Data path, in the order a request travels: `listen/` (accept) → `conn/` (TLS, HTTP/1 or
//! HTTP/2) → `pipeline/` (head checks, route, forward, observe) → `upstream/` (pools, balancing,
//! passive health). `config/` turns the YAML file into a [`config::Snapshot`] that requests read
//! lock-free; `admin/` serves health, readiness, metrics and reload; `telemetry/` holds the
//! metrics. [`Gateway::start`] wires it all together.

pub mod admin;
pub mod alerting;
pub mod baseline;
pub mod calendar;
pub mod cli;
pub mod config;
pub mod conn;
pub mod demo;
pub mod error;
pub mod identity;
pub mod listen;
pub mod outbound;
pub mod pipeline;
pub mod reload;
pub mod slo;
pub mod telemetry;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::{Config, ConfigErrors, Snapshot};
use telemetry::Metrics;

/// State shared by every task of a running gateway.
#[derive(Debug)]
pub struct Shared {
    /// The current config snapshot.
    pub snapshot: ArcSwap<Snapshot>,
    /// Metric families.
    pub metrics: Metrics,
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Set once listeners are bound and the config is loaded.
    pub ready: AtomicBool,
    /// The config file, when loaded from one (enables reload).
    pub config_path: Option<PathBuf>,
    /// Revoked subjects (bearer tokens issued before the revocation are refused).
    pub revocations: identity::Revocations,
    /// Task monitors around connection and request handling.
    pub monitors: telemetry::runtime::Monitors,
    /// CPU profile captures (one at a time).
    pub profiles: telemetry::profile::Profiles,
    /// Where request events and runtime samples go.
    pub tap: Arc<telemetry::tap::Tap>,
    /// Browser sessions and sign-ins in progress.
    pub sessions: identity::login::Sessions,
    /// The baseline engine's risk, read on the request path without waiting.
    pub risk: Arc<baseline_engine::store::RiskView>,
    reload_lock: tokio::sync::Mutex<()>,
    /// Fingerprint of the config file content last loaded (or rejected).
    loaded_fingerprint: std::sync::Mutex<Option<u64>>,
}

// === impl Shared ===

impl Shared {
    /// Sets the gauges read from live state when `/metrics` is scraped: requests in flight per
    /// pool (the endpoints' own counters, so the request path keeps no gauge of its own).
    pub fn refresh_scraped_gauges(&self) {
        let snap = self.snapshot.load();
        // Pools a reload removed disappear from the output.
        self.metrics.upstream_in_flight.clear();
        for pool in snap.pools.values() {
            let n: usize = pool.endpoints.iter().map(|e| e.in_flight()).sum();
            self.metrics
                .upstream_in_flight
                .get_or_create(&telemetry::PoolLabels {
                    pool: pool.name().to_string(),
                })
                .set(n as i64);
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// A socket could not be bound.
    #[error("cannot bind {name} on {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    shared: Arc<Shared>,
    drain: CancellationToken,
    tracker: TaskTracker,
    background: CancellationToken,
    listeners: HashMap<String, SocketAddr>,
    admin: SocketAddr,
    engine: Option<tokio::task::JoinHandle<()>>,
}

// === impl Gateway ===

impl Gateway {
    /// Builds the snapshot, binds every socket, and starts serving. `config_path` enables
    /// reload (SIGHUP through [`Gateway::reload`], file watching, admin `POST /reload`).
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        mut registry: Registry,
    ) -> Result<Gateway, StartError> {
        let metrics = Metrics::register(&mut registry);
        let file = config_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(built-in)".into());
        let snapshot = Snapshot::build(&file, config, &metrics, None)?;
        let cfg = snapshot.config.clone();
        let mut bound = Vec::new();
        for l in &cfg.listeners {
            let sock = listen::bind(l.addr).map_err(|source| StartError::Bind {
                name: l.name.clone(),
                addr: l.addr,
                source,
            })?;
            // QUIC on the same port number over UDP (the one the TCP socket got, for port 0).
            let quic = match snapshot.quic.get(&l.name) {
                None => None,
                Some(qc) => {
                    let addr = sock.local_addr().unwrap_or(l.addr);
                    let endpoint = listen::quic::bind(addr, qc.clone()).map_err(|source| StartError::Bind {
                        name: format!("{} (QUIC)", l.name),
                        addr,
                        source,
                    })?;
                    Some(endpoint)
                }
            };
            bound.push((l.clone(), sock, quic));
        }
        let admin_sock = listen::bind(cfg.admin).map_err(|source| StartError::Bind {
            name: "admin".into(),
            addr: cfg.admin,
            source,
        })?;
        let admin = admin_sock.local_addr().unwrap_or(cfg.admin);

        metrics
            .config_reloads
            .get_or_create(&telemetry::ResultLabels { result: "success" })
            .inc();
        metrics.config_last_success.set(unix_now());
        let tap = Arc::new(telemetry::tap::Tap::new(cfg.telemetry.tap_capacity, &metrics));
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            registry,
            ready: AtomicBool::new(false),
            config_path,
            revocations: identity::Revocations::default(),
            sessions: identity::login::Sessions::default(),
            risk: Arc::new(baseline_engine::store::RiskView::new()),
            tap,
            profiles: telemetry::profile::Profiles::default(),
            monitors: telemetry::runtime::Monitors::new(cfg.telemetry.task_sampling),
            reload_lock: tokio::sync::Mutex::new(()),
            loaded_fingerprint: std::sync::Mutex::new(None),
        });
        if let Some(p) = &shared.config_path {
            if let (Ok(bytes), Ok(mut f)) = (std::fs::read(p), shared.loaded_fingerprint.lock()) {
                *f = Some(reload::fingerprint(&bytes));
            }
        }
        let drain = CancellationToken::new();
        let background = CancellationToken::new();
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(cfg.limits.max_connections));
        let mut listeners = HashMap::new();
        for (l, sock, quic) in bound {
            listeners.insert(l.name.clone(), sock.local_addr().unwrap_or(l.addr));
            let mut ctx = conn::ListenerCtx::new(&l.name, l.tls.is_some(), &shared.metrics);
            if let Some(endpoint) = quic {
                ctx.alt_svc = Some(listen::quic::alt_svc(listeners[&l.name].port()));
                tokio::spawn(listen::quic::accept_loop(
                    endpoint,
                    l.name.as_str().into(),
                    shared.clone(),
                    drain.clone(),
                    tracker.clone(),
                ));
                tracing::info!(listener = %l.name, address = %listeners[&l.name], "listening for HTTP/3 over QUIC");
            }
            let ctx = Arc::new(ctx);
            tokio::spawn(listen::accept_loop(
                sock,
                ctx,
                shared.clone(),
                limit.clone(),
                drain.clone(),
                tracker.clone(),
            ));
            tracing::info!(listener = %l.name, address = %listeners[&l.name], tls = l.tls.is_some(), "listening");
        }
        tokio::spawn(admin::serve(admin_sock, shared.clone(), background.clone()));
        let engine = cfg
            .engine
            .enabled
            .then(|| tokio::spawn(baseline::run(shared.clone(), background.clone())));
        tokio::spawn(telemetry::runtime::sample(
            shared.clone(),
            tokio::runtime::Handle::current(),
            background.clone(),
        ));
        tokio::spawn(identity::login::Sessions::sweep(
            shared.clone(),
            Duration::from_secs(30),
            background.clone(),
        ));
        tracing::info!(address = %admin, "admin listening");
        if shared.config_path.is_some() && cfg.reload.watch {
            tokio::spawn(reload::watch(
                shared.clone(),
                cfg.reload.poll_interval,
                background.clone(),
            ));
        }
        shared.ready.store(true, Ordering::Release);
        Ok(Gateway {
            shared,
            drain,
            tracker,
            background,
            listeners,
            admin,
            engine,
        })
    }

    /// The bound address of a listener.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Shared state (metrics, snapshot).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reloads the config file now.
    pub async fn reload(&self) -> Result<reload::Outcome, reload::ReloadError> {
        reload::reload(&self.shared).await
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then stops. Returns
    /// whether every connection finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.shared.ready.store(false, Ordering::Release);
        self.drain.cancel();
        self.tracker.close();
        let drained = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        self.background.cancel();
        // The engine writes its learned state as it stops.
        if let Some(engine) = self.engine {
            let _ = tokio::time::timeout(Duration::from_secs(5), engine).await;
        }
        // Export the spans still buffered.
        self.shared.snapshot.load().tracing.clone().shutdown().await;
        drained
    }

    /// The configured drain deadline.
    pub fn drain_timeout(&self) -> Duration {
        self.shared.snapshot.load().config.drain_timeout
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The wall clock in Unix milliseconds.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The wall clock in Unix milliseconds at `at`, a monotonic instant already read.
///
/// Requests read the monotonic clock once when they arrive; their wall-clock stamp is derived
/// from it rather than read a second time. The offset between the two clocks is read again at
/// most once a second, so a stepped wall clock shows within a second.
pub fn unix_ms_at(at: tokio::time::Instant) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    // Wall-clock milliseconds minus monotonic milliseconds since ORIGIN, and when it was read
    // (monotonic milliseconds + 1; 0 before the first read).
    static OFFSET: AtomicU64 = AtomicU64::new(0);
    static READ_AT: AtomicU64 = AtomicU64::new(0);
    let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
    let mono = at.saturating_duration_since(origin).as_millis() as u64;
    let read_at = READ_AT.load(Ordering::Relaxed);
    if read_at == 0 || mono.saturating_sub(read_at - 1) >= 1000 {
        let offset = unix_now_ms().wrapping_sub(origin.elapsed().as_millis() as u64);
        OFFSET.store(offset, Ordering::Relaxed);
        READ_AT.store(mono + 1, Ordering::Relaxed);
        return mono.wrapping_add(offset);
    }
    mono.wrapping_add(OFFSET.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    #[test]
    fn wall_clock_derived_from_an_instant_follows_both_clocks() {
        let now = Instant::now();
        let wall = super::unix_now_ms();
        let derived = super::unix_ms_at(now);
        assert!(derived.abs_diff(wall) < 50, "derived {derived}, read {wall}");
        // A later instant maps to a later wall time by the same amount.
        let later = super::unix_ms_at(now + Duration::from_secs(5));
        assert!(later.abs_diff(derived + 5000) < 50, "{later} vs {derived} + 5000");
        // Past the second the offset is read again: still the wall clock's reading.
        let again = super::unix_ms_at(Instant::now());
        assert!(again.abs_diff(super::unix_now_ms()) < 50);
    }
}
