//! The risk view: what the gateway reads on the request path. One writer (the engine) publishes
//! a whole [`RiskSnapshot`] at a time with an atomic pointer swap; readers load the current one
//! without a lock and look an entity up in O(1). Only entities with some risk are in it; an
//! entity not in it has risk 0.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::entity::EntityKey;
use crate::risk::Reason;

/// The engine's maps: `ahash` with keys drawn at random per process. Faster than the standard
/// SipHash on these short keys, and still resistant to a client choosing colliding keys.
pub type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Most points of history kept per entity.
pub const HISTORY: usize = 16;

/// An entity's risk as the engine last scored it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EntityRisk {
    /// Score in [0,1].
    pub score: f32,
    /// Every reason, heaviest first.
    pub reasons: Vec<Reason>,
    /// When it was scored (engine time, Unix milliseconds).
    pub at_ms: u64,
    /// Requests the entity made in all.
    pub requests: u64,
    /// Earlier scores, oldest first: (engine time, score), at most [`HISTORY`].
    pub history: Vec<(u64, f32)>,
}

/// One published state of every entity's risk.
#[derive(Debug, Default)]
pub struct RiskSnapshot {
    /// When it was published (wall clock, Unix milliseconds); 0 for never.
    pub published_ms: u64,
    /// The engine's time when it was published (Unix milliseconds; runs faster than the wall
    /// clock in simulations).
    pub engine_ms: u64,
    /// Entities with some risk.
    pub entities: Arc<Map<EntityKey, Arc<EntityRisk>>>,
    /// Whether the service's traffic is anomalous now.
    pub service_anomalous: bool,
    /// Entities tracked in all.
    pub tracked: usize,
    /// Whether a population model is in use, and how many samples it was trained on.
    pub model_samples: Option<usize>,
}

// === impl RiskSnapshot ===

impl RiskSnapshot {
    /// An entity's risk, if it has any.
    pub fn get(&self, key: &EntityKey) -> Option<&Arc<EntityRisk>> {
        self.entities.get(key)
    }

    /// The `n` riskiest entities, riskiest first.
    pub fn top(&self, n: usize) -> Vec<(&EntityKey, &Arc<EntityRisk>)> {
        let mut all: Vec<_> = self.entities.iter().collect();
        all.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then_with(|| a.0.cmp(b.0)));
        all.truncate(n);
        all
    }

    /// Whether it is older than `max_age_ms` at wall-clock `now_ms` (or was never published).
    pub fn stale(&self, now_ms: u64, max_age_ms: u64) -> bool {
        self.published_ms == 0 || now_ms.saturating_sub(self.published_ms) > max_age_ms
    }
}

/// The shared, lock-free view of risk.
#[derive(Debug, Default)]
pub struct RiskView {
    current: ArcSwap<RiskSnapshot>,
}

// === impl RiskView ===

impl RiskView {
    /// A view with nothing published yet (every read is stale).
    pub fn new() -> RiskView {
        RiskView::default()
    }

    /// The current snapshot; cheap, never blocks.
    pub fn load(&self) -> arc_swap::Guard<Arc<RiskSnapshot>> {
        self.current.load()
    }

    /// Publishes a new snapshot.
    pub fn publish(&self, snapshot: RiskSnapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
