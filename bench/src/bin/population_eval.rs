//! Which population model: k-means (what the engine runs) against a Gaussian mixture, both from
//! linfa, on the simulator's traffic (`gateway_tests::traffic`, same plan as `simulate`) replayed
//! offline through the engine's entity table. Both are trained on the same sample of benign
//! principals' feature vectors from before the attacks; then every benign principal's vectors
//! after that, and every attacking principal's vectors over its first 20 attack requests, are
//! scored. Printed: the area under the ROC curve (the chance an attack vector scores above a
//! benign one), the share of each above the model's own 99th percentile of training, and the
//! training time.
//!
//! `cargo run --release -p gateway-bench --bin population_eval [-- --seed N]`

use std::net::IpAddr;
use std::sync::Arc;

use baseline_engine::entity::{EntityKey, EntityTable};
use baseline_engine::population::{self, Population, Reservoir, DIM};
use baseline_engine::{AuthOutcome, RequestEvent};
use gateway_tests::traffic::{self, Cred, Kind, Shape};
use linfa::prelude::*;
use linfa_clustering::GaussianMixtureModel;
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;

const T0: u64 = 1_800_000_000_000;

/// The event the gateway would report for a planned request (statuses as the demo upstream and
/// the gateway answer them when nothing is refused on risk).
fn event(step: &traffic::Step, agent: u64) -> RequestEvent {
    let path = step.target.split('?').next().unwrap_or("/");
    let size = step
        .target
        .split_once("size=")
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .unwrap_or(0);
    let (status, subject, auth) = match step.cred {
        Cred::Garbage(_) => (401, None, AuthOutcome::Invalid),
        Cred::Principal(p) => (
            if path.starts_with("/status/404") { 404 } else { 200 },
            Some(Arc::from(format!("user-{p}"))),
            AuthOutcome::Bearer,
        ),
    };
    RequestEvent {
        unix_ms: T0 + step.at_ms,
        route: Some(Arc::from("app")),
        path: baseline_engine::hash_path(path.as_bytes()),
        status,
        bytes_out: if status == 200 { size } else { 120 },
        client: IpAddr::V4(step.ip),
        user_agent: agent,
        subject,
        auth,
        ..Default::default()
    }
}

/// Negative log-likelihood under the mixture (computed from its public parameters).
fn gmm_score(m: &GaussianMixtureModel<f64>, x: &[f64; DIM]) -> f64 {
    let (w, mu, prec) = (m.weights(), m.means(), m.precisions());
    let mut best = f64::NEG_INFINITY;
    let mut terms = Vec::with_capacity(w.len());
    for k in 0..w.len() {
        let mut d = [0.0; DIM];
        for i in 0..DIM {
            d[i] = x[i] - mu[[k, i]];
        }
        let mut quad = 0.0;
        for i in 0..DIM {
            for j in 0..DIM {
                quad += d[i] * prec[[k, i, j]] * d[j];
            }
        }
        // log det of the precision by Cholesky.
        let mut l = [[0.0f64; DIM]; DIM];
        let mut logdet = 0.0;
        for i in 0..DIM {
            for j in 0..=i {
                let mut sum = prec[[k, i, j]];
                for (a, b) in l[i][..j].iter().zip(&l[j][..j]) {
                    sum -= a * b;
                }
                if i == j {
                    let v = sum.max(1e-300).sqrt();
                    l[i][j] = v;
                    logdet += 2.0 * v.ln();
                } else {
                    l[i][j] = sum / l[j][j];
                }
            }
        }
        let t = w[k].ln() + 0.5 * logdet - 0.5 * quad - 0.5 * DIM as f64 * (2.0 * std::f64::consts::PI).ln();
        best = best.max(t);
        terms.push(t);
    }
    let lse = best + terms.iter().map(|t| (t - best).exp()).sum::<f64>().ln();
    -lse
}

