//! Series baselines for the service, each route, and the runtime: request events are counted
//! into the current tick's windows (O(1) each), and every runtime sample closes the tick: each
//! series' value for the tick is scored by its own [`Detector`] and learned.
//!
//! Series (bounded: fixed names, plus three per route of the config):
//! - `service` and `route:<name>`: `request_rate` (requests per second), `error_ratio` (share
//!   answered 5xx), `latency_p95` (seconds, from a bounded sample of the tick);
//! - `runtime`: `alive_tasks`, `busy_ratio`, `mean_poll`, `scheduled` (mean time a request
//!   task waited for a worker), `blocking_threads`, `blocking_queue`, `global_queue`,
//!   `slow_polls`, `tap_drops`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{RequestEvent, RuntimeSample};
use crate::series::{Assessment, Config, Detector};

/// Latencies kept per window and tick (reservoir sample); bounds memory and the quantile's cost.
const LATENCY_SAMPLE: usize = 256;

/// One series' state at the end of a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `service`, `route:<name>` or `runtime`.
    pub scope: Arc<str>,
    /// The signal's name.
    pub signal: &'static str,
    /// Its value over the tick.
    pub value: f64,
    /// What the detector says of it.
    pub assessment: Assessment,
}

#[derive(Debug, Default)]
struct Window {
    requests: u64,
    errors: u64,
    latencies: Vec<f64>,
    seen: u64,
    rng: u64,
}

// === impl Window ===

impl Window {
    fn add(&mut self, e: &RequestEvent) {
        self.requests += 1;
        if e.status >= 500 {
            self.errors += 1;
        }
        let latency = e.total.as_secs_f64();
        self.seen += 1;
        if self.latencies.len() < LATENCY_SAMPLE {
            self.latencies.push(latency);
        } else {
            // Reservoir sampling: every event of the tick equally likely to be kept.
            self.rng = self
                .rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let slot = (self.rng >> 33) % self.seen;
            if let Some(x) = self.latencies.get_mut(slot as usize) {
                *x = latency;
            }
        }
    }

    /// Rate, error ratio and p95 latency over `secs`; then empties the window.
    fn close(&mut self, secs: f64) -> (f64, Option<f64>, Option<f64>) {
        let rate = self.requests as f64 / secs.max(1e-3);
        let errors = (self.requests > 0).then(|| self.errors as f64 / self.requests as f64);
        let p95 = (!self.latencies.is_empty()).then(|| {
            self.latencies.sort_by(|a, b| a.total_cmp(b));
            let i = ((self.latencies.len() as f64 * 0.95).ceil() as usize).clamp(1, self.latencies.len()) - 1;
            self.latencies[i]
        });
        self.requests = 0;
        self.errors = 0;
        self.seen = 0;
        self.latencies.clear();
        (rate, errors, p95)
    }
}

/// Every signal name, so restored state maps back onto the engine's own names.
pub const SIGNALS: [&str; 12] = [
    "request_rate",
    "error_ratio",
    "latency_p95",
    "alive_tasks",
    "busy_ratio",
    "mean_poll",
    "scheduled",
    "blocking_threads",
    "blocking_queue",
    "global_queue",
    "slow_polls",
    "tap_drops",
];

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// Learned state as written to disk.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// When it was written, Unix seconds.
    pub saved_unix: u64,
    /// Every series' detector.
    pub series: Vec<SeriesState>,
    /// Every tracked entity's habits (absent in files from before entities were kept).
    #[serde(default)]
    pub entities: Vec<crate::entity::EntityState>,
}

/// What a restore brought back.
#[derive(Debug, Default, PartialEq)]
pub struct Restored {
    /// Series restored into the engine.
    pub series: usize,
    /// Entities for the entity table (all sane).
    pub entities: Vec<crate::entity::EntityState>,
}

/// One series in the state file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeriesState {
    /// Scope.
    pub scope: String,
    /// Signal.
    pub signal: String,
    /// Its detector.
    pub detector: Detector,
}

