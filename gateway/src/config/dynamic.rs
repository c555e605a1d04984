//! The compiled, reloadable part of the config: a [`Snapshot`].
//!
//! Built from a validated [`Config`] (reading certificate and CA files), published through an
//! `ArcSwap`, and taken once by each request, which keeps it to its end. Pools whose config did
//! not change are carried over from the previous snapshot, so a reload keeps their pooled
//! connections and passive-health state.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Config, ConfigError, ConfigErrors};
use crate::identity::provider::Provider;
use crate::identity::session::CookieKey;
use crate::pipeline::route::{Route, RouteMetrics, Router};
use crate::telemetry::{CertificateLabels, Metrics};
use crate::upstream::Pool;

/// Everything a request needs from the config.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases with every successful load.
    pub generation: u64,
    /// The validated config.
    pub config: Arc<Config>,
    /// Routes.
    pub router: Router,
    /// Pools by name.
    pub pools: HashMap<String, Arc<Pool>>,
    /// Identity providers by name.
    pub providers: HashMap<String, Arc<Provider>>,
    /// Signs identity assertions for upstreams, when enabled (kept across reloads while its
    /// config is unchanged, so its keys do not change).
    pub signer: Option<Arc<crate::identity::assertion::Signer>>,
    /// The cookie key from `identity.sessions.key_file`; `None`: the process's random key.
    pub cookie_key: Option<Arc<CookieKey>>,
    /// Trace exporting (kept across reloads while its config is unchanged).
    pub tracing: Arc<crate::telemetry::trace::Tracing>,
    /// Whether some route signs browsers in (the gateway then answers its own paths).
    pub login_enabled: bool,
    /// Whether some route has a CORS policy (requests' `Origin` is then kept for the answer).
    pub cors_enabled: bool,
    /// Whether some route compresses answers (requests' `Accept-Encoding` is then read).
    pub compress_enabled: bool,
    /// Request headers only the gateway writes (identity headers, the assertion header),
    /// removed from what clients send.
    pub owned_headers: Vec<http::HeaderName>,
    /// TLS server configs by listener name.
    pub tls: HashMap<String, Arc<rustls::ServerConfig>>,
    /// QUIC server configs by listener name (listeners with `quic`).
    pub quic: HashMap<String, Arc<quinn::ServerConfig>>,
    /// Metric handles for requests that matched no route.
    pub unrouted: Arc<RouteMetrics>,
    /// Plain listeners that redirect to HTTPS, with the port and their redirect counter.
    redirects: HashMap<String, (u16, prometheus_client::metrics::counter::Counter)>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles `config`; `file` names it in errors. Reuses unchanged pools from `previous`.
    pub fn build(
        file: &str,
        config: Config,
        metrics: &Metrics,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Vec::new();
        let mut tls = HashMap::new();
        let mut quic = HashMap::new();
        for l in &config.listeners {
            if let Some(t) = &l.tls {
                match crate::listen::tls::server_config(file, t) {
                    Ok(lt) => {
                        if let Some(q) = &l.quic {
                            match crate::listen::tls::quic_config(&lt.config, q) {
                                Ok(qc) => {
                                    quic.insert(l.name.clone(), Arc::new(qc));
                                }
                                Err(reason) => errors.push(ConfigError {
                                    file: file.to_string(),
                                    line: 1,
                                    column: 1,
                                    field: format!("listeners.{}.quic", l.name),
                                    reason,
                                }),
                            }
                        }
                        tls.insert(l.name.clone(), lt);
                    }
                    Err(e) => errors.extend(e),
                }
            }
        }
        let mut pools = HashMap::new();
        for (i, u) in config.upstreams.iter().enumerate() {
            let reused = previous.and_then(|p| p.pools.get(&u.name)).filter(|p| p.config == *u);
            match reused {
                Some(p) => {
                    pools.insert(u.name.clone(), p.clone());
                }
                None => match Pool::build(file, i, u, metrics) {
                    Ok(p) => {
                        pools.insert(u.name.clone(), p);
                    }
                    Err(e) => errors.extend(e),
                },
            }
        }
        let mut providers = HashMap::new();
        for (i, pc) in config.providers.iter().enumerate() {
            match previous
                .and_then(|p| p.providers.get(&pc.name))
                .filter(|p| p.config == *pc)
            {
                Some(p) => {
                    providers.insert(pc.name.clone(), p.clone());
                }
                None => {
                    match crate::upstream::client_tls(
                        file,
                        true,
                        &pc.ca_files,
                        None,
                        &format!("identity.providers[{i}]"),
                    ) {
                        Ok(tls) => {
                            let secret = match pc.login.as_ref().map(|l| &l.client_secret) {
                                None => None,
                                Some(super::Secret::Inline(s)) => Some(s.clone()),
                                Some(super::Secret::File(path, at)) => match std::fs::read_to_string(path) {
                                    Ok(s) => Some(s.trim_end().to_string()),
                                    Err(e) => {
                                        errors.push(ConfigError {
                                            file: file.to_string(),
                                            line: at.line,
                                            column: at.column,
                                            field: format!("identity.providers[{i}].login.client_secret_file"),
                                            reason: format!("cannot read {}: {e}", path.display()),
                                        });
                                        continue;
                                    }
                                },
                            };
                            let p = Provider::new(pc.clone(), secret, Arc::new(tls), metrics);
                            if tokio::runtime::Handle::try_current().is_ok() {
                                p.start();
                            }
                            providers.insert(pc.name.clone(), p);
                        }
                        Err(e) => errors.extend(e),
                    }
                }
            }
        }
        let cookie_key = match &config.sessions.key_file {
            None => None,
            Some((path, at)) => {
                let key = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|t| CookieKey::from_base64(&t));
                match key {
                    Ok(k) => Some(Arc::new(k)),
                    Err(reason) => {
                        errors.push(ConfigError {
                            file: file.to_string(),
                            line: at.line,
                            column: at.column,
                            field: "identity.sessions.key_file".into(),
                            reason,
                        });
                        None
                    }
                }
            }
        };
        let tracing = match previous.filter(|p| p.tracing.config == config.telemetry.traces) {
            Some(p) => Some(p.tracing.clone()),
            None => match crate::telemetry::trace::Tracing::build(&config.telemetry.traces) {
                Ok(t) => Some(Arc::new(t)),
                Err(reason) => {
                    errors.push(ConfigError {
                        file: file.to_string(),
                        line: 1,
                        column: 1,
                        field: "telemetry.traces".into(),
                        reason,
                    });
                    None
                }
            },
        };
        let (Some(tracing), true) = (tracing, errors.is_empty()) else {
            return Err(ConfigErrors(errors));
        };
        let signer = match &config.assertion {
            None => None,
            Some(a) => match previous
                .filter(|p| p.config.assertion.as_ref() == Some(a))
                .and_then(|p| p.signer.clone())
            {
                Some(s) => Some(s),
                None => crate::identity::assertion::Signer::new(a.issuer.clone(), a.ttl, a.rotate_every).map(Arc::new),
            },
        };
        let mut routes = Vec::new();
        for r in &config.routes {
            // Validation guarantees the pool exists when named.
            let pool = match &r.upstream {
                Some(name) => match pools.get(name) {
                    Some(p) => Some(p.clone()),
                    None => continue,
                },
                None => None,
            };
            let route_metrics = Arc::new(RouteMetrics::new(&r.name, metrics));
            if let Some(t) = &r.trust {
                route_metrics.init_trust(t.fail_closed);
            }
            routes.push(Arc::new(Route {
                name: r.name.as_str().into(),
                prefix: r.path_prefix.clone(),
                methods: r.methods.clone(),
                headers: r.headers.clone(),
                pool,
                direct: r.direct.clone(),
                split: {
                    // Cumulative shares: a request's draw in [0, 100) picks the first above it.
                    let mut upto = 0.0;
                    r.split
                        .iter()
                        .filter_map(|(name, pct)| {
                            upto += pct;
                            let pool = pools.get(name)?.clone();
                            let counter = metrics
                                .split_requests
                                .get_or_create(&crate::telemetry::SplitLabels {
                                    route: r.name.clone(),
                                    pool: name.clone(),
                                })
                                .clone();
                            Some((upto, pool, counter))
                        })
                        .collect()
                },
                split_by: r.split_by,
                max_body_bytes: r.max_body_bytes,
                bearer: r.bearer.as_ref().and_then(|b| providers.get(b).cloned()),
                login: r.login.as_ref().and_then(|b| providers.get(b).cloned()),
                requirements: r.requirements.clone(),
                trust: r.trust.clone(),
                early_data: r.early_data,
                // Kept across reloads while unchanged, so a reload forgets no client's count.
                rate_limit: r.rate_limit.as_ref().map(|rl| {
                    previous
                        .and_then(|p| p.router.by_name(&r.name))
                        .and_then(|old| old.rate_limit.clone())
                        .filter(|old| old.config == *rl)
                        .unwrap_or_else(|| {
                            let route = crate::telemetry::RouteLabels { route: r.name.clone() };
                            Arc::new(crate::pipeline::ratelimit::RateLimit::new(
                                rl.clone(),
                                metrics.rate_limited.get_or_create(&route).clone(),
                                metrics.rate_limit_untracked.get_or_create(&route).clone(),
                            ))
                        })
                }),
                cors: r.cors.as_ref().map(|c| {
                    let preflights = ["allowed", "refused"].map(|result| {
                        metrics
                            .cors_preflights
                            .get_or_create(&crate::telemetry::RouteResultLabels {
                                route: r.name.clone(),
                                result,
                            })
                            .clone()
                    });
                    Arc::new(crate::pipeline::cors::Cors::new(c.clone(), preflights))
                }),
                rewrite_prefix: r.rewrite_prefix.clone(),
                clients: r.clients.clone(),
                compress: r.compress.as_ref().map(|c| {
                    let route = crate::telemetry::RouteLabels { route: r.name.clone() };
                    crate::pipeline::compress::Compress::new(
                        c.clone(),
                        metrics.compressed_responses.get_or_create(&route).clone(),
                    )
                }),
                client_certificate: r.client_certificate,
                request_timeout: r.request_timeout,
                request_headers: r.request_headers.clone(),
                response_headers: r.response_headers.clone(),
                metrics: route_metrics,
            }));
        }
        let login_enabled = config.routes.iter().any(|r| r.login.is_some());
        let cors_enabled = config.routes.iter().any(|r| r.cors.is_some());
        let compress_enabled = config.routes.iter().any(|r| r.compress.is_some());
        let owned_headers = config
            .identity_headers
            .names()
            .chain(config.assertion.as_ref().map(|a| &a.header))
            .cloned()
            .collect();
        metrics.tls_certificate_expiry.clear();
        let tls = tls
            .into_iter()
            .map(|(listener, lt)| {
                for (certificate, t) in &lt.expiries {
                    let labels = CertificateLabels {
                        listener: listener.clone(),
                        certificate: certificate.clone(),
                    };
                    metrics.tls_certificate_expiry.get_or_create(&labels).set(*t);
                }
                (listener, lt.config)
            })
            .collect();
        let router = Router::new(&config.routes, routes);
        let redirects = config
            .listeners
            .iter()
            .filter_map(|l| {
                let port = l.redirect_to_https?;
                let counter = metrics
                    .https_redirects
                    .get_or_create(&crate::telemetry::ListenerLabels {
                        listener: l.name.clone(),
                    })
                    .clone();
                Some((l.name.clone(), (port, counter)))
            })
            .collect();
        Ok(Snapshot {
            generation: previous.map(|p| p.generation + 1).unwrap_or(1),
            config: Arc::new(config),
            router,
            pools,
            providers,
            signer,
            cookie_key,
            tracing,
            login_enabled,
            cors_enabled,
            compress_enabled,
            owned_headers,
            tls,
            quic,
            unrouted: Arc::new(RouteMetrics::new("none", metrics)),
            redirects,
        })
    }

    /// The HTTPS port `listener` redirects every request to, if it does, and the counter of
    /// those redirects.
    pub fn https_redirect(&self, listener: &str) -> Option<(u16, &prometheus_client::metrics::counter::Counter)> {
        if self.redirects.is_empty() {
            return None;
        }
        self.redirects.get(listener).map(|(port, counter)| (*port, counter))
    }
}
