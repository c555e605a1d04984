//! Upstream pools: endpoints, load balancing, passive health, and pooled connections.
//!
//! Sits after routing in the data path: the pipeline asks a [`Pool`] for an endpoint
//! ([`Pool::pick`]), sends on one of its connections ([`Pool::send`], `client.rs`), and reports
//! the outcome back ([`Pool::record`]). An endpoint that fails `consecutive_failures` times in a
//! row (connect failure, timeout, broken exchange, or 5xx) is ejected for `ejection_time`; the
//! rest keep serving. With `health.check`, active checks (`check.rs`) also take endpoints out of
//! rotation and bring them back. A request no endpoint would take a connection for moves on to
//! the next, up to `connect_attempts`.

mod check;
pub mod client;
pub mod h1;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::config::{Balance, ConfigError, UpstreamConfig};
use crate::telemetry::{Metrics, PoolLabels, UpstreamErrorLabels};

/// One endpoint of a pool.
#[derive(Debug)]
pub struct Endpoint {
    /// `scheme://authority`.
    pub base: String,
    /// Host to connect to (brackets removed from IPv6 literals).
    host: String,
    port: u16,
    /// TLS server name, for `https://` endpoints.
    server_name: Option<rustls::pki_types::ServerName<'static>>,
    /// `host:port` as written, as a `Host` value (for pools with `host: endpoint`).
    host_value: Option<http::HeaderValue>,
    idle: client::IdleStack,
    /// The shared connection of an HTTP/2 pool.
    h2: tokio::sync::Mutex<Option<client::H2Sender>>,
    max_idle: usize,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since the pool's epoch until which the endpoint is ejected; 0 = not ejected.
    ejected_until: AtomicU64,
    /// Out of rotation by active health checks.
    down: AtomicBool,
    /// Active checks failed in a row (while up) or passed in a row (while down).
    check_streak: AtomicU32,
}

/// Upstream error kinds (bounded label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// TCP or TLS connect failed.
    Connect,
    /// No response head in time.
    Timeout,
    /// Broken exchange.
    Protocol,
    /// The endpoint answered 5xx.
    Status5xx,
}

/// Why no endpoint could take a request (the index of its upstream error kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Every endpoint is ejected or down.
    NoHealthy = 4,
    /// Every usable endpoint has `max_in_flight_per_endpoint` requests in flight.
    Overloaded = 5,
}

/// Why a request is tried again (after a failed exchange).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connection closed or broke before a response head came.
    Reset = 1,
    /// The answer's status is one the pool retries.
    Status = 2,
}

// === impl RetryReason ===

impl RetryReason {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Reset => "reset",
            RetryReason::Status => "status",
        }
    }
}

/// A pool of endpoints.
#[derive(Debug)]
pub struct Pool {
    /// The config it was built from (pools are reused across reloads when unchanged).
    pub config: UpstreamConfig,
    /// Endpoints.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// TLS towards `https://` endpoints.
    tls: Option<Arc<rustls::ClientConfig>>,
    rr: AtomicUsize,
    epoch: Instant,
    ejected_gauge: Gauge,
    ejections: Counter,
    /// Retries by reason: connect, reset, status.
    retries: [Counter; 3],
    down_gauge: Gauge,
    /// Active checks by result: passed, failed.
    checks: [Counter; 2],
    errors: [Counter; 6],
}

/// Keeps an endpoint's in-flight count raised while a request is outstanding.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Endpoint ===

impl Endpoint {
    fn new(base: &str, max_idle: usize, idle_gauge: &Gauge, opened: &Counter) -> Option<Endpoint> {
        let uri: http::Uri = base.parse().ok()?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let server_name = if https {
            rustls::pki_types::ServerName::try_from(host.clone()).ok()
        } else {
            None
        };
        Some(Endpoint {
            host_value: http::HeaderValue::from_str(authority_of(base)).ok(),
            base: base.to_string(),
            host,
            port,
            server_name,
            idle: client::IdleStack::new(idle_gauge.clone(), opened.clone()),
            h2: tokio::sync::Mutex::new(None),
            max_idle,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            check_streak: AtomicU32::new(0),
        })
    }

    /// `host:port` (as written in the endpoint URL).
    pub(super) fn authority(&self) -> &str {
        authority_of(&self.base)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Idle pooled connections now.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }
}

