//! The entity side of the engine: every request event is recorded for its session, principal
//! and client; at each publication the entities touched since the last one are scored (features
//! against fixed limits, their own habits and the population model), and the risky ones are
//! published to the [`RiskView`] in one swap.
//!
//! The population model is retrained on a background thread from a bounded reservoir of
//! allowed, warmed-up entities; scoring uses the last model that finished.

use std::collections::HashSet;
use std::sync::{mpsc, Arc};

use crate::entity::{refused, Drift, EntityKey, EntityTable};
use crate::event::RequestEvent;
use crate::population::{self, Population, Reservoir};
use crate::risk::{self, ENTITY_WARMUP, RISK_HOLDS_MS};
use crate::store::{EntityRisk, Map, RiskSnapshot, RiskView, HISTORY};

/// Entities with a risk below this are not published.
const PUBLISH_FLOOR: f32 = 0.05;

/// How the entity side is sized and paced.
#[derive(Debug, Clone, PartialEq)]
pub struct AssessConfig {
    /// Most entities tracked.
    pub max_entities: usize,
    /// An entity idle this long (engine milliseconds) is forgotten.
    pub idle_ms: u64,
    /// How fast habits may move.
    pub drift: Drift,
    /// Most entities published with a risk (the riskiest are kept).
    pub max_risky: usize,
    /// Whether the population model is trained and used.
    pub population: bool,
    /// One in this many allowed observations of a warm entity is offered to the training sample.
    pub sample_every: u64,
    /// Samples in the training reservoir.
    pub reservoir: usize,
    /// Retrain after this many new samples,
    pub retrain_after: u64,
    /// and no sooner than this long after the last training began (engine milliseconds).
    pub retrain_every_ms: u64,
    /// Seed for sampling and training.
    pub seed: u64,
}

impl Default for AssessConfig {
    fn default() -> Self {
        AssessConfig {
            max_entities: 100_000,
            idle_ms: 3_600_000,
            drift: Drift::default(),
            max_risky: 10_000,
            population: true,
            sample_every: 4,
            reservoir: 4096,
            retrain_after: 2048,
            retrain_every_ms: 10 * 60_000,
            seed: 0x5eed,
        }
    }
}

/// The entity side of the engine.
#[derive(Debug)]
pub struct Assessor {
    cfg: AssessConfig,
    table: EntityTable,
    touched: HashSet<EntityKey, ahash::RandomState>,
    risky: Map<EntityKey, Arc<EntityRisk>>,
    published: Arc<Map<EntityKey, Arc<EntityRisk>>>,
    changed: bool,
    reservoir: Reservoir,
    offered: u64,
    since_training: u64,
    model: Option<Arc<Population>>,
    training: Option<mpsc::Receiver<Option<Population>>>,
    view: Arc<RiskView>,
    /// Engine time of the next sweep for idle entities.
    next_expiry: u64,
    /// Engine time the last training began.
    trained_ms: u64,
}

// === impl Assessor ===

impl Assessor {
    /// An assessor publishing to `view`.
    pub fn new(cfg: AssessConfig, view: Arc<RiskView>) -> Assessor {
        Assessor {
            table: EntityTable::new(cfg.max_entities, cfg.idle_ms).with_drift(cfg.drift),
            touched: HashSet::default(),
            risky: Map::default(),
            published: Arc::default(),
            changed: false,
            reservoir: Reservoir::new(cfg.reservoir, cfg.seed),
            offered: 0,
            since_training: 0,
            model: None,
            training: None,
            view,
            next_expiry: 0,
            trained_ms: 0,
            cfg,
        }
    }

    /// Records one request (its `unix_ms` in engine time).
    pub fn observe(&mut self, e: &RequestEvent) {
        for key in EntityTable::keys(e).into_iter().flatten() {
            self.table.observe_as(key.clone(), e);
            if self.cfg.population && !matches!(key, EntityKey::Client(_)) && !refused(e) {
                self.offer(&key, e.unix_ms);
            }
            self.touched.insert(key);
        }
    }

    fn offer(&mut self, key: &EntityKey, now_ms: u64) {
        self.offered += 1;
        if self.offered % self.cfg.sample_every.max(1) != 0 {
            return;
        }
        let Some(entity) = self.table.get(key) else { return };
        let f = entity.features(now_ms);
        if f.requests < ENTITY_WARMUP || f.refused > 0 {
            return;
        }
        self.reservoir.offer(population::vector(&f));
        self.since_training += 1;
    }

    /// Scores one tracked entity now (engine time); `None` when it is not tracked.
    pub fn score(&self, key: &EntityKey, now_ms: u64) -> Option<(f64, Vec<risk::Reason>, u64)> {
        let entity = self.table.get(key)?;
        let f = entity.features(now_ms);
        let novelty = match (&self.model, key) {
            (Some(m), EntityKey::Session(_) | EntityKey::Principal(_)) if f.recent >= 8 => {
                Some(m.novelty(&population::vector(&f)))
            }
            _ => None,
        };
        let (score, reasons) = risk::entity(key, &f, entity.habits(), novelty).finish(risk::SIGNALS.len());
        Some((score, reasons, f.requests))
    }

