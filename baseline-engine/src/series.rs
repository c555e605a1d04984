//! The streaming series detector: one per learned series (request rate, error ratio, latency,
//! runtime signals). Constant memory, causal (each point is scored before it is learned), robust
//! to outliers, with daily and weekly seasonality.
//!
//! Model: `expected = level + daily[hour of day] + weekly[day of week]`; `scale` is a robust
//! spread (an exponentially weighted mean absolute deviation, scaled to a standard deviation
//! for normal noise). A point's `z = (value - expected) / scale` gives its anomaly score
//! `1 - exp(-(|z| - 3) / 2)` (0 inside three deviations, 0.63 at five, 0.95 at nine). The band
//! drawn on dashboards is `expected ± 3 × scale`.
//!
//! Learning resists what it should not learn:
//! - residuals are clipped to `clip × scale` before they update anything (Huber), so a spike
//!   does not drag the level, and no update moves the level by more than `alpha × clip` scales:
//!   a slow ramp cannot walk the baseline faster than that;
//! - nothing is scored during the warm-up (`warmup` points), while the model learns quickly;
//! - the caller may score a point without learning it ([`Detector::score`]), e.g. traffic that
//!   was denied.

/// Detector settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Weight of a new point in the level.
    pub alpha_level: f64,
    /// Weight of a new point in the scale.
    pub alpha_scale: f64,
    /// Weight of a new point in its seasonal bucket.
    pub alpha_season: f64,
    /// Residuals are clipped to this many scales before learning.
    pub clip: f64,
    /// Points learned before any is scored.
    pub warmup: u32,
    /// Smallest scale, absolute (a constant series still has some tolerance).
    pub min_scale: f64,
    /// Smallest scale relative to the level's magnitude.
    pub min_relative_scale: f64,
    /// Learn daily and weekly seasonality from the timestamps.
    pub seasonal: bool,
    /// The level's and seasons' weights are multiplied by this for a point outside the band
    /// (and the spread learns nothing from it), so that an anomaly moves the baseline slowly: a
    /// lasting change is learned in the end, a passing one is not, and a ramp cannot drag the
    /// baseline along.
    pub anomalous_weight: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            alpha_level: 0.02,
            alpha_scale: 0.02,
            alpha_season: 0.1,
            clip: 3.0,
            warmup: 60,
            min_scale: 1e-6,
            min_relative_scale: 0.01,
            seasonal: true,
            anomalous_weight: 0.25,
        }
    }
}

/// What the detector says about one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// The value expected at this time.
    pub expected: f64,
    /// Lower edge of the normal band.
    pub lower: f64,
    /// Upper edge of the normal band.
    pub upper: f64,
    /// Anomaly score in [0, 1]; 0 during the warm-up.
    pub score: f64,
    /// Signed deviation in scales.
    pub z: f64,
}

/// Width of the normal band, in scales.
pub const BAND: f64 = 3.0;
/// Mean absolute deviation to standard deviation, for normal noise.
const MAD_TO_SD: f64 = 1.2533;

/// The detector's state: a few numbers and 31 seasonal offsets (about 300 bytes).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detector {
    config: Config,
    seen: u64,
    level: f64,
    scale: f64,
    daily: [f64; 24],
    weekly: [f64; 7],
}

/// Maps a deviation in scales to a score in [0, 1].
pub fn score_of(z: f64) -> f64 {
    if !z.is_finite() {
        return 1.0;
    }
    let excess = z.abs() - BAND;
    if excess <= 0.0 {
        0.0
    } else {
        1.0 - (-excess / 2.0).exp()
    }
}

/// The hour of day, the next hour, how far into the hour (0..1), and the day of week.
fn buckets(unix_secs: i64) -> (usize, usize, f64, usize) {
    let hour = unix_secs.div_euclid(3600).rem_euclid(24) as usize;
    let frac = unix_secs.rem_euclid(3600) as f64 / 3600.0;
    // 1970-01-01 was a Thursday; Monday is 0.
    let day = (unix_secs.div_euclid(86_400) + 3).rem_euclid(7) as usize;
    (hour, (hour + 1) % 24, frac, day)
}

// === impl Detector ===

impl Detector {
    /// A detector that has seen nothing.
    pub fn new(config: Config) -> Detector {
        Detector {
            config,
            seen: 0,
            level: 0.0,
            scale: 0.0,
            daily: [0.0; 24],
            weekly: [0.0; 7],
        }
    }

    /// Points learned so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether the state is usable: finite numbers, a non-negative spread.
    pub fn is_sane(&self) -> bool {
        self.level.is_finite()
            && self.scale.is_finite()
            && self.scale >= 0.0
            && self.daily.iter().chain(self.weekly.iter()).all(|x| x.is_finite())
    }

