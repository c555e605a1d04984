//! The compiled, reloadable part of the config: a [`Snapshot`].
//!
//! Built from a validated [`Config`] (reading certificate and CA files), published through an
//! `ArcSwap`, and taken once by each request, which keeps it to its end. Pools whose config did
//! not change are carried over from the previous snapshot, so a reload keeps their pooled
//! connections and passive-health state.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Config, ConfigErrors};
use crate::identity::provider::Provider;
use crate::pipeline::route::{Route, RouteMetrics, Router};
use crate::telemetry::Metrics;
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
    /// TLS server configs by listener name.
    pub tls: HashMap<String, Arc<rustls::ServerConfig>>,
    /// Metric handles for requests that matched no route.
    pub unrouted: Arc<RouteMetrics>,
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
        for l in &config.listeners {
            if let Some(t) = &l.tls {
                match crate::listen::tls::server_config(file, t) {
                    Ok(sc) => {
                        tls.insert(l.name.clone(), sc);
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
                    match crate::upstream::client_tls(file, true, &pc.ca_files, &format!("identity.providers[{i}]")) {
                        Ok(tls) => {
                            let p = Provider::new(pc.clone(), Arc::new(tls), metrics);
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
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
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
            let Some(pool) = pools.get(&r.upstream) else {
                continue; // validation guarantees the pool exists
            };
            routes.push(Arc::new(Route {
                name: r.name.clone(),
                prefix: r.path_prefix.clone(),
                methods: r.methods.clone(),
                pool: pool.clone(),
                max_body_bytes: r.max_body_bytes,
                bearer: r.bearer.as_ref().and_then(|b| providers.get(b).cloned()),
                requirements: r.requirements.clone(),
                metrics: Arc::new(RouteMetrics::new(&r.name, metrics)),
            }));
        }
        let router = Router::new(&config.routes, routes);
        Ok(Snapshot {
            generation: previous.map(|p| p.generation + 1).unwrap_or(1),
            config: Arc::new(config),
            router,
            pools,
            providers,
            signer,
            tls,
            unrouted: Arc::new(RouteMetrics::new("none", metrics)),
        })
    }
}
