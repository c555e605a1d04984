//! The population model: how behaviour usually looks across all principals and sessions, so an
//! entity with little history of its own can still be told apart from everyone else.
//!
//! k-means (linfa) over standardised feature vectors, trained in the background on a bounded
//! reservoir sample of allowed, warmed-up entities; an entity's novelty is its distance to the
//! nearest centre in multiples of the training set's 99th percentile distance (1 is as far as
//! the most unusual percent of normal behaviour). k-means was chosen over a Gaussian mixture:
//! on the simulator's traffic both separate attacks equally well (`bench/RESULTS.md`, "which
//! population model"), and k-means trains in half the time, scores with k distances and no
//! covariance, and always returns a model where the mixture's fit fails on an emptied component.

use linfa::prelude::*;
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

use crate::entity::Features;

/// Dimensions of a feature vector.
pub const DIM: usize = 7;
/// Groups the model looks for.
pub const GROUPS: usize = 6;
/// Fewest samples worth training on.
pub const MIN_SAMPLES: usize = 64;

/// The vector the model sees for an entity's features.
pub fn vector(f: &Features) -> [f64; DIM] {
    [
        f.rate_per_minute.ln_1p(),
        f64::from(f.distinct_paths) / 8.0,
        f.not_found_ratio * 4.0,
        f.client_error_ratio * 2.0,
        f.bytes_per_request.ln_1p(),
        f.gap_variation.min(3.0),
        f.new_path_share,
    ]
}

/// A trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    mean: [f64; DIM],
    scale: [f64; DIM],
    centres: Vec<[f64; DIM]>,
    /// 99th percentile of the training samples' distances to their centre.
    q99: f64,
    /// Samples it was trained on.
    pub samples: usize,
}

// === impl Population ===

impl Population {
    /// Trains on `samples` with a fixed `seed`; `None` when there are too few.
    pub fn train(samples: &[[f64; DIM]], seed: u64) -> Option<Population> {
        if samples.len() < MIN_SAMPLES {
            return None;
        }
        let n = samples.len() as f64;
        let mut mean = [0.0; DIM];
        let mut scale = [0.0; DIM];
        for s in samples {
            for d in 0..DIM {
                mean[d] += s[d] / n;
            }
        }
        for s in samples {
            for d in 0..DIM {
                scale[d] += (s[d] - mean[d]).powi(2) / n;
            }
        }
        // A floor on every scale: a feature constant in training must not make any change
        // look infinitely novel.
        for s in &mut scale {
            *s = s.sqrt().max(0.25);
        }
        let mut data = Array2::<f64>::zeros((samples.len(), DIM));
        for (i, s) in samples.iter().enumerate() {
            for d in 0..DIM {
                data[[i, d]] = (s[d] - mean[d]) / scale[d];
            }
        }
        let k = GROUPS.min(samples.len() / 8).max(1);
        let rng = Xoshiro256Plus::seed_from_u64(seed);
        let model = KMeans::params_with_rng(k, rng)
            .max_n_iterations(100)
            .tolerance(1e-4)
            .fit(&linfa::DatasetBase::from(data.clone()))
            .ok()?;
        let centres: Vec<[f64; DIM]> = model
            .centroids()
            .rows()
            .into_iter()
            .map(|r| {
                let mut c = [0.0; DIM];
                for (d, v) in r.iter().enumerate().take(DIM) {
                    c[d] = *v;
                }
                c
            })
            .collect();
        let mut p = Population {
            mean,
            scale,
            centres,
            q99: 1.0,
            samples: samples.len(),
        };
        let mut dists: Vec<f64> = samples.iter().map(|s| p.distance(s)).collect();
        dists.sort_by(|a, b| a.total_cmp(b));
        let i = ((dists.len() as f64 * 0.99) as usize).min(dists.len() - 1);
        p.q99 = dists[i].max(0.5);
        Some(p)
    }

    fn distance(&self, v: &[f64; DIM]) -> f64 {
        let mut z = [0.0; DIM];
        for d in 0..DIM {
            z[d] = (v[d] - self.mean[d]) / self.scale[d];
        }
        self.centres
            .iter()
            .map(|c| c.iter().zip(&z).map(|(a, b)| (a - b).powi(2)).sum::<f64>())
            .fold(f64::INFINITY, f64::min)
            .sqrt()
    }

    /// Distance to the nearest group, in multiples of the 99th percentile of normal.
    pub fn novelty(&self, v: &[f64; DIM]) -> f64 {
        self.distance(v) / self.q99
    }
}

/// A bounded uniform sample of a stream (reservoir sampling, deterministic).
#[derive(Debug, Clone)]
pub struct Reservoir {
    items: Vec<[f64; DIM]>,
    cap: usize,
    seen: u64,
    rng: u64,
}

// === impl Reservoir ===

impl Reservoir {
    /// Holds at most `cap` samples.
    pub fn new(cap: usize, seed: u64) -> Reservoir {
        Reservoir {
            items: Vec::new(),
            cap: cap.max(1),
            seen: 0,
            rng: seed | 1,
        }
    }

    /// Offers one sample.
    pub fn offer(&mut self, v: [f64; DIM]) {
        self.seen += 1;
        if self.items.len() < self.cap {
            self.items.push(v);
            return;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let slot = self.rng % self.seen;
        if let Some(x) = self.items.get_mut(slot as usize) {
            *x = v;
        }
    }

    /// The samples held.
    pub fn items(&self) -> &[[f64; DIM]] {
        &self.items
    }

    /// Samples offered in all.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn novelty_separates_the_unusual_from_the_usual() {
        // Two kinds of normal: light readers and heavy API users.
        let mut samples = Vec::new();
        let mut x = 7u64;
        let mut noise = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((x >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        for i in 0..400 {
            let heavy = i % 3 == 0;
            samples.push([
                if heavy { 3.0 } else { 1.0 } + noise() * 0.5,
                if heavy { 0.5 } else { 0.4 } + noise() * 0.2,
                0.05 + noise().abs() * 0.1,
                0.1 + noise().abs() * 0.1,
                if heavy { 6.0 } else { 9.0 } + noise(),
                1.0 + noise() * 0.5,
                0.1 + noise().abs() * 0.2,
            ]);
        }
        let p = Population::train(&samples, 42).expect("trained");
        let usual = samples.iter().filter(|s| p.novelty(s) > 1.5).count();
        assert!(usual <= 4, "{usual} of 400 normal samples look novel");
        // A scraper: fast, many paths, many 404s, regular.
        let scraper = [4.5, 4.0, 2.0, 1.0, 7.0, 0.02, 0.9];
        assert!(p.novelty(&scraper) > 3.0, "{}", p.novelty(&scraper));
        // Deterministic for a seed.
        assert_eq!(Population::train(&samples, 42), Some(p));
        assert!(Population::train(&samples[..10], 42).is_none());
    }

    #[test]
    fn the_reservoir_is_bounded() {
        let mut r = Reservoir::new(100, 1);
        for i in 0..10_000 {
            r.offer([f64::from(i); DIM]);
        }
        assert_eq!(r.items().len(), 100);
        assert_eq!(r.seen(), 10_000);
        // Roughly uniform: about half the kept samples come from the second half.
        let late = r.items().iter().filter(|v| v[0] >= 5000.0).count();
        assert!((30..=70).contains(&late), "{late}");
    }
}
