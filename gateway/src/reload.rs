//! Config reload: on SIGHUP, on admin `POST /reload`, and when the file changes.
//!
//! A reload parses and validates the file, refuses changes that need a restart (listener names
//! and addresses, TLS or QUIC on or off, the admin address), builds a new snapshot and swaps it in.
//! Requests in flight keep the snapshot they started with. Any failure leaves the running config
//! serving, is logged with every problem, and is counted.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, ConfigErrors, Snapshot};
use crate::telemetry::ResultLabels;
use crate::Shared;

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// New snapshot generation.
    pub generation: u64,
    /// Human-readable changes, one per line.
    pub changes: Vec<String>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No config file to reload from.
    #[error("the gateway was not started from a config file")]
    NoFile,
    /// The new config is invalid.
    #[error("{0}")]
    Invalid(ConfigErrors),
}

fn static_part(c: &Config) -> Vec<(String, std::net::SocketAddr, bool, bool)> {
    c.listeners
        .iter()
        .map(|l| (l.name.clone(), l.addr, l.tls.is_some(), l.quic.is_some()))
        .collect()
}

/// Lines describing what changed between two configs.
pub fn diff(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let names = |v: &[config::RouteConfig]| v.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    for r in &new.routes {
        match old.routes.iter().find(|o| o.name == r.name) {
            None => out.push(format!("route {} added", r.name)),
            Some(o) if o != r => out.push(format!("route {} changed", r.name)),
            _ => {}
        }
    }
    for n in names(&old.routes) {
        if !new.routes.iter().any(|r| r.name == n) {
            out.push(format!("route {n} removed"));
        }
    }
    for u in &new.upstreams {
        match old.upstreams.iter().find(|o| o.name == u.name) {
            None => out.push(format!("upstream {} added", u.name)),
            Some(o) if o != u => out.push(format!("upstream {} changed", u.name)),
            _ => {}
        }
    }
    for o in &old.upstreams {
        if !new.upstreams.iter().any(|u| u.name == o.name) {
            out.push(format!("upstream {} removed", o.name));
        }
    }
    for l in &new.listeners {
        if let Some(o) = old.listeners.iter().find(|o| o.name == l.name) {
            if o.tls != l.tls {
                out.push(format!("listener {} certificates changed", l.name));
            }
        }
    }
    if old.limits != new.limits {
        out.push("limits changed".into());
    }
    if old.trusted_proxies != new.trusted_proxies {
        out.push("trusted_proxies changed".into());
    }
    if old
        .routes
        .iter()
        .map(|r| &r.name)
        .eq(new.routes.iter().map(|r| &r.name))
        && out.is_empty()
        && old != new
    {
        out.push("settings changed".into());
    }
    out
}

/// Reloads the config file into `shared`.
pub async fn reload(shared: &Arc<Shared>) -> Result<Outcome, ReloadError> {
    let Some(path) = shared.config_path.clone() else {
        return Err(ReloadError::NoFile);
    };
    let _guard = shared.reload_lock.lock().await;
    let result = async {
        let file = path.display().to_string();
        let bytes = tokio::fs::read(&path).await.map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line: 1,
                column: 1,
                field: "(file)".into(),
                reason: format!("cannot read the file: {e}"),
            }])
        })?;
        if let Ok(mut f) = shared.loaded_fingerprint.lock() {
            *f = Some(fingerprint(&bytes));
        }
        let text = String::from_utf8_lossy(&bytes);
        let cfg = config::parse(&file, &text)?;
        let old = shared.snapshot.load_full();
        if static_part(&cfg) != static_part(&old.config) || cfg.admin != old.config.admin {
            return Err(ConfigErrors(vec![ConfigError {
                file,
                line: 1,
                column: 1,
                field: "listeners".into(),
                reason: "listener names, addresses, TLS or QUIC on/off and the admin address need a restart to change"
                    .into(),
            }]));
        }
        let changes = diff(&old.config, &cfg);
        let metrics = shared.metrics.clone();
        let snap = tokio::task::spawn_blocking(move || Snapshot::build(&file, cfg, &metrics, Some(&old)))
            .await
            .map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    file: path.display().to_string(),
                    line: 1,
                    column: 1,
                    field: "(reload)".into(),
                    reason: e.to_string(),
                }])
            })??;
        let generation = snap.generation;
        crate::telemetry::logs::apply(&snap.config.telemetry.log_level);
        let new_tracing = snap.tracing.clone();
        let old = shared.snapshot.swap(Arc::new(snap));
        if !Arc::ptr_eq(&old.tracing, &new_tracing) {
            // Flush what the old exporter holds, off the workers.
            tokio::spawn(old.tracing.clone().shutdown());
        }
        Ok::<_, ConfigErrors>(Outcome { generation, changes })
    }
    .await;
    match result {
        Ok(o) => {
            shared
                .metrics
                .config_reloads
                .get_or_create(&ResultLabels { result: "success" })
                .inc();
            shared.metrics.config_last_success.set(crate::unix_now());
            tracing::info!(generation = o.generation, changes = %o.changes.join("; "), "config reloaded");
            Ok(o)
        }
        Err(e) => {
            shared
                .metrics
                .config_reloads
                .get_or_create(&ResultLabels { result: "failure" })
                .inc();
            for p in &e.0 {
                tracing::error!(file = %p.file, line = p.line, column = p.column, field = %p.field, reason = %p.reason, "config reload rejected; the running config keeps serving");
            }
            Err(ReloadError::Invalid(e))
        }
    }
}

/// A hash of config file content, to notice changes.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Polls the config file and reloads when its content changed and then held still for one
/// interval (editors write in several steps).
pub async fn watch(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let Some(path) = shared.config_path.clone() else { return };
    let read = |p: &std::path::Path| std::fs::read(p).ok().map(|b| fingerprint(&b));
    let loaded = || shared.loaded_fingerprint.lock().ok().and_then(|f| *f);
    let mut pending: Option<u64> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = read(&path);
        if now.is_none() || now == loaded() {
            pending = None;
            continue;
        }
        if pending != now {
            pending = now; // changed: wait one more interval for it to settle
            continue;
        }
        pending = None;
        tracing::info!(file = %path.display(), "config file changed");
        let _ = reload(&shared).await;
    }
}
