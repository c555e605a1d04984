//! Entity behaviour: for each session, principal (subject) and client address, a small record
//! of its recent requests and habits, and the sliding-window features the risk model reads.
//!
//! Memory is bounded: each entity keeps its last [`WINDOW`] requests in a fixed ring, a
//! 256-bit set of the routes it has used, and a histogram of its hours of activity (680 bytes
//! with its key, held under 1 KiB by a test); the table holds at most `cap` entities, forgets those
//! idle longer than `idle`, and when full evicts the least recently seen.
//!
//! Not built yet: scoring these features against the entity's own history and a population
//! model, and feeding the result into risk.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::event::RequestEvent;

/// Requests remembered per entity.
pub const WINDOW: usize = 32;
/// The features' time window, milliseconds.
const MINUTE_MS: u64 = 60_000;

/// Who behaviour is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityKey {
    /// A browser session (its handle).
    Session(u64),
    /// A verified subject.
    Principal(Arc<str>),
    /// A client address.
    Client(IpAddr),
}

/// One remembered request (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    /// Milliseconds since the entity's first request (wraps after 49 days).
    at_ms: u32,
    /// Hash of the route.
    route: u16,
    status: u16,
    /// Response bytes, saturating.
    bytes_out: u32,
    /// The route was new to this entity.
    new_route: bool,
}

/// An entity's record.
#[derive(Debug, Clone)]
pub struct Entity {
    first_unix_ms: u64,
    last_unix_ms: u64,
    ring: [Seen; WINDOW],
    len: u8,
    next: u8,
    routes: [u64; 4],
    hours: [u16; 24],
    requests: u64,
    /// Requests per minute, decayed exponentially (one-minute time constant).
    rate: f64,
    last_client: Option<IpAddr>,
    last_agent: u64,
    client_changes: u16,
    agent_changes: u16,
}

/// The features the risk model reads, over the entity's recent requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features {
    /// Requests per minute (exponentially decayed, one-minute time constant).
    pub rate_per_minute: f64,
    /// Distinct routes among the remembered requests.
    pub distinct_routes: u32,
    /// Share of the remembered requests that went to a route new to the entity.
    pub new_route_share: f64,
    /// 401 and 403 answers among the remembered requests.
    pub auth_failures: u32,
    /// Share of 4xx answers.
    pub client_error_ratio: f64,
    /// Share of 404 answers.
    pub not_found_ratio: f64,
    /// Response bytes over the remembered requests.
    pub bytes_out: u64,
    /// Times the client address changed (for a session or principal).
    pub client_changes: u32,
    /// Times the user agent changed.
    pub agent_changes: u32,
    /// Share of the entity's past activity in the current hour of day (low: an unusual hour).
    pub hour_share: f64,
    /// Coefficient of variation of the gaps between requests (near 0: machine-regular).
    pub gap_variation: f64,
    /// Requests seen in all.
    pub requests: u64,
}

fn route_hash(route: Option<&str>) -> u16 {
    let h = crate::event::hash_user_agent(route.unwrap_or("").as_bytes());
    (h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) as u16
}

// === impl Entity ===

impl Entity {
    fn new(unix_ms: u64) -> Entity {
        Entity {
            first_unix_ms: unix_ms,
            last_unix_ms: unix_ms,
            ring: [Seen::default(); WINDOW],
            len: 0,
            next: 0,
            routes: [0; 4],
            hours: [0; 24],
            requests: 0,
            rate: 0.0,
            last_client: None,
            last_agent: 0,
            client_changes: 0,
            agent_changes: 0,
        }
    }

