//! Risk with reasons: what an entity's features say, scored against fixed limits of what any
//! client does, against the entity's own habits, and against the population model; and how the
//! risks of a request's context combine with its identity assurance and the service's state.
//!
//! Each signal gives a component in [0,1]; components combine as independent evidence
//! (`1 - Π(1 - c)`), so two moderate signals together weigh more than either, and no sum runs
//! past 1. Every component that counts comes with its [`Reason`]: the signal, what was observed
//! and what was expected, in words an operator reads.

use crate::entity::{EntityKey, Features, Habits, RECENT_MS};

/// Components below this are not reasons.
const NOTABLE: f64 = 0.05;
/// Reasons a request's risk reports (an entity's risk keeps all of its own).
pub const MAX_REASONS: usize = 3;
/// Requests a principal or session needs before its own history judges it.
pub const ENTITY_WARMUP: u64 = 30;

/// Why a risk is what it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reason {
    /// Signal name, from a fixed set (the metrics' `reason` label).
    pub signal: &'static str,
    /// What was observed.
    pub observed: f64,
    /// What was expected, as a range.
    pub expected: (f64, f64),
    /// How much it weighs, in [0,1].
    pub weight: f64,
}

// === impl Reason ===

impl Reason {
    /// The reason in words, e.g. `404 answers: 0.72 of recent requests (usual 0–0.2)`.
    pub fn text(&self) -> String {
        let (what, unit) = describe(self.signal);
        let num = |x: f64| {
            if x.abs() >= 100.0 || x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        };
        format!(
            "{what}: {}{unit} (usual {}–{})",
            num(self.observed),
            num(self.expected.0),
            num(self.expected.1)
        )
    }
}

/// Every signal a reason can name (bounded, for metric labels).
pub const SIGNALS: [&str; 15] = [
    "auth_failures",
    "not_found",
    "scraping",
    "regular_timing",
    "request_rate",
    "bytes_out",
    "new_place",
    "new_paths",
    "unusual_hour",
    "population",
    "refused_recently",
    "no_identity",
    "weak_identity",
    "token_age",
    "service_anomaly",
];

fn describe(signal: &str) -> (&'static str, &'static str) {
    match signal {
        "auth_failures" => ("authentication failures in the last 10 minutes", ""),
        "not_found" => ("404 answers", " of recent requests"),
        "scraping" => ("distinct new paths among recent requests, at speed", ""),
        "regular_timing" => ("variation of the gaps between requests", " (machine-regular)"),
        "request_rate" => ("requests per minute", ""),
        "bytes_out" => ("response bytes per request", ""),
        "new_place" => ("requests from an address and user agent never seen for it", ""),
        "new_paths" => ("share of paths it never used before", ""),
        "unusual_hour" => ("share of its activity at this hour of day", ""),
        "population" => ("distance from every usual group of behaviour", "x typical"),
        "refused_recently" => ("requests refused in the last 10 minutes", ""),
        "no_identity" => ("unauthenticated caller", ""),
        "weak_identity" => ("authentication weaker than the route's step-up level", ""),
        "token_age" => ("hours since the caller authenticated", ""),
        "service_anomaly" => ("service traffic anomalous; weakly identified callers", ""),
        _ => ("signal", ""),
    }
}