    /// Whether the warm-up is over.
    pub fn warm(&self) -> bool {
        self.seen >= u64::from(self.config.warmup)
    }

    fn expected(&self, unix_secs: i64) -> f64 {
        if !self.config.seasonal {
            return self.level;
        }
        // The daily profile is a curve through the hours, not a staircase.
        let (h, next, frac, d) = buckets(unix_secs);
        self.level + self.daily[h] * (1.0 - frac) + self.daily[next] * frac + self.weekly[d]
    }

    fn effective_scale(&self) -> f64 {
        self.scale
            .max(self.config.min_scale)
            .max(self.config.min_relative_scale * self.level.abs())
    }

    /// Scores `value` at `unix_secs` without learning it.
    pub fn score(&self, unix_secs: i64, value: f64) -> Assessment {
        let expected = self.expected(unix_secs);
        let s = self.effective_scale();
        let z = (value - expected) / s;
        Assessment {
            expected,
            lower: expected - BAND * s,
            upper: expected + BAND * s,
            score: if self.warm() { score_of(z) } else { 0.0 },
            z,
        }
    }

    /// Scores `value` at `unix_secs`, then learns it. Non-finite values are scored 1 and not
    /// learned.
    pub fn observe(&mut self, unix_secs: i64, value: f64) -> Assessment {
        let a = self.score(unix_secs, value);
        if value.is_finite() {
            self.learn(unix_secs, value);
        }
        a
    }