    /// Scores what was touched, drops risks that have lapsed, and publishes (wall-clock
    /// `wall_ms`, engine time `engine_ms`).
    pub fn publish(&mut self, wall_ms: u64, engine_ms: u64, service_anomalous: bool) {
        self.collect_model();
        let touched: Vec<EntityKey> = self.touched.drain().collect();
        for key in touched {
            let Some((score, reasons, requests)) = self.score(&key, engine_ms) else {
                self.changed |= self.risky.remove(&key).is_some();
                continue;
            };
            let score = score as f32;
            if score < PUBLISH_FLOOR {
                self.changed |= self.risky.remove(&key).is_some();
                continue;
            }
            let mut history = self.risky.get(&key).map(|r| r.history.clone()).unwrap_or_default();
            if history.last().is_none_or(|(_, s)| (s - score).abs() >= 0.05) {
                if history.len() == HISTORY {
                    history.remove(0);
                }
                history.push((engine_ms, score));
            }
            self.risky.insert(
                key,
                Arc::new(EntityRisk {
                    score,
                    reasons,
                    at_ms: engine_ms,
                    requests,
                    history,
                }),
            );
            self.changed = true;
        }
        let before = self.risky.len();
        self.risky
            .retain(|_, r| r.at_ms.saturating_add(RISK_HOLDS_MS) >= engine_ms);
        if self.risky.len() > self.cfg.max_risky {
            let mut scores: Vec<f32> = self.risky.values().map(|r| r.score).collect();
            let k = scores.len() - self.cfg.max_risky;
            let (_, cut, _) = scores.select_nth_unstable_by(k, f32::total_cmp);
            let cut = *cut;
            self.risky.retain(|_, r| r.score >= cut);
        }
        self.changed |= self.risky.len() != before;
        if self.changed {
            self.published = Arc::new(self.risky.clone());
            self.changed = false;
        }
        if engine_ms >= self.next_expiry {
            self.table.expire(engine_ms);
            self.next_expiry = engine_ms + 1000;
        }
        self.view.publish(RiskSnapshot {
            published_ms: wall_ms,
            engine_ms,
            entities: self.published.clone(),
            service_anomalous,
            tracked: self.table.len(),
            model_samples: self.model.as_ref().map(|m| m.samples),
        });
        self.maybe_train(engine_ms);
    }

    fn collect_model(&mut self) {
        if let Some(rx) = &self.training {
            match rx.try_recv() {
                Ok(model) => {
                    if let Some(m) = model {
                        self.model = Some(Arc::new(m));
                    }
                    self.training = None;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => self.training = None,
            }
        }
    }

    fn maybe_train(&mut self, now_ms: u64) {
        let due = self.model.is_none()
            || (self.since_training >= self.cfg.retrain_after
                && now_ms >= self.trained_ms.saturating_add(self.cfg.retrain_every_ms));
        if !self.cfg.population
            || self.training.is_some()
            || !due
            || self.reservoir.items().len() < population::MIN_SAMPLES
        {
            return;
        }
        self.since_training = 0;
        self.trained_ms = now_ms;
        let samples = self.reservoir.items().to_vec();
        let seed = self.cfg.seed ^ self.reservoir.seen();
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("population-model".into())
            .spawn(move || {
                let _ = tx.send(Population::train(&samples, seed));
            });
        if spawned.is_ok() {
            self.training = Some(rx);
        }
    }

    /// Trains the population model now, on this thread (for tests and the simulator's
    /// deterministic runs).
    pub fn train_now(&mut self) -> bool {
        let seed = self.cfg.seed ^ self.reservoir.seen();
        match Population::train(self.reservoir.items(), seed) {
            Some(m) => {
                self.model = Some(Arc::new(m));
                self.since_training = 0;
                true
            }
            None => false,
        }
    }

    /// What to keep of the entities across a restart.
    pub fn save(&self) -> Vec<crate::entity::EntityState> {
        self.table.save()
    }

    /// Takes back saved entities; returns how many.
    pub fn restore(&mut self, states: Vec<crate::entity::EntityState>) -> usize {
        self.table.restore(states)
    }

    /// Entities tracked.
    pub fn tracked(&self) -> usize {
        self.table.len()
    }

    /// Entities evicted because the table was full.
    pub fn evicted(&self) -> u64 {
        self.table.evicted()
    }

    /// Samples the population model was last trained on, if any.
    pub fn model_samples(&self) -> Option<usize> {
        self.model.as_ref().map(|m| m.samples)
    }
}

#[cfg(test)]
mod tests;