    fn observe(&mut self, e: &RequestEvent) {
        let route = route_hash(e.route.as_deref());
        let (word, bit) = ((route as usize >> 6) & 3, route & 63);
        let new_route = self.routes[word] & (1 << bit) == 0;
        self.routes[word] |= 1 << bit;
        let at = e.unix_ms.max(self.first_unix_ms);
        self.ring[self.next as usize] = Seen {
            at_ms: (at - self.first_unix_ms) as u32,
            route,
            status: e.status,
            bytes_out: e.bytes_out.min(u64::from(u32::MAX)) as u32,
            new_route: new_route && self.requests > 0,
        };
        self.next = ((self.next as usize + 1) % WINDOW) as u8;
        self.len = (self.len as usize + 1).min(WINDOW) as u8;
        let hour = ((at / 3_600_000) % 24) as usize;
        self.hours[hour] = self.hours[hour].saturating_add(1);
        if self.last_client.is_some_and(|c| c != e.client) {
            self.client_changes = self.client_changes.saturating_add(1);
        }
        if self.requests > 0 && self.last_agent != e.user_agent {
            self.agent_changes = self.agent_changes.saturating_add(1);
        }
        self.rate = self.rate_at(at) + 1.0;
        self.last_client = Some(e.client);
        self.last_agent = e.user_agent;
        self.last_unix_ms = self.last_unix_ms.max(at);
        self.requests += 1;
    }

    /// The decayed rate at `unix_ms`.
    fn rate_at(&self, unix_ms: u64) -> f64 {
        let dt = unix_ms.saturating_sub(self.last_unix_ms) as f64;
        self.rate * (-dt / MINUTE_MS as f64).exp()
    }

    fn seen(&self) -> impl Iterator<Item = &Seen> {
        // Oldest first.
        let start = if (self.len as usize) < WINDOW {
            0
        } else {
            self.next as usize
        };
        (0..self.len as usize).map(move |i| &self.ring[(start + i) % WINDOW])
    }

    /// The features at `now_ms` (Unix milliseconds).
    pub fn features(&self, now_ms: u64) -> Features {
        let n = self.len as usize;
        let mut routes: Vec<u16> = Vec::with_capacity(n);
        let (mut new_routes, mut auth, mut client_err, mut not_found, mut bytes) = (0, 0, 0, 0, 0u64);
        let mut times = Vec::with_capacity(n);
        for s in self.seen() {
            if !routes.contains(&s.route) {
                routes.push(s.route);
            }
            new_routes += u32::from(s.new_route);
            auth += u32::from(s.status == 401 || s.status == 403);
            client_err += u32::from((400..500).contains(&s.status));
            not_found += u32::from(s.status == 404);
            bytes += u64::from(s.bytes_out);
            times.push(f64::from(s.at_ms));
        }
        let share = |x: u32| if n == 0 { 0.0 } else { f64::from(x) / n as f64 };
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let gap_variation = if gaps.len() < 3 {
            1.0
        } else {
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            if mean <= 0.0 {
                0.0
            } else {
                var.sqrt() / mean
            }
        };
        let total: u32 = self.hours.iter().map(|h| u32::from(*h)).sum();
        let hour = ((now_ms / 3_600_000) % 24) as usize;
        Features {
            rate_per_minute: self.rate_at(now_ms),
            distinct_routes: routes.len() as u32,
            new_route_share: share(new_routes),
            auth_failures: auth,
            client_error_ratio: share(client_err),
            not_found_ratio: share(not_found),
            bytes_out: bytes,
            client_changes: u32::from(self.client_changes),
            agent_changes: u32::from(self.agent_changes),
            hour_share: if total == 0 {
                0.0
            } else {
                f64::from(self.hours[hour]) / f64::from(total)
            },
            gap_variation,
            requests: self.requests,
        }
    }
}

/// Entities by key, bounded.
#[derive(Debug)]
pub struct EntityTable {
    map: HashMap<EntityKey, Entity>,
    cap: usize,
    idle_ms: u64,
    evicted: u64,
}

// === impl EntityTable ===

impl EntityTable {
    /// A table of at most `cap` entities, each forgotten after `idle_ms` without a request.
    pub fn new(cap: usize, idle_ms: u64) -> EntityTable {
        EntityTable {
            map: HashMap::new(),
            cap: cap.max(1),
            idle_ms,
            evicted: 0,
        }
    }