    fn learn(&mut self, unix_secs: i64, value: f64) {
        let c = &self.config;
        if self.seen == 0 {
            self.level = value;
            self.seen = 1;
            return;
        }
        // Quick at first (a running mean), then the configured weights.
        let warmup_weight = 1.0 / (self.seen as f64 + 1.0);
        let s = self.effective_scale();
        let residual = value - self.expected(unix_secs);
        let (al, asc, ase) = if self.warm() {
            if residual.abs() > BAND * s {
                // The spread is not learned from anomalies at all: it would widen to swallow
                // them.
                (
                    c.alpha_level * c.anomalous_weight,
                    0.0,
                    c.alpha_season * c.anomalous_weight,
                )
            } else {
                (c.alpha_level, c.alpha_scale, c.alpha_season)
            }
        } else {
            (
                c.alpha_level.max(warmup_weight),
                c.alpha_scale.max(warmup_weight),
                c.alpha_season.max(warmup_weight),
            )
        };
        // During the warm-up the scale is still forming: clip more loosely.
        let bound = if self.warm() { c.clip * s } else { f64::INFINITY };
        let clipped = residual.clamp(-bound, bound);
        self.scale += asc * (clipped.abs() * MAD_TO_SD - self.scale);
        if c.seasonal {
            let (h, next, frac, d) = buckets(unix_secs);
            // The level takes its share; what remains belongs to the season.
            self.level += al * clipped;
            let rest = clipped * (1.0 - al);
            self.daily[h] += ase * rest * (1.0 - frac);
            self.daily[next] += ase * rest * frac;
            self.weekly[d] += ase / 4.0 * rest;
            // Seasonal offsets stay centred, so they never absorb the level.
            let md = self.daily.iter().sum::<f64>() / 24.0;
            let mw = self.weekly.iter().sum::<f64>() / 7.0;
            self.daily.iter_mut().for_each(|x| *x -= md);
            self.weekly.iter_mut().for_each(|x| *x -= mw);
            self.level += md + mw;
        } else {
            self.level += al * clipped;
        }
        self.seen += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1].
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 2_000_001) as f64 / 1_000_000.0 - 1.0
        }
    }

    const HOUR: i64 = 3600;

    #[test]
    fn scores() {
        assert_eq!(score_of(0.0), 0.0);
        assert_eq!(score_of(-3.0), 0.0);
        assert!((score_of(5.0) - 0.632).abs() < 0.01);
        assert!(score_of(-9.0) > 0.94);
        assert_eq!(score_of(f64::NAN), 1.0);
    }

    #[test]
    fn nothing_is_scored_during_the_warm_up() {
        let mut d = Detector::new(Config::default());
        for i in 0..59 {
            assert_eq!(d.observe(i * 60, if i == 30 { 1e9 } else { 10.0 }).score, 0.0);
        }
    }

    #[test]
    fn a_spike_stands_out_and_does_not_move_the_level() {
        let mut n = Noise(7);
        let mut d = Detector::new(Config {
            seasonal: false,
            ..Config::default()
        });
        for i in 0..500 {
            d.observe(i * 60, 100.0 + 5.0 * n.next());
        }
        let level = d.score(500 * 60, 100.0).expected;
        let spike = d.observe(500 * 60, 160.0);
        assert!(spike.score > 0.9, "{spike:?}");
        assert!(spike.value_outside_band(160.0));
        let after = d.score(501 * 60, 100.0);
        assert!((after.expected - level).abs() < 1.0, "the spike barely moved the level");
        // Normal points score 0 most of the time.
        let quiet = (501..1000)
            .filter(|i| d.observe(i * 60, 100.0 + 5.0 * n.next()).score > 0.5)
            .count();
        assert!(quiet <= 2, "{quiet} false alarms in 500 points");
    }

    #[test]
    fn a_level_shift_is_flagged_then_learned() {
        let mut n = Noise(11);
        let mut d = Detector::new(Config {
            seasonal: false,
            ..Config::default()
        });
        for i in 0..300 {
            d.observe(i * 60, 50.0 + 2.0 * n.next());
        }
        let first = d.observe(300 * 60, 70.0 + 2.0 * n.next());
        assert!(first.score > 0.9);
        let scores: Vec<f64> = (301..2000)
            .map(|i| d.observe(i * 60, 70.0 + 2.0 * n.next()).score)
            .collect();
        assert!(scores[..20].iter().all(|s| *s > 0.5), "flagged while new");
        assert!(scores[1500..].iter().all(|s| *s < 0.5), "learned in the end");
    }

    #[test]
    fn a_variance_increase_raises_scores() {
        let mut n = Noise(5);
        let mut d = Detector::new(Config {
            seasonal: false,
            ..Config::default()
        });
        for i in 0..500 {
            d.observe(i * 60, 10.0 + n.next());
        }
        let loud = (500..560)
            .filter(|i| d.observe(i * 60, 10.0 + 8.0 * n.next()).score > 0.5)
            .count();
        assert!(loud >= 15, "{loud} of 60 noisier points flagged");
    }

    #[test]
    fn daily_seasonality_is_learned_not_flagged() {
        let mut n = Noise(3);
        let mut d = Detector::new(Config::default());
        let value = |t: i64, noise: f64| {
            let hour = (t / HOUR % 24) as f64;
            100.0 + 40.0 * (hour / 24.0 * std::f64::consts::TAU).sin() + 3.0 * noise
        };
        // Ten days every 5 minutes to learn, then a week scored.
        let step = 300;
        for i in 0..(10 * 288) {
            d.observe(i * step, value(i * step, n.next()));
        }
        let mut flagged = 0;
        let week = 7 * 288;
        for i in (10 * 288)..(10 * 288 + week) {
            if d.observe(i * step, value(i * step, n.next())).score > 0.5 {
                flagged += 1;
            }
        }
        assert!(flagged * 100 < week, "{flagged} of {week} seasonal points flagged");
        // The same hour's value off by a lot is still an anomaly.
        let t = (10 * 288 + week) * step;
        assert!(d.score(t, value(t, 0.0) + 60.0).score > 0.9);
    }

    #[test]
    fn a_slow_ramp_cannot_outrun_the_cap() {
        // The level may move at most alpha x clip scales per point; a ramp faster than that is
        // flagged for as long as it lasts.
        let mut n = Noise(9);
        let cfg = Config {
            seasonal: false,
            ..Config::default()
        };
        let mut d = Detector::new(cfg);
        for i in 0..500 {
            d.observe(i * 60, 10.0 + n.next() * 0.5);
        }
        let mut flagged = 0;
        for k in 0..1000 {
            // 0.1 units per point: 0.35 scales when the cap allows about 0.06.
            if d.observe((500 + k) * 60, 10.0 + 0.1 * k as f64 + n.next() * 0.5).score > 0.5 {
                flagged += 1;
            }
        }
        assert!(flagged > 900, "{flagged}");
    }

    #[test]
    fn odd_values_do_not_break_it() {
        let mut d = Detector::new(Config::default());
        for i in 0..100 {
            d.observe(i, 0.0);
        }
        assert_eq!(d.observe(100, f64::NAN).score, 1.0);
        assert_eq!(d.observe(101, f64::INFINITY).score, 1.0);
        let a = d.observe(102, 0.0);
        assert!(a.score == 0.0 && a.expected.is_finite());
        assert!(
            d.observe(103, 1.0).score > 0.9,
            "a constant series still has a tolerance, and 1 is far"
        );
        assert_eq!(d.observe(-5_000_000_000, 0.0).score, 0.0, "timestamps before 1970");
    }

    impl Assessment {
        fn value_outside_band(&self, v: f64) -> bool {
            v < self.lower || v > self.upper
        }
    }
}