/// `host:port` of an endpoint URL, as written.
fn authority_of(base: &str) -> &str {
    base.split_once("://").map_or(base, |(_, a)| a)
}

fn system_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "could not load a system root certificate");
        }
        loaded.certs
    })
}

/// The roots of trust from the system (when asked) and the given CA files; errors name the
/// files' config positions under `field` (`…ca_files[j]`).
pub fn roots(
    file: &str,
    system: bool,
    ca_files: &[(std::path::PathBuf, crate::config::Pos)],
    field: &str,
) -> Result<rustls::RootCertStore, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut roots = rustls::RootCertStore::empty();
    if system {
        let (_, ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
        if ignored > 0 {
            tracing::debug!(ignored, "system root certificates skipped");
        }
    }
    for (j, (path, at)) in ca_files.iter().enumerate() {
        let error = |reason: String| ConfigError::at(file, *at, format!("{field}.ca_files[{j}]"), reason);
        match crate::listen::tls::read_certs(path) {
            Ok(certs) => {
                for c in certs {
                    if let Err(e) = roots.add(c) {
                        errors.push(error(format!("{}: not a usable CA certificate: {e}", path.display())));
                    }
                }
            }
            Err(reason) => errors.push(error(reason)),
        }
    }
    if errors.is_empty() {
        Ok(roots)
    } else {
        Err(errors)
    }
}

/// A TLS client config trusting the system roots (when asked) and the given CA files, and
/// presenting `identity` to servers that ask for a client certificate; errors name the files'
/// config positions under `field`.
pub fn client_tls(
    file: &str,
    system: bool,
    ca_files: &[(std::path::PathBuf, crate::config::Pos)],
    identity: Option<&crate::config::CertConfig>,
    field: &str,
) -> Result<rustls::ClientConfig, Vec<ConfigError>> {
    let roots = roots(file, system, ca_files, field);
    let identity = identity.map(|c| crate::listen::tls::read_pair(file, c));
    let (roots, identity) = match (roots, identity.transpose()) {
        (Ok(r), Ok(i)) => (r, i),
        (r, i) => return Err(r.err().into_iter().chain(i.err()).flatten().collect()),
    };
    let error = |reason: String| {
        vec![ConfigError::at(
            file,
            crate::config::Pos { line: 1, column: 1 },
            field,
            reason,
        )]
    };
    let builder = rustls::ClientConfig::builder_with_provider(crate::listen::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| error(format!("the client certificate cannot be used: {e}"))),
    }
}

// === impl Pool ===