/// `x` mapped linearly from [lo, hi] onto [0, 1], clamped.
pub fn ramp(x: f64, lo: f64, hi: f64) -> f64 {
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// Components gathered into a score and its reasons. A signal counts once, with its heaviest
/// weight: the same behaviour seen through two entities (a principal and its address) is one
/// piece of evidence, not two.
#[derive(Debug, Default, Clone)]
pub struct Evidence {
    reasons: Vec<Reason>,
    /// The service's state: a signal and the factor it raises the score by.
    stricter: Option<(&'static str, f64)>,
}

// === impl Evidence ===

impl Evidence {
    /// Nothing against it yet.
    pub fn new() -> Evidence {
        Evidence::default()
    }

    /// Adds a component of weight `w` (ignored below [`NOTABLE`]).
    pub fn add(&mut self, signal: &'static str, w: f64, observed: f64, expected: (f64, f64)) {
        let w = w.clamp(0.0, 1.0);
        if w < NOTABLE {
            return;
        }
        let reason = Reason {
            signal,
            observed,
            expected,
            weight: w,
        };
        match self.reasons.iter_mut().find(|r| r.signal == signal) {
            Some(r) if r.weight < w => *r = reason,
            Some(_) => {}
            None => self.reasons.push(reason),
        }
    }

    /// Adds another risk's reasons.
    pub fn absorb(&mut self, reasons: &[Reason]) {
        for r in reasons {
            self.add(r.signal, r.weight, r.observed, r.expected);
        }
    }

    /// Raises the score by `factor` (the service's state), as one more reason; nothing when
    /// there is no risk to raise.
    pub fn stricter(&mut self, signal: &'static str, factor: f64) {
        self.stricter = Some((signal, factor));
    }

    fn base(&self) -> f64 {
        1.0 - self.reasons.iter().map(|r| 1.0 - r.weight).product::<f64>()
    }

    /// The score in [0,1].
    pub fn score(&self) -> f64 {
        let base = self.base();
        match self.stricter {
            Some((_, f)) if base >= NOTABLE => (base * f).min(1.0),
            _ => base,
        }
    }

    /// The score and the `limit` heaviest reasons.
    pub fn finish(mut self, limit: usize) -> (f64, Vec<Reason>) {
        let (base, score) = (self.base(), self.score());
        if let Some((signal, factor)) = self.stricter.filter(|_| score > base) {
            self.reasons.push(Reason {
                signal,
                observed: factor,
                expected: (1.0, 1.0),
                weight: score - base,
            });
        }
        self.reasons.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        self.reasons.truncate(limit);
        (score, self.reasons)
    }
}

/// What the population model says of one entity: its distance from the nearest group, in
/// multiples of the training set's 99th percentile distance.
pub type Novelty = Option<f64>;

/// Scores one entity's features.
pub fn entity(key: &EntityKey, f: &Features, habits: &Habits, novelty: Novelty) -> Evidence {
    let mut ev = Evidence::new();
    let person = !matches!(key, EntityKey::Client(_));
    // Threats, judged on anyone from the first request: failures and refusals.
    ev.add(
        "auth_failures",
        ramp(f64::from(f.auth_failures), 4.0, 12.0),
        f64::from(f.auth_failures),
        (0.0, 3.0),
    );
    if f.recent >= 8 {
        ev.add(
            "not_found",
            0.95 * ramp(f.not_found_ratio, 0.25, 0.6),
            f.not_found_ratio,
            (0.0, 0.25),
        );
    }
    // Breadth at speed: for an entity with a history, only the paths new to it count (a power
    // user going through their usual pages quickly is not scraping).
    let breadth = if f.requests >= ENTITY_WARMUP {
        f.distinct_new_paths
    } else {
        f.distinct_paths
    };
    ev.add(
        "scraping",
        0.9 * ramp(f64::from(breadth), 10.0, 20.0) * ramp(f.rate_per_minute, 15.0, 45.0),
        f64::from(breadth),
        (0.0, 10.0),
    );
    ev.add(
        "refused_recently",
        0.3 * ramp(f64::from(f.refused), 2.0, 8.0),
        f64::from(f.refused),
        (0.0, 1.0),
    );
    // Machine-regular timing: strong evidence from an entity whose own timing was human, weak
    // from one without a timing habit yet, none from one that was always regular (a scheduled
    // integration).
    let usual_variation = habits.timing.warm().then(|| habits.timing.range(0.0).0);
    let weight = match usual_variation {
        Some(v) if v < 0.25 => 0.0,
        Some(_) => 0.6,
        None => 0.3,
    };
    if f.gaps as usize >= crate::entity::TIMING_GAPS && f.rate_per_minute >= 1.0 {
        ev.add(
            "regular_timing",
            weight * ramp(0.15 - f.gap_variation, 0.0, 0.1),
            f.gap_variation,
            (0.3, 3.0),
        );
    }
    // Against its own history.
    if let Some(z) = habits.rate.z(f.rate_per_minute.ln_1p()) {
        // A faster pace than usual alone is a burst, not an attack: it adds to other evidence
        // but never decides alone.
        ev.add(
            "request_rate",
            0.35 * ramp(z, 4.0, 8.0),
            f.rate_per_minute,
            habits.rate.range(3.0),
        );
    }
    if f.requests >= 4 {
        if let Some(z) = habits.bytes.z(f.bytes_per_request.ln_1p()) {
            ev.add(
                "bytes_out",
                0.9 * ramp(z, 4.0, 8.0),
                f.bytes_per_request,
                habits.bytes.range(3.0),
            );
        }
    }
    if person && f.requests >= ENTITY_WARMUP {
        ev.add(
            "new_place",
            if f.new_places > 0 { 0.6 } else { 0.0 },
            f64::from(f.new_places),
            (0.0, 0.0),
        );
        if f.recent >= 8 {
            ev.add(
                "new_paths",
                0.3 * ramp(f.new_path_share, 0.5, 0.9),
                f.new_path_share,
                (0.0, 0.5),
            );
        }
        if f.requests >= 200 {
            ev.add(
                "unusual_hour",
                0.2 * ramp(0.01 - f.hour_share, 0.0, 0.01),
                f.hour_share,
                (0.01, 1.0),
            );
        }
    }
    if let Some(d) = novelty {
        ev.add("population", 0.35 * ramp(d, 1.5, 3.0), d, (0.0, 1.0));
    }
    ev
}

/// How strongly the caller of one request proved who they are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assurance {
    /// Whether the caller is authenticated at all.
    pub authenticated: bool,
    /// Whether the credential meets the route's step-up level (`acr`, `max_age`).
    pub stepped_up: bool,
    /// Whether the route asks for a step-up level at all.
    pub step_up_defined: bool,
    /// Seconds since the caller authenticated (`auth_time`, else the token's `iat`).
    pub age_secs: Option<u64>,
}

/// Adds the identity assurance of a request to its evidence.
pub fn identity(ev: &mut Evidence, a: &Assurance) {
    if !a.authenticated {
        ev.add("no_identity", 0.1, 0.0, (1.0, 1.0));
        return;
    }
    if a.step_up_defined && !a.stepped_up {
        ev.add("weak_identity", 0.1, 0.0, (1.0, 1.0));
    }
    if let Some(age) = a.age_secs {
        let hours = age as f64 / 3600.0;
        ev.add("token_age", 0.2 * ramp(hours, 8.0, 24.0), hours, (0.0, 8.0));
    }
}

/// How long an entity's risk holds after its last request without new evidence (engine
/// milliseconds).
pub const RISK_HOLDS_MS: u64 = RECENT_MS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_combines_and_keeps_the_heaviest_reasons() {
        let mut ev = Evidence::new();
        ev.add("not_found", 0.5, 0.5, (0.0, 0.25));
        ev.add("scraping", 0.5, 30.0, (0.0, 12.0));
        ev.add("new_paths", 0.01, 0.9, (0.0, 0.5));
        assert!((ev.score() - 0.75).abs() < 1e-9);
        ev.add("auth_failures", 0.2, 5.0, (0.0, 3.0));
        ev.add("population", 0.1, 2.0, (0.0, 1.0));
        // The same signal again counts once, at its heaviest.
        ev.add("scraping", 0.3, 20.0, (0.0, 12.0));
        let (score, reasons) = ev.finish(MAX_REASONS);
        assert!((score - (1.0 - 0.5 * 0.5 * 0.8 * 0.9)).abs() < 1e-9);
        let names: Vec<_> = reasons.iter().map(|r| r.signal).collect();
        assert_eq!(names, ["not_found", "scraping", "auth_failures"]);
        assert_eq!(reasons[0].text(), "404 answers: 0.50 of recent requests (usual 0–0.25)");
    }

    #[test]
    fn a_rare_event_never_lowers_risk() {
        // Property: adding evidence never lowers the score.
        let mut ev = Evidence::new();
        let mut last = 0.0;
        for i in 0..200u32 {
            let w = f64::from((i * 7919) % 97) / 100.0;
            ev.add(SIGNALS[i as usize % SIGNALS.len()], w, 1.0, (0.0, 1.0));
            assert!(ev.score() >= last);
            last = ev.score();
        }
        assert!(last <= 1.0);
    }

    #[test]
    fn the_service_state_makes_weak_callers_riskier_but_not_the_quiet() {
        let mut ev = Evidence::new();
        ev.stricter("service_anomaly", 1.5);
        assert_eq!(ev.score(), 0.0);
        ev.add("no_identity", 0.4, 0.0, (1.0, 1.0));
        assert!((ev.score() - 0.6).abs() < 1e-9);
        let (score, reasons) = ev.finish(MAX_REASONS);
        assert!((score - 0.6).abs() < 1e-9);
        assert_eq!(reasons[1].signal, "service_anomaly");
    }
}