fn auc(pos: &[f64], neg: &[f64]) -> f64 {
    let mut above = 0.0;
    for p in pos {
        for n in neg {
            above += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    above / (pos.len() * neg.len()).max(1) as f64
}

fn main() -> anyhow::Result<()> {
    let seed = std::env::args()
        .skip_while(|a| a != "--seed")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let shape = Shape {
        benign: 300,
        per_scenario: 20,
        warmup_min: 120,
        attack_min: 60,
        seed,
    };
    let plan = traffic::plan(shape);
    let attacks_start = shape.warmup_min * 60_000;
    // Every request in time order, with who sent it.
    let mut all: Vec<(usize, usize)> = Vec::new();
    for (a, actor) in plan.actors.iter().enumerate() {
        for s in 0..actor.steps.len() {
            all.push((a, s));
        }
    }
    all.sort_by_key(|&(a, s)| plan.actors[a].steps[s].at_ms);
    let mut table = EntityTable::new(1_000_000, 3_600_000);
    let mut train = Reservoir::new(4096, seed);
    let (mut benign_vs, mut attack_vs) = (Vec::new(), Vec::new());
    let mut seen_attack = vec![0usize; plan.actors.len()];
    for &(a, s) in &all {
        let actor = &plan.actors[a];
        let step = &actor.steps[s];
        let e = event(step, baseline_engine::hash_user_agent(actor.agent.as_bytes()));
        table.observe(&e);
        let Some(sub) = &e.subject else { continue };
        let f = table
            .get(&EntityKey::Principal(sub.clone()))
            .map(|x| x.features(e.unix_ms))
            .filter(|f| f.requests >= 30 && f.recent >= 8);
        let Some(f) = f else { continue };
        let v = population::vector(&f);
        match actor.kind {
            Kind::Benign if step.at_ms < attacks_start && s % 4 == 0 => train.offer(v),
            Kind::Benign if step.at_ms >= attacks_start && s % 4 == 0 => benign_vs.push(v),
            Kind::Scraping | Kind::Enumeration | Kind::Exfiltration | Kind::Scripted | Kind::StolenToken
                if step.attack =>
            {
                seen_attack[a] += 1;
                if seen_attack[a] <= 20 {
                    attack_vs.push(v);
                }
            }
            _ => {}
        }
    }
    let samples = train.items().to_vec();
    println!(
        "seed {seed}: {} training vectors, {} benign test vectors, {} attack vectors (first 20 attack requests of each attacker)\n",
        samples.len(),
        benign_vs.len(),
        attack_vs.len()
    );
    println!("| model | train time | AUC | attack vectors above the training q99 | benign vectors above it |");
    println!("|---|---:|---:|---:|---:|");

    let t = tokio::time::Instant::now();
    let km = Population::train(&samples, seed).ok_or_else(|| anyhow::anyhow!("k-means did not train"))?;
    let km_time = t.elapsed();
    let (kp, kn): (Vec<f64>, Vec<f64>) = (
        attack_vs.iter().map(|v| km.novelty(v)).collect(),
        benign_vs.iter().map(|v| km.novelty(v)).collect(),
    );
    let share = |xs: &[f64], cut: f64| 100.0 * xs.iter().filter(|x| **x > cut).count() as f64 / xs.len().max(1) as f64;
    println!(
        "| k-means, 6 groups (the engine's) | {:.1} ms | {:.3} | {:.1}% | {:.1}% |",
        km_time.as_secs_f64() * 1e3,
        auc(&kp, &kn),
        share(&kp, 1.0),
        share(&kn, 1.0)
    );

    // The mixture on the same standardised sample.
    let n = samples.len() as f64;
    let mut mean = [0.0; DIM];
    let mut sd = [0.0; DIM];
    for s in &samples {
        for d in 0..DIM {
            mean[d] += s[d] / n;
        }
    }
    for s in &samples {
        for d in 0..DIM {
            sd[d] += (s[d] - mean[d]).powi(2) / n;
        }
    }
    for x in &mut sd {
        *x = x.sqrt().max(0.25);
    }
    let z = |v: &[f64; DIM]| {
        let mut o = [0.0; DIM];
        for d in 0..DIM {
            o[d] = (v[d] - mean[d]) / sd[d];
        }
        o
    };
    let mut data = Array2::<f64>::zeros((samples.len(), DIM));
    for (i, s) in samples.iter().enumerate() {
        let zs = z(s);
        for d in 0..DIM {
            data[[i, d]] = zs[d];
        }
    }
    let t = tokio::time::Instant::now();
    let gmm = GaussianMixtureModel::params_with_rng(6, Xoshiro256Plus::seed_from_u64(seed))
        .max_n_iterations(100)
        .reg_covariance(1e-3)
        .fit(&linfa::DatasetBase::from(data));
    let gmm_time = t.elapsed();
    match gmm {
        Ok(g) => {
            let mut train_scores: Vec<f64> = samples.iter().map(|s| gmm_score(&g, &z(s))).collect();
            train_scores.sort_by(|a, b| a.total_cmp(b));
            let q99 = train_scores[((train_scores.len() as f64 * 0.99) as usize).min(train_scores.len() - 1)];
            let (gp, gn): (Vec<f64>, Vec<f64>) = (
                attack_vs.iter().map(|v| gmm_score(&g, &z(v))).collect(),
                benign_vs.iter().map(|v| gmm_score(&g, &z(v))).collect(),
            );
            println!(
                "| Gaussian mixture, 6 components, full covariance | {:.1} ms | {:.3} | {:.1}% | {:.1}% |",
                gmm_time.as_secs_f64() * 1e3,
                auc(&gp, &gn),
                share(&gp, q99),
                share(&gn, q99)
            );
        }
        Err(e) => println!(
            "| Gaussian mixture, 6 components, full covariance | {:.1} ms | did not train: {e} | | |",
            gmm_time.as_secs_f64() * 1e3
        ),
    }
    Ok(())
}