    /// Records a request for its session, principal and client.
    pub fn observe(&mut self, e: &RequestEvent) {
        let mut keys = [None, None, Some(EntityKey::Client(e.client))];
        if let Some(s) = e.session {
            keys[0] = Some(EntityKey::Session(s));
        }
        if let Some(p) = &e.subject {
            keys[1] = Some(EntityKey::Principal(p.clone()));
        }
        for key in keys.into_iter().flatten() {
            if !self.map.contains_key(&key) && self.map.len() >= self.cap {
                self.make_room(e.unix_ms);
            }
            self.map.entry(key).or_insert_with(|| Entity::new(e.unix_ms)).observe(e);
        }
    }

    fn make_room(&mut self, now_ms: u64) {
        self.expire(now_ms);
        while self.map.len() >= self.cap {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, v)| v.last_unix_ms)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.map.remove(&oldest);
            self.evicted += 1;
        }
    }

    /// Forgets entities idle since before `now_ms - idle`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.map.len();
        let idle = self.idle_ms;
        self.map.retain(|_, v| now_ms.saturating_sub(v.last_unix_ms) <= idle);
        before - self.map.len()
    }

    /// An entity's record.
    pub fn get(&self, key: &EntityKey) -> Option<&Entity> {
        self.map.get(key)
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entities evicted because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ms: u64, route: &str, status: u16, client: [u8; 4], agent: u64) -> RequestEvent {
        RequestEvent {
            unix_ms: ms,
            route: Some(Arc::from(route)),
            status,
            bytes_out: 1000,
            client: IpAddr::from(client),
            user_agent: agent,
            subject: Some(Arc::from("alice")),
            session: Some(7),
            ..Default::default()
        }
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn an_entity_stays_under_a_kibibyte() {
        let size = std::mem::size_of::<Entity>() + std::mem::size_of::<EntityKey>();
        // Plus the map's own overhead per slot (a control byte and load factor), which the
        // memory benchmark measures.
        assert!(size <= 1024, "{size} bytes");
    }

    #[test]
    fn features_describe_recent_behaviour() {
        let mut t = EntityTable::new(100, 3_600_000);
        // A person: a few routes, irregular gaps.
        let gaps = [4000, 9000, 2500, 15000, 7000, 3000, 11000];
        let mut now = T0;
        for (i, g) in gaps.iter().enumerate() {
            now += g;
            t.observe(&req(now, ["home", "orders", "home"][i % 3], 200, [10, 0, 0, 1], 1));
        }
        let f = t.get(&EntityKey::Session(7)).expect("session").features(now);
        assert_eq!(f.requests, 7);
        assert_eq!(f.distinct_routes, 2);
        assert!(f.gap_variation > 0.3, "{f:?}");
        assert_eq!((f.auth_failures, f.client_changes, f.agent_changes), (0, 0, 0));
        assert!(f.hour_share > 0.99, "all activity in this hour");

        // A machine: perfectly regular, breadth-first over many routes, 404s, from a new
        // address with a new agent.
        for i in 0..40u64 {
            now += 500;
            t.observe(&req(now, &format!("path-{i}"), 404, [192, 0, 2, 9], 2));
        }
        let f = t.get(&EntityKey::Session(7)).expect("session").features(now);
        assert!(f.gap_variation < 0.05, "{f:?}");
        assert!(f.not_found_ratio > 0.6 && f.new_route_share > 0.6, "{f:?}");
        assert_eq!((f.client_changes, f.agent_changes), (1, 1));
        assert!(f.rate_per_minute > 30.0, "{f:?}");
        // The client entity only saw its own requests.
        let c = t.get(&EntityKey::Client(IpAddr::from([192, 0, 2, 9]))).expect("client");
        assert_eq!(c.features(now).requests, 40);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_idle() {
        let mut t = EntityTable::new(10, 60_000);
        for i in 0..50u64 {
            let mut e = req(T0 + i * 1000, "r", 200, [10, 0, (i / 256) as u8, (i % 256) as u8], 1);
            e.session = None;
            e.subject = None;
            t.observe(&e);
            assert!(t.len() <= 10);
        }
        assert_eq!(t.evicted(), 40);
        // The newest stayed.
        assert!(t.get(&EntityKey::Client(IpAddr::from([10, 0, 0, 49]))).is_some());
        assert_eq!(t.expire(T0 + 49_000 + 60_001), 10);
        assert!(t.is_empty());
    }
}