/// Why a state file was not restored.
#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    /// Not JSON of the expected shape (corrupt or truncated).
    Malformed(String),
    /// Written by another version.
    Version(u32),
    /// A detector holds numbers that make no sense.
    Insane(String),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Malformed(e) => write!(f, "the state is not readable: {e}"),
            StateError::Version(v) => write!(f, "the state has version {v}, not {STATE_VERSION}"),
            StateError::Insane(s) => write!(f, "the state of {s} is not usable"),
        }
    }
}

impl std::error::Error for StateError {}

/// The smallest spread a signal is given: differences below it are not news, however quiet the
/// signal has been (an idle runtime's busy ratio varies by thousandths).
pub fn floor(signal: &str) -> f64 {
    match signal {
        "request_rate" => 1.0,
        "error_ratio" => 0.01,
        "latency_p95" => 0.001,
        "busy_ratio" => 0.02,
        "mean_poll" => 50e-6,
        "scheduled" => 100e-6,
        "alive_tasks" | "blocking_threads" | "blocking_queue" | "global_queue" | "slow_polls" | "tap_drops" => 1.0,
        _ => 0.0,
    }
}

/// The series engine.
#[derive(Debug)]
pub struct SeriesEngine {
    config: Config,
    service: Window,
    /// Looked up for every request event: the faster hasher (route names come from the
    /// config, not from clients).
    routes: crate::store::Map<Arc<str>, Window>,
    detectors: HashMap<(Arc<str>, &'static str), Detector>,
    max_routes: usize,
    service_scope: Arc<str>,
    runtime_scope: Arc<str>,
}

// === impl SeriesEngine ===

impl SeriesEngine {
    /// An engine whose detectors use `config`, tracking at most `max_routes` routes (beyond
    /// them, a route counts only towards the service).
    pub fn new(config: Config, max_routes: usize) -> SeriesEngine {
        SeriesEngine {
            config,
            service: Window::default(),
            routes: crate::store::Map::default(),
            detectors: HashMap::new(),
            max_routes,
            service_scope: Arc::from("service"),
            runtime_scope: Arc::from("runtime"),
        }
    }

    /// Counts one request into the current tick.
    pub fn request(&mut self, e: &RequestEvent) {
        self.service.add(e);
        if let Some(route) = &e.route {
            if let Some(w) = self.routes.get_mut(route) {
                w.add(e);
            } else if self.routes.len() < self.max_routes {
                let mut w = Window::default();
                w.add(e);
                self.routes.insert(route.clone(), w);
            }
        }
    }

    fn assess(&mut self, scope: &Arc<str>, signal: &'static str, unix_secs: i64, value: f64, out: &mut Vec<Report>) {
        let config = Config {
            min_scale: self.config.min_scale.max(floor(signal)),
            ..self.config
        };
        let d = self
            .detectors
            .entry((scope.clone(), signal))
            .or_insert_with(|| Detector::new(config));
        let assessment = d.observe(unix_secs, value);
        out.push(Report {
            scope: scope.clone(),
            signal,
            value,
            assessment,
        });
    }

