//! The embedded baseline engine: a task that takes the tap's receivers, counts request events
//! into the series engine and records them for their entities, and closes a tick with each
//! runtime sample. Each tick's series go to `/metrics` (value, expected value, band and score,
//! labelled by scope and signal), and a sustained runtime anomaly is logged, raised as
//! `gateway_runtime_anomaly`, and captured as a CPU profile; it and sustained route error-ratio
//! and latency anomalies are posted as alerts when `engine.alerts` names receivers (see
//! `alerting`). Every drain (10 ms) the entities touched are scored and the risk view is
//! published for the request path to read. The request path never waits for any of it (see
//! the tap).

use std::sync::Arc;

use baseline_engine::assess::{AssessConfig, Assessor};
use baseline_engine::engine::{Report, SeriesEngine};
use tokio_util::sync::CancellationToken;

use crate::telemetry::SeriesLabels;
use crate::Shared;

/// A runtime series scoring at least this is anomalous.
const ANOMALOUS: f64 = 0.9;
/// The alert a sustained runtime anomaly raises (the name of the Prometheus rule for it).
const RUNTIME_ALERT: &str = "GatewayRuntimeAnomaly";
/// How often the engine drains the tap.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs until `stop`; does nothing when another consumer holds the tap.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let Some((requests, samples)) = shared.tap.take_receiver() else {
        return;
    };
    let cfg = shared.snapshot.load().config.engine.clone();
    let detector = baseline_engine::series::Config {
        warmup: cfg.warmup,
        ..Default::default()
    };
    let max_routes = shared.snapshot.load().config.routes.len() + 16;
    let mut engine = SeriesEngine::new(detector, max_routes);
    let mut assessor = Assessor::new(
        AssessConfig {
            max_entities: cfg.max_entities,
            idle_ms: cfg.entity_idle.as_millis() as u64,
            population: cfg.population,
            ..Default::default()
        },
        shared.risk.clone(),
    );
    let clock = Clock::new(cfg.time_scale);
    let mut service_anomalous = false;
    let mut evicted = 0u64;
    if let Some(path) = &cfg.state_file {
        restore(&shared, &mut engine, &mut assessor, path);
    }
    let mut next_save = tokio::time::Instant::now() + cfg.save_every;
    let mut streak = 0u32;
    let mut raised = false;
    let mut notifier = crate::alerting::Notifier::new(&cfg.alerts, &shared.metrics);
    let mut route_streaks: std::collections::HashMap<(Arc<str>, &'static str), u32> = std::collections::HashMap::new();
    // The engine looks at the tap every few milliseconds instead of waiting on it: a waiting
    // receiver would be woken by every request's event, and that wake-up costs the request
    // path about a microsecond.
    let mut every = tokio::time::interval(DRAIN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if let Some(path) = &cfg.state_file {
                    save(&shared, engine.state(crate::unix_now() as u64, assessor.save()), path).await;
                }
                return;
            }
            _ = every.tick() => {}
        }
        if let Some(path) = cfg
            .state_file
            .as_ref()
            .filter(|_| tokio::time::Instant::now() >= next_save)
        {
            save(&shared, engine.state(crate::unix_now() as u64, assessor.save()), path).await;
            next_save = tokio::time::Instant::now() + cfg.save_every;
        }
        let mut taken = 0u64;
        loop {
            match requests.try_recv() {
                Ok(mut e) => {
                    engine.request(&e);
                    e.unix_ms = clock.engine_ms(e.unix_ms);
                    assessor.observe(&e);
                    taken += 1;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            }
        }
        shared.metrics.engine_events.inc_by(taken);
        let wall = crate::unix_now_ms();
        assessor.publish(wall, clock.engine_ms(wall), service_anomalous);
        {
            let m = &shared.metrics;
            let view = shared.risk.load();
            m.engine_entities.set(view.tracked as i64);
            m.engine_risky_entities.set(view.entities.len() as i64);
            m.engine_model_samples.set(view.model_samples.unwrap_or(0) as i64);
            m.engine_last_publish.set(wall as f64 / 1000.0);
            m.engine_evicted_entities.inc_by(assessor.evicted() - evicted);
            evicted = assessor.evicted();
        }
        while let Ok(sample) = samples.try_recv() {
            let reports = engine.tick(&sample);
            export(&shared, &reports);
            service_anomalous = reports
                .iter()
                .any(|r| &*r.scope == "service" && r.assessment.score >= ANOMALOUS);
            let worst = reports
                .iter()
                .filter(|r| &*r.scope == "runtime")
                .max_by(|a, b| a.assessment.score.total_cmp(&b.assessment.score));
            let score = worst.map(|r| r.assessment.score).unwrap_or(0.0);
            shared.metrics.runtime_anomaly_score.set(score);
            streak = if score >= ANOMALOUS { streak + 1 } else { 0 };
            if streak >= cfg.sustained && !raised {
                raised = true;
                shared.metrics.runtime_anomaly.set(1);
                shared.metrics.runtime_anomalies.inc();
                let signals: Vec<String> = reports
                    .iter()
                    .filter(|r| &*r.scope == "runtime" && r.assessment.score >= ANOMALOUS)
                    .map(|r| {
                        format!(
                            "{}={:.6} (expected {:.6}..{:.6})",
                            r.signal,
                            r.value,
                            r.assessment.lower.max(0.0),
                            r.assessment.upper
                        )
                    })
                    .collect();
                tracing::warn!(ticks = streak, signals = %signals.join(", "), "runtime anomaly");
                crate::telemetry::profile::capture_profile(&shared, "runtime_anomaly");
                notifier.fire(
                    RUNTIME_ALERT,
                    &[("severity", "ticket")],
                    &[
                        ("summary", format!("Gateway runtime anomalous on {}", cfg.alerts.instance)),
                        (
                            "description",
                            format!(
                                "The baseline engine raised a sustained runtime anomaly on {}: {} out of their learned band for {streak} ticks in a row. A CPU profile was captured into telemetry.profiles.dir.",
                                cfg.alerts.instance,
                                signals.join(", ")
                            ),
                        ),
                        ("runbook_url", "docs/runbooks/runtime-anomaly.md".into()),
                    ],
                    crate::unix_now_ms(),
                );
            } else if streak == 0 && raised {
                raised = false;
                shared.metrics.runtime_anomaly.set(0);
                tracing::info!("runtime anomaly ended");
                notifier.resolve(RUNTIME_ALERT, &[("severity", "ticket")], crate::unix_now_ms());
            }
            route_alerts(&mut notifier, &mut route_streaks, &reports, cfg.sustained);
        }
        notifier.flush(crate::unix_now_ms());
    }
}

