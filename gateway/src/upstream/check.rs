//! Active health checks: with `health.check`, every endpoint of the pool gets a `GET` of the
//! check's path every `interval`, on a fresh connection. `unhealthy_after` failures in a row (no
//! connection, no answer within `timeout`, or a status other than 2xx and 3xx) take the
//! endpoint out of rotation; `healthy_after` passes in a row bring it back. This runs beside
//! passive health (ejection on failed requests) and until the pool is dropped by a reload.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{client, Endpoint, Pool};
use crate::config::HealthCheck;
use crate::error::BoxError;

/// Starts checking `pool`'s endpoints, if it has a check configured.
pub(super) fn spawn(pool: &Arc<Pool>) {
    let Some(check) = pool.config.health.check.clone() else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(pool);
    rt.spawn(run(weak, check));
}

async fn run(weak: Weak<Pool>, check: HealthCheck) {
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = weak.upgrade() else { return };
        // Every endpoint at once, so one that hangs delays no other.
        let mut probes = tokio::task::JoinSet::new();
        for (i, e) in pool.endpoints.iter().enumerate() {
            let (e, tls, path) = (e.clone(), pool.tls.clone(), check.path.clone());
            let (h2, timeout) = (pool.h2(), check.timeout);
            probes.spawn(async move { (i, client::probe(&e, tls, h2, &path, timeout).await) });
        }
        while let Some(done) = probes.join_next().await {
            if let Ok((i, result)) = done {
                pool.record_check(&pool.endpoints[i], &check, result);
            }
        }
    }
}

// === impl Pool ===

impl Pool {
    /// Counts one check of `e` and moves it out of or back into rotation.
    fn record_check(&self, e: &Endpoint, check: &HealthCheck, result: Result<http::StatusCode, BoxError>) {
        let failure = match &result {
            Ok(s) if s.is_success() || s.is_redirection() => None,
            Ok(s) => Some(format!("answered {}", s.as_u16())),
            Err(err) => Some(err.to_string()),
        };
        self.checks[usize::from(failure.is_some())].inc();
        let down = e.down.load(Ordering::Relaxed);
        // The streak counts results against the endpoint's state; a result that agrees with it
        // ends the streak.
        if failure.is_some() == down {
            e.check_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = e.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if down {
            check.healthy_after
        } else {
            check.unhealthy_after
        };
        if streak < needed {
            return;
        }
        e.check_streak.store(0, Ordering::Relaxed);
        e.down.store(!down, Ordering::Relaxed);
        if down {
            self.down_gauge.dec();
            tracing::info!(pool = %self.config.name, endpoint = %e.base, passes = streak, "endpoint passed its health checks again");
        } else {
            self.down_gauge.inc();
            tracing::warn!(
                pool = %self.config.name,
                endpoint = %e.base,
                failures = streak,
                error = failure.as_deref().unwrap_or(""),
                "endpoint failed its health checks; out of rotation"
            );
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The gauge is shared by name with the pool that replaces this one (reload).
        let down = self.endpoints.iter().filter(|e| e.down.load(Ordering::Relaxed)).count();
        self.down_gauge.dec_by(down as i64);
    }
}