impl Pool {
    /// Builds a pool: reads CA files and prepares TLS. Errors carry config positions.
    pub fn build(
        file: &str,
        index: usize,
        config: &UpstreamConfig,
        metrics: &Metrics,
    ) -> Result<Arc<Pool>, Vec<ConfigError>> {
        let mut tls = client_tls(
            file,
            config.tls.system_roots,
            &config.tls.ca_files,
            config.tls.client_certificate.as_ref(),
            &format!("upstreams[{index}].tls"),
        )?;
        let pool_label = PoolLabels {
            pool: config.name.clone(),
        };
        let idle_gauge = metrics.upstream_connections_idle.get_or_create(&pool_label).clone();
        let opened = metrics.upstream_connections_opened.get_or_create(&pool_label).clone();
        let endpoints: Vec<Arc<Endpoint>> = config
            .endpoints
            .iter()
            .filter_map(|e| Endpoint::new(e, config.max_idle_per_endpoint, &idle_gauge, &opened).map(Arc::new))
            .collect();
        if config.protocol == crate::config::UpstreamProtocol::Http2 {
            tls.alpn_protocols = vec![b"h2".to_vec()];
        }
        let tls = endpoints.iter().any(|e| e.server_name.is_some()).then(|| Arc::new(tls));
        let err = |kind| {
            metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    pool: config.name.clone(),
                    kind,
                })
                .clone()
        };
        let pool = Arc::new(Pool {
            config: config.clone(),
            endpoints,
            tls,
            rr: AtomicUsize::new(0),
            epoch: Instant::now(),
            ejected_gauge: metrics.endpoints_ejected.get_or_create(&pool_label).clone(),
            ejections: metrics.ejections.get_or_create(&pool_label).clone(),
            retries: ["connect", "reset", "status"].map(|reason| {
                metrics
                    .upstream_retries
                    .get_or_create(&crate::telemetry::RetryLabels {
                        pool: config.name.clone(),
                        reason,
                    })
                    .clone()
            }),
            down_gauge: metrics.endpoints_down.get_or_create(&pool_label).clone(),
            checks: ["pass", "fail"].map(|result| {
                metrics
                    .health_checks
                    .get_or_create(&crate::telemetry::CheckLabels {
                        pool: config.name.clone(),
                        result,
                    })
                    .clone()
            }),
            errors: [
                err("connect"),
                err("timeout"),
                err("protocol"),
                err("status_5xx"),
                err("no_healthy_endpoint"),
                err("overloaded"),
            ],
        });
        // Close idle connections that outlived idle_timeout, until the pool is dropped (reload).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            let every = (config.idle_timeout / 2).max(std::time::Duration::from_millis(500));
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { return };
                    for e in &pool.endpoints {
                        e.idle.prune(pool.config.idle_timeout);
                    }
                }
            });
        }
        check::spawn(&pool);
        Ok(pool)
    }

    /// Sends a request with the fields `added` to `endpoint` on a pooled or (`fresh`, or none
    /// idle) new connection; idle connections are aged as of `now`. With `host: endpoint`, with the endpoint's own
    /// `Host`. (Not an `async fn`: it returns
    /// the client's future as it is, rather than one more state holding the request.)
    pub fn send<'a>(
        &self,
        endpoint: &'a Arc<Endpoint>,
        mut req: http::Request<client::UpstreamBody>,
        added: &'a crate::pipeline::forward::Added,
        fresh: bool,
        now: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Result<client::Sent, client::SendError>> + use<'a> {
        if self.config.host_from_endpoint {
            if let Some(h) = &endpoint.host_value {
                req.headers_mut().insert(http::header::HOST, h.clone());
            }
        }
        client::send(
            endpoint,
            self.tls.clone(),
            self.config.connect_timeout,
            (!fresh).then_some(self.config.idle_timeout),
            self.h2(),
            req,
            added,
            now,
        )
    }

    /// Whether the pool speaks HTTP/2 to its endpoints.
    pub fn h2(&self) -> bool {
        self.config.protocol == crate::config::UpstreamProtocol::Http2
    }

    /// Pool name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Whether `e` is in rotation. The clock is read (once, into `now`) only when some endpoint
    /// looked at has been ejected: picking from a healthy pool reads none.
    fn healthy(&self, e: &Endpoint, now: &std::cell::OnceCell<u64>) -> bool {
        let until = e.ejected_until.load(Ordering::Relaxed);
        (until == 0 || until <= *now.get_or_init(|| self.now_ms())) && !e.down.load(Ordering::Relaxed)
    }

    /// Picks an endpoint by the pool's policy among those not ejected and below
    /// `max_in_flight_per_endpoint`; when none is, says why.
    pub fn pick(&self) -> Result<(Arc<Endpoint>, InFlight), Unavailable> {
        self.pick_avoiding(&[]).ok_or_else(|| {
            let now = std::cell::OnceCell::new();
            if self.endpoints.iter().any(|e| self.healthy(e, &now)) {
                Unavailable::Overloaded
            } else {
                Unavailable::NoHealthy
            }
        })
    }

    /// Takes one of `e`'s in-flight places, if it has one left.
    fn acquire(&self, e: &Arc<Endpoint>) -> Option<(Arc<Endpoint>, InFlight)> {
        let cap = self.config.max_in_flight_per_endpoint;
        if cap == usize::MAX {
            e.in_flight.fetch_add(1, Ordering::Relaxed);
        } else {
            e.in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < cap).then_some(n + 1))
                .ok()?;
        }
        Some((e.clone(), InFlight(e.clone())))
    }

    /// [`Pool::pick`] among the endpoints not in `avoid` (those a request could not connect to).
    pub fn pick_avoiding(&self, avoid: &[Arc<Endpoint>]) -> Option<(Arc<Endpoint>, InFlight)> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let now = std::cell::OnceCell::new();
        let cap = self.config.max_in_flight_per_endpoint;
        let usable = |e: &Arc<Endpoint>| {
            self.healthy(e, &now) && e.in_flight() < cap && !avoid.iter().any(|a| Arc::ptr_eq(a, e))
        };
        let chosen = match self.config.balance {
            Balance::RoundRobin => {
                // A retry continues from where the rotation stands, without taking a turn, so a
                // refusing endpoint costs each request at most one attempt and the rest stay even.
                let start = if avoid.is_empty() {
                    self.rr.fetch_add(1, Ordering::Relaxed)
                } else {
                    self.rr.load(Ordering::Relaxed)
                };
                (0..n).map(|i| &self.endpoints[(start + i) % n]).find(|e| usable(e))
            }
            Balance::LeastInFlight => {
                let a = &self.endpoints[fastrand::usize(..n)];
                let b = &self.endpoints[fastrand::usize(..n)];
                match (usable(a), usable(b)) {
                    (true, true) => Some(if b.in_flight() < a.in_flight() { b } else { a }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Neither sampled endpoint is usable: fall back to the least loaded usable one.
                    (false, false) => self
                        .endpoints
                        .iter()
                        .filter(|e| usable(e))
                        .min_by_key(|e| e.in_flight()),
                }
            }
        };
        // The chosen endpoint may have reached its cap since (another thread took its last
        // place): then the first usable one that still has a place.
        self.acquire(chosen?).or_else(|| {
            self.endpoints
                .iter()
                .filter(|e| usable(e))
                .find_map(|e| self.acquire(e))
        })
    }

    /// After connect failures on each endpoint in `tried` (each already recorded), the next
    /// endpoint to try, when the request has attempts left and an untried endpoint is usable;
    /// counted as a retry.
    pub fn retry_connect(&self, tried: &[Arc<Endpoint>]) -> Option<(Arc<Endpoint>, InFlight)> {
        if tried.len() >= self.config.connect_attempts as usize {
            return None;
        }
        let next = self.pick_avoiding(tried)?;
        self.retries[0].inc();
        Some(next)
    }

    /// After a failed exchange with `failed` (already recorded), the endpoint for the next try
    /// of a request that may be sent again: another usable endpoint when there is one, else
    /// `failed` itself if it is still usable; counted as a retry for `reason`.
    pub fn retry_exchange(&self, failed: &Arc<Endpoint>, reason: RetryReason) -> Option<(Arc<Endpoint>, InFlight)> {
        let next = self
            .pick_avoiding(std::slice::from_ref(failed))
            .or_else(|| self.pick().ok())?;
        self.retries[reason as usize].inc();
        Some(next)
    }

    /// Counts a request refused because no endpoint could take it.
    pub fn record_unavailable(&self, why: Unavailable) {
        self.errors[why as usize].inc();
    }

    /// Reports the outcome of an exchange with `e`.
    pub fn record(&self, e: &Arc<Endpoint>, failure: Option<Failure>) {
        let Some(f) = failure else {
            if e.failures.load(Ordering::Relaxed) != 0 {
                e.failures.store(0, Ordering::Relaxed);
            }
            return;
        };
        self.errors[f as usize].inc();
        let n = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.config.health.consecutive_failures {
            return;
        }
        let now = self.now_ms();
        let cur = e.ejected_until.load(Ordering::Relaxed);
        if cur != 0 && cur > now {
            return; // already ejected
        }
        let until = now + self.config.health.ejection_time.as_millis() as u64;
        if e.ejected_until
            .compare_exchange(cur, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        e.failures.store(0, Ordering::Relaxed);
        if cur == 0 {
            self.ejected_gauge.inc();
        }
        self.ejections.inc();
        tracing::warn!(pool = %self.config.name, endpoint = %e.base, failures = n, ejection_ms = self.config.health.ejection_time.as_millis() as u64, "endpoint ejected");
        let endpoint = e.clone();
        let gauge = self.ejected_gauge.clone();
        let pool = self.config.name.clone();
        let deadline = Instant::now() + self.config.health.ejection_time;
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            if endpoint
                .ejected_until
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                gauge.dec();
                tracing::info!(pool = %pool, endpoint = %endpoint.base, "endpoint ejection ended");
            }
        });
    }
}