/// The entity clock: the wall clock, or one running `scale` times faster from the start (for
/// simulations that compress hours into minutes).
struct Clock {
    start_ms: u64,
    scale: f64,
}

impl Clock {
    fn new(scale: f64) -> Clock {
        Clock {
            start_ms: crate::unix_now_ms(),
            scale,
        }
    }

    fn engine_ms(&self, wall_ms: u64) -> u64 {
        if self.scale == 1.0 {
            return wall_ms;
        }
        let since = wall_ms.saturating_sub(self.start_ms) as f64;
        self.start_ms + (since * self.scale) as u64
    }
}

fn count(shared: &Shared, op: &'static str, result: &'static str) {
    shared
        .metrics
        .engine_state
        .get_or_create(&crate::telemetry::StateLabels { op, result })
        .inc();
}

/// Loads the learned state; a missing file means learning from scratch, a bad one is
/// reported and learning starts from scratch too.
fn restore(shared: &Shared, engine: &mut SeriesEngine, assessor: &mut Assessor, path: &std::path::Path) {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            count(shared, "load", "missing");
            tracing::info!(file = %path.display(), "no learned state yet; learning from scratch");
        }
        Err(e) => {
            count(shared, "load", "failed");
            tracing::warn!(file = %path.display(), error = %e, "learned state not readable; learning from scratch");
        }
        Ok(bytes) => match engine.restore(&bytes) {
            Ok(restored) => {
                count(shared, "load", "ok");
                let entities = assessor.restore(restored.entities);
                tracing::info!(file = %path.display(), series = restored.series, entities, "learned state restored");
            }
            Err(e) => {
                count(shared, "load", "corrupt");
                tracing::warn!(file = %path.display(), error = %e, "learned state refused; learning from scratch");
            }
        },
    }
}

