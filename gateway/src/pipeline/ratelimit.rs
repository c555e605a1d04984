//! Rate limit stage: a route's `rate_limit` caps its requests per client address (before
//! identity, so a flood of bad credentials is capped too), per verified subject (after identity;
//! callers without one are counted by address), or for the route as a whole. Beyond the rate and
//! its burst the answer is 429 with `Retry-After`.
//!
//! The arithmetic is `governor`'s GCRA; the state is a table of its own ([`Table`]) holding at
//! most `max_keys` keys. When full, keys back at a full burst (nothing to remember) are
//! dropped; if none is, a new key's request passes without being remembered (counted as
//! untracked) while known keys stay limited, and the sweep is not retried for a second. So a
//! spray of addresses can neither grow memory, nor make every request scan the table, nor shut
//! out the clients already known.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use prometheus_client::metrics::counter::Counter;

use crate::config::{RateKeyKind, RateLimitConfig};

/// What a request is counted under.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub enum RateKey {
    /// The whole route.
    Route,
    /// A client address (IPv6 by its /64: one host's share of addresses counts as one).
    Client(IpAddr),
    /// A verified subject.
    Subject(Arc<str>),
}

/// Each key's theoretical arrival time, for at most `max` keys.
#[derive(Debug)]
pub struct Table {
    map: Mutex<HashMap<RateKey, Nanos>>,
    max: usize,
    /// Set when the map reaches `max`, so the limiter sweeps before the next request (and only
    /// then: no count of the map on every request).
    full: Arc<AtomicBool>,
    untracked: Counter,
}

impl StateStore for Table {
    type Key = RateKey;

    fn measure_and_replace<T, F, E>(&self, key: &RateKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tat) = map.get_mut(key) {
            let (out, next) = f(Some(*tat))?;
            *tat = next;
            return Ok(out);
        }
        // A new key is always within its burst.
        let (out, next) = f(None)?;
        if map.len() < self.max {
            map.insert(key.clone(), next);
            if map.len() == self.max {
                self.full.store(true, Ordering::Relaxed);
            }
        } else {
            self.untracked.inc();
        }
        Ok(out)
    }
}

impl ShrinkableKeyedStateStore<RateKey> for Table {
    fn retain_recent(&self, drop_below: Nanos) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, tat| tat.as_u64() > drop_below.as_u64());
    }

    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A route's limiter.
pub struct RateLimit {
    /// The config it was built from (kept across reloads while unchanged).
    pub config: RateLimitConfig,
    limiter: governor::RateLimiter<RateKey, Table, DefaultClock>,
    /// The table reached `max_keys`.
    full: Arc<AtomicBool>,
    /// Milliseconds since `epoch` before which a full table is not swept again.
    next_sweep: AtomicU64,
    epoch: tokio::time::Instant,
    limited: Counter,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("config", &self.config)
            .field("keys", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

// === impl RateLimit ===

impl RateLimit {
    /// A limiter for `config`, counting refused requests in `limited` and new keys let through
    /// untracked (a full table) in `untracked`.
    pub fn new(config: RateLimitConfig, limited: Counter, untracked: Counter) -> Self {
        let quota = governor::Quota::with_period(config.period)
            .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN))
            .allow_burst(config.burst);
        let full = Arc::new(AtomicBool::new(false));
        let table = Table {
            map: Mutex::new(HashMap::new()),
            max: config.max_keys,
            full: full.clone(),
            untracked,
        };
        Self {
            limiter: governor::RateLimiter::new(quota, table, DefaultClock::default()),
            full,
            config,
            next_sweep: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
            limited,
        }
    }

    /// Whether this stage runs before identity (keys that need no identity).
    pub fn before_identity(&self) -> bool {
        self.config.by != RateKeyKind::Subject
    }