    /// Closes the tick that `sample` ends: scores and learns every series, and returns them.
    pub fn tick(&mut self, sample: &RuntimeSample) -> Vec<Report> {
        let now = (sample.unix_ms / 1000) as i64;
        let secs = sample.elapsed.as_secs_f64();
        let mut out = Vec::with_capacity(12 + 3 * self.routes.len());
        let mut traffic = vec![(self.service_scope.clone(), self.service.close(secs))];
        for (name, w) in &mut self.routes {
            traffic.push((Arc::from(format!("route:{name}")), w.close(secs)));
        }
        for (scope, (rate, errors, p95)) in traffic {
            self.assess(&scope, "request_rate", now, rate, &mut out);
            // A tick without requests says nothing about errors or latency.
            if let Some(e) = errors {
                self.assess(&scope, "error_ratio", now, e, &mut out);
            }
            if let Some(l) = p95 {
                self.assess(&scope, "latency_p95", now, l, &mut out);
            }
        }
        let rt = self.runtime_scope.clone();
        let signals: [(&'static str, f64); 9] = [
            ("alive_tasks", sample.alive_tasks as f64),
            ("busy_ratio", sample.busy_ratio),
            ("mean_poll", sample.mean_poll.as_secs_f64()),
            ("scheduled", sample.requests.mean_scheduled.as_secs_f64()),
            ("blocking_threads", sample.blocking_threads as f64),
            ("blocking_queue", sample.blocking_queue as f64),
            ("global_queue", sample.global_queue as f64),
            (
                "slow_polls",
                (sample.connections.slow_polls + sample.requests.slow_polls) as f64,
            ),
            ("tap_drops", sample.tap_dropped as f64),
        ];
        for (signal, value) in signals {
            self.assess(&rt, signal, now, value, &mut out);
        }
        out
    }

    /// Series tracked.
    pub fn series(&self) -> usize {
        self.detectors.len()
    }

    /// The learned state, serialized (JSON), stamped `saved_unix`, with `entities`.
    pub fn save(&self, saved_unix: u64, entities: Vec<crate::entity::EntityState>) -> Vec<u8> {
        serde_json::to_vec(&self.state(saved_unix, entities)).unwrap_or_default()
    }

    /// The learned state, stamped `saved_unix`, with `entities` (to serialize elsewhere).
    pub fn state(&self, saved_unix: u64, entities: Vec<crate::entity::EntityState>) -> State {
        let mut series: Vec<SeriesState> = self
            .detectors
            .iter()
            .map(|((scope, signal), d)| SeriesState {
                scope: scope.to_string(),
                signal: signal.to_string(),
                detector: d.clone(),
            })
            .collect();
        series.sort_by(|a, b| (&a.scope, &a.signal).cmp(&(&b.scope, &b.signal)));
        State {
            version: STATE_VERSION,
            saved_unix,
            series,
            entities,
        }
    }

    /// Replaces the learned state with `bytes` (from [`SeriesEngine::save`]). On any error the
    /// engine is left as it was. Returns the number of series restored and the entities to
    /// hand to the entity table.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<Restored, StateError> {
        let state: State = serde_json::from_slice(bytes).map_err(|e| StateError::Malformed(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(StateError::Version(state.version));
        }
        let mut detectors = HashMap::new();
        for s in state.series {
            let Some(signal) = SIGNALS.iter().copied().find(|x| *x == s.signal) else {
                continue; // a signal this version does not learn
            };
            if !s.detector.is_sane() {
                return Err(StateError::Insane(format!("series {} {}", s.scope, s.signal)));
            }
            detectors.insert((Arc::from(s.scope.as_str()), signal), s.detector);
        }
        if let Some(bad) = state.entities.iter().find(|e| !e.is_sane()) {
            return Err(StateError::Insane(format!("entity {}", bad.key)));
        }
        let n = detectors.len();
        self.detectors = detectors;
        Ok(Restored {
            series: n,
            entities: state.entities,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(route: &str, status: u16, ms: u64) -> RequestEvent {
        RequestEvent {
            route: Some(Arc::from(route)),
            status,
            total: Duration::from_millis(ms),
            ..Default::default()
        }
    }

    fn sample(t: u64) -> RuntimeSample {
        RuntimeSample {
            unix_ms: t * 1000,
            elapsed: Duration::from_secs(1),
            workers: 2,
            busy_ratio: 0.2,
            alive_tasks: 40,
            ..Default::default()
        }
    }

    fn find<'a>(r: &'a [Report], scope: &str, signal: &str) -> &'a Report {
        r.iter()
            .find(|x| &*x.scope == scope && x.signal == signal)
            .unwrap_or_else(|| panic!("{scope} {signal}"))
    }

    #[test]
    fn ticks_turn_requests_into_series() {
        let mut e = SeriesEngine::new(Config::default(), 10);
        for i in 0..100 {
            e.request(&event("api", if i < 10 { 503 } else { 200 }, 1 + i % 20));
        }
        e.request(&event("web", 200, 5));
        let r = e.tick(&sample(1000));
        assert_eq!(find(&r, "service", "request_rate").value, 101.0);
        assert!((find(&r, "route:api", "error_ratio").value - 0.1).abs() < 1e-9);
        assert!((find(&r, "route:api", "latency_p95").value - 0.019).abs() < 1e-9);
        assert_eq!(find(&r, "runtime", "alive_tasks").value, 40.0);
        // The next tick starts empty; routes without traffic report only their rate.
        let r = e.tick(&sample(1001));
        assert_eq!(find(&r, "route:api", "request_rate").value, 0.0);
        assert!(!r.iter().any(|x| &*x.scope == "route:api" && x.signal == "error_ratio"));
    }

    #[test]
    fn a_burst_of_errors_after_warm_up_is_scored() {
        let mut e = SeriesEngine::new(Config::default(), 10);
        let mut last = Vec::new();
        for t in 0..200u64 {
            let errors = if t == 199 { 60 } else { (t % 3) as usize };
            for i in 0..100 {
                e.request(&event("api", if i < errors { 500 } else { 200 }, 2));
            }
            last = e.tick(&sample(10_000 + t));
        }
        assert!(find(&last, "route:api", "error_ratio").assessment.score > 0.9);
        assert_eq!(find(&last, "route:api", "request_rate").assessment.score, 0.0);
    }

    #[test]
    fn state_round_trips_and_bad_state_changes_nothing() {
        let mut e = SeriesEngine::new(Config::default(), 10);
        for t in 0..100u64 {
            for _ in 0..(50 + t % 7) {
                e.request(&event("api", 200, 3));
            }
            e.tick(&sample(20_000 + t));
        }
        let saved = e.save(123, Vec::new());
        let mut fresh = SeriesEngine::new(Config::default(), 10);
        assert_eq!(fresh.restore(&saved).map(|r| r.series), Ok(e.series()));
        // The restored engine is warm: the same next tick scores the same.
        for _ in 0..500 {
            e.request(&event("api", 200, 3));
            fresh.request(&event("api", 200, 3));
        }
        let (a, b) = (e.tick(&sample(20_100)), fresh.tick(&sample(20_100)));
        let rate = |r: &[Report]| find(r, "route:api", "request_rate").assessment.score;
        assert!(rate(&a) > 0.9);
        assert_eq!(rate(&a), rate(&b));
        // Truncated, corrupt, foreign version, insane numbers: refused, nothing changed.
        let before = fresh.series();
        assert!(matches!(
            fresh.restore(&saved[..saved.len() / 2]),
            Err(StateError::Malformed(_))
        ));
        assert!(matches!(
            fresh.restore(b"\x00\xffgarbage"),
            Err(StateError::Malformed(_))
        ));
        let other = String::from_utf8_lossy(&saved).replace("\"version\":1", "\"version\":99");
        assert_eq!(fresh.restore(other.as_bytes()), Err(StateError::Version(99)));
        let insane = String::from_utf8_lossy(&saved).replacen("\"scale\":", "\"scale\":-1", 1);
        assert!(matches!(fresh.restore(insane.as_bytes()), Err(StateError::Insane(_))));
        assert_eq!(fresh.series(), before);
    }

    #[test]
    fn routes_are_bounded() {
        let mut e = SeriesEngine::new(Config::default(), 2);
        for r in ["a", "b", "c", "d"] {
            e.request(&event(r, 200, 1));
        }
        let reports = e.tick(&sample(5));
        assert!(reports.iter().all(|x| &*x.scope != "route:c" && &*x.scope != "route:d"));
        assert_eq!(find(&reports, "service", "request_rate").value, 4.0);
    }
}