/// Writes the learned state atomically (a temporary file renamed over the old one). The
/// serializing and writing happen on a blocking thread: a state with many entities takes a
/// while, and a runtime worker must not spend it.
async fn save(shared: &Shared, state: baseline_engine::engine::State, path: &std::path::Path) {
    let (file, tmp) = (path.to_path_buf(), path.with_extension("tmp"));
    let written = tokio::task::spawn_blocking(move || {
        let bytes = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &file))
    })
    .await;
    let result = written.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match result {
        Ok(()) => count(shared, "save", "ok"),
        Err(e) => {
            count(shared, "save", "failed");
            tracing::warn!(file = %path.display(), error = %e, "learned state not written");
        }
    }
}

/// Raises a route's error-ratio or latency alert once its series scored anomalous for
/// `sustained` ticks in a row, and resolves it at the first tick back in its band: the engine's
/// side of the `GatewayRouteErrorAnomaly` and `GatewayRouteLatencyAnomaly` rules.
fn route_alerts(
    notifier: &mut crate::alerting::Notifier,
    streaks: &mut std::collections::HashMap<(Arc<str>, &'static str), u32>,
    reports: &[Report],
    sustained: u32,
) {
    let now = crate::unix_now_ms();
    for r in reports.iter().filter(|r| r.scope.starts_with("route:")) {
        let (name, objective, what) = match r.signal {
            "error_ratio" => ("GatewayRouteErrorAnomaly", "availability", "The share of 5xx answers"),
            "latency_p95" => ("GatewayRouteLatencyAnomaly", "latency", "The p95 latency"),
            _ => continue,
        };
        let labels = [
            ("severity", "ticket"),
            ("objective", objective),
            ("scope", &*r.scope),
            ("signal", r.signal),
        ];
        let streak = streaks.entry((r.scope.clone(), r.signal)).or_insert(0);
        if r.assessment.score < ANOMALOUS {
            *streak = 0;
            notifier.resolve(name, &labels, now);
            continue;
        }
        *streak += 1;
        if *streak >= sustained && !notifier.is_firing(name, &labels) {
            let kind = if objective == "latency" {
                "Latency"
            } else {
                "Error ratio"
            };
            notifier.fire(
                name,
                &labels,
                &[
                    ("summary", format!("{kind} of {} anomalous", r.scope)),
                    (
                        "description",
                        format!(
                            "{what} on {} has been outside the band the baseline engine learned for it for {streak} ticks (value {:.4}, expected {:.4} to {:.4}, score {:.2}).",
                            r.scope,
                            r.value,
                            r.assessment.lower.max(0.0),
                            r.assessment.upper,
                            r.assessment.score
                        ),
                    ),
                    ("runbook_url", "docs/runbooks/route-anomaly.md".into()),
                ],
                now,
            );
        }
    }
}

fn export(shared: &Shared, reports: &[Report]) {
    let m = &shared.metrics;
    for r in reports {
        let l = SeriesLabels {
            scope: r.scope.to_string(),
            signal: r.signal,
        };
        m.baseline_value.get_or_create(&l).set(r.value);
        m.baseline_expected.get_or_create(&l).set(r.assessment.expected);
        m.baseline_lower.get_or_create(&l).set(r.assessment.lower);
        m.baseline_upper.get_or_create(&l).set(r.assessment.upper);
        m.baseline_score.get_or_create(&l).set(r.assessment.score);
    }
}