    /// The key of a request from `client`, with `subject` when identity verified one.
    pub fn key(&self, client: IpAddr, subject: Option<&Arc<str>>) -> RateKey {
        match (self.config.by, subject) {
            (RateKeyKind::Route, _) => RateKey::Route,
            (RateKeyKind::Subject, Some(s)) => RateKey::Subject(s.clone()),
            _ => RateKey::Client(match client {
                IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !0u128 << 64).into()),
                v4 => v4,
            }),
        }
    }

    /// Takes a cell for `key`, or says how long until one is free.
    pub fn check(&self, key: &RateKey) -> Result<(), Duration> {
        if self.full.load(Ordering::Relaxed) {
            self.make_room();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            self.limited.inc();
            not_until.wait_time_from(self.limiter.clock().now())
        })
    }

    /// Drops keys back at a full burst; at most once a second while that frees nothing.
    fn make_room(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        if now < self.next_sweep.load(Ordering::Relaxed) {
            return;
        }
        self.limiter.retain_recent();
        if self.limiter.len() < self.config.max_keys {
            self.full.store(false, Ordering::Relaxed);
        } else {
            self.next_sweep.store(now + 1000, Ordering::Relaxed);
            tracing::warn!(
                keys = self.limiter.len(),
                "rate limit table full of active clients; new ones pass uncounted until some go idle"
            );
        }
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One cell a minute, `burst` at once; with its untracked-requests counter.
    fn limit_counting(burst: u32, max_keys: usize) -> (RateLimit, Counter) {
        let untracked = Counter::default();
        let l = RateLimit::new(
            RateLimitConfig {
                period: Duration::from_secs(60),
                burst: std::num::NonZeroU32::new(burst).expect("nonzero"),
                by: RateKeyKind::Client,
                max_keys,
            },
            Counter::default(),
            untracked.clone(),
        );
        (l, untracked)
    }

    fn limit(burst: u32, max_keys: usize) -> RateLimit {
        limit_counting(burst, max_keys).0
    }

    fn ip(n: u8) -> RateKey {
        RateKey::Client(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn a_key_gets_its_burst_then_waits() {
        let l = limit(3, 100);
        for _ in 0..3 {
            assert_eq!(l.check(&ip(1)), Ok(()));
        }
        let wait = l.check(&ip(1)).expect_err("beyond the burst");
        // One cell a minute: the next one is most of a minute away.
        assert!(wait > Duration::from_secs(50), "{wait:?}");
        assert_eq!(l.check(&ip(2)), Ok(()), "keys are counted apart");
        assert_eq!(l.limited.get(), 1);
    }

    #[test]
    fn a_full_table_of_active_keys_lets_new_keys_pass_untracked_and_keeps_known_ones_limited() {
        let (l, untracked) = limit_counting(2, 4);
        for n in 0..4 {
            assert_eq!(l.check(&ip(n)), Ok(()));
        }
        // No key is idle: the new one passes, every time, and is not remembered.
        for _ in 0..3 {
            assert_eq!(l.check(&ip(9)), Ok(()));
        }
        assert_eq!(l.keys(), 4);
        assert_eq!(untracked.get(), 3);
        // Known keys are still limited.
        assert_eq!(l.check(&ip(0)), Ok(()));
        assert!(l.check(&ip(0)).is_err());
    }

    #[test]
    fn a_full_table_forgets_idle_keys_to_track_new_ones() {
        let untracked = Counter::default();
        let l = RateLimit::new(
            RateLimitConfig {
                period: Duration::from_millis(1),
                burst: std::num::NonZeroU32::MIN,
                by: RateKeyKind::Client,
                max_keys: 2,
            },
            Counter::default(),
            untracked.clone(),
        );
        assert_eq!(l.check(&ip(1)), Ok(()));
        assert_eq!(l.check(&ip(2)), Ok(()));
        // Both are back at a full burst well before this.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(l.check(&ip(3)), Ok(()));
        assert_eq!(untracked.get(), 0, "room was made, not skipped");
        assert_eq!(l.keys(), 1, "the idle keys went, the new one is tracked");
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let l = limit(1, 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("address");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(l.key(a, None), l.key(b, None));
        assert_ne!(l.key(a, None), l.key(c, None));
    }
}
