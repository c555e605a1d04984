//! Entity behaviour: for each session, principal (subject) and client address, a small record
//! of its recent requests and habits, and the sliding-window features the risk model reads.
//!
//! Memory is bounded: each entity keeps its last [`WINDOW`] requests in a fixed ring (12 bytes
//! each), a 1024-bit filter of the paths it has used, the addresses and agents it is known to
//! use, a histogram of its hours of activity, and three [`Habit`]s (its own usual request rate,
//! bytes per request and timing). Records live in a slab (a vector reused through a free list)
//! and a hash index maps keys to slots, so memory grows with the entities held rather than with
//! the hash table's spare capacity: about 0.8 KiB per entity, measured in `bench/RESULTS.md`.
//! The table holds at most `cap` entities, forgets those idle longer than `idle`, and when full
//! evicts the least recently seen.
//!
//! Learning is guarded: a request the gateway refused (deny, step-up) still counts in the
//! recent window (it is evidence), but teaches nothing: no habit moves, no path or address
//! becomes known. Habits move at most by a bounded amount per hour of time, so a slow ramp cannot
//! walk them.

use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{AuthOutcome, Decision, RequestEvent};

/// Requests remembered per entity.
pub const WINDOW: usize = 32;
/// Only requests this recent (milliseconds) count in the window's features.
pub const RECENT_MS: u64 = 10 * 60_000;
/// The request rate's time constant, milliseconds.
const MINUTE_MS: u64 = 60_000;
/// Gaps the timing regularity is measured over.
pub const TIMING_GAPS: usize = 12;
/// Samples a habit needs before it judges.
pub const HABIT_WARMUP: u32 = 30;
/// Smallest spread a habit assumes (natural log units: a factor of about 1.35).
const HABIT_SPREAD_FLOOR: f64 = 0.3;
/// How fast a warm habit follows what it sees, per sample.
const HABIT_ALPHA: f64 = 0.05;

/// Who behaviour is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKey {
    /// A browser session (its handle).
    Session(u64),
    /// A verified subject.
    Principal(Arc<str>),
    /// A client address.
    Client(IpAddr),
}

// === impl EntityKey ===

impl EntityKey {
    /// Its kind: `session`, `principal` or `client`.
    pub fn kind(&self) -> &'static str {
        match self {
            EntityKey::Session(_) => "session",
            EntityKey::Principal(_) => "principal",
            EntityKey::Client(_) => "client",
        }
    }

    /// Parses `session:<handle>` (16 hex digits: the start of the session's admin handle),
    /// `principal:<subject>` or `client:<address>`.
    pub fn parse(text: &str) -> Option<EntityKey> {
        let (kind, id) = text.split_once(':')?;
        match kind {
            "session" if id.len() == 16 => u64::from_str_radix(id, 16).ok().map(EntityKey::Session),
            "principal" if !id.is_empty() => Some(EntityKey::Principal(Arc::from(id))),
            "client" => id.parse().ok().map(EntityKey::Client),
            _ => None,
        }
    }
}

impl std::fmt::Display for EntityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntityKey::Session(s) => write!(f, "session:{s:016x}"),
            EntityKey::Principal(p) => write!(f, "principal:{p}"),
            EntityKey::Client(c) => write!(f, "client:{c}"),
        }
    }
}

/// What an entity usually does with one quantity (in natural-log units): a level and a spread
/// learned from its own history. Past the warm-up the level moves at most `drift` per hour of
/// time, and the spread stays between a floor and twice what the warm-up measured, so neither a
/// slow ramp nor a run of outliers can walk the habit where an attacker wants it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Habit {
    level: f32,
    spread: f32,
    n: u32,
    /// Movement still allowed now (log units).
    budget: f32,
    /// Widest the spread may grow: twice what the warm-up measured.
    widest: f32,
    last_ms: u64,
}

// === impl Habit ===

impl Habit {
    /// Learns `x` at `now_ms`; past the warm-up the level moves by at most `drift_per_hour`
    /// per hour of time (a token bucket holding at most one hour's movement).
    pub fn learn(&mut self, x: f64, now_ms: u64, drift_per_hour: f64) {
        let (level, spread) = (f64::from(self.level), f64::from(self.spread));
        if self.n < HABIT_WARMUP {
            self.n += 1;
            let n = f64::from(self.n);
            let level = level + (x - level) / n;
            self.level = level as f32;
            self.spread = (spread + ((x - level).abs() - spread) / n) as f32;
            self.budget = drift_per_hour as f32;
            self.widest = (2.0 * f64::from(self.spread)).max(HABIT_SPREAD_FLOOR) as f32;
            self.last_ms = now_ms;
            return;
        }
        let hours = now_ms.saturating_sub(self.last_ms) as f64 / 3_600_000.0;
        let budget = (f64::from(self.budget) + hours * drift_per_hour).min(drift_per_hour);
        let step = (HABIT_ALPHA * (x - level)).clamp(-budget, budget);
        self.level = (level + step) as f32;
        self.budget = (budget - step.abs()) as f32;
        self.last_ms = now_ms;
        let s = spread.max(HABIT_SPREAD_FLOOR);
        let dev = (x - level).abs().min(4.0 * s);
        self.spread = (spread + HABIT_ALPHA * (dev - spread)).min(f64::from(self.widest)) as f32;
        self.n = self.n.saturating_add(1);
    }

    /// How many spreads `x` lies above the level; `None` before the warm-up.
    pub fn z(&self, x: f64) -> Option<f64> {
        (self.n >= HABIT_WARMUP).then(|| (x - f64::from(self.level)) / f64::from(self.spread).max(HABIT_SPREAD_FLOOR))
    }

    /// The usual range (level ± `k` spreads), back in the quantity's own units (`exp(x) - 1`).
    pub fn range(&self, k: f64) -> (f64, f64) {
        let s = f64::from(self.spread).max(HABIT_SPREAD_FLOOR);
        let l = f64::from(self.level);
        (((l - k * s).exp() - 1.0).max(0.0), (l + k * s).exp() - 1.0)
    }

    /// Whether it has seen enough to judge.
    pub fn warm(&self) -> bool {
        self.n >= HABIT_WARMUP
    }
}

/// How fast habits may move: natural-log units per hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Request rate (a factor of 2 in about 7 hours by default).
    pub rate: f64,
    /// Bytes per request (a factor of 2 a day by default).
    pub bytes: f64,
}

impl Default for Drift {
    fn default() -> Self {
        Drift {
            rate: 0.1,
            bytes: std::f64::consts::LN_2 / 24.0,
        }
    }
}

/// One remembered request (12 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    /// Milliseconds since the entity's first request (wraps after 49 days).
    at_ms: u32,
    /// Hash of the path.
    path: u16,
    status: u16,
    /// Response bytes, log-encoded ([`encode_bytes`]).
    bytes_out: u16,
    /// [`NEW_PATH`], [`NEW_PLACE`], [`REFUSED`], [`AUTH_FAILED`].
    flags: u8,
}

/// Bytes as a small float: an 11-bit mantissa and a 5-bit binary exponent (under 0.1% off,
/// up to 4 TB), decoded with a shift.
fn encode_bytes(n: u64) -> u16 {
    let e = (64 - n.leading_zeros()).saturating_sub(11).min(31);
    let m = (n >> e).min(2047);
    ((e as u16) << 11) | m as u16
}

fn decode_bytes(code: u16) -> u64 {
    u64::from(code & 2047) << (code >> 11)
}

/// The path was new to the entity.
const NEW_PATH: u8 = 1;
/// Both the address and the agent were new to the entity.
const NEW_PLACE: u8 = 2;
/// The gateway refused the request (deny or step-up).
const REFUSED: u8 = 4;
/// The credentials were missing, invalid or not enough for the route (not a step-up or a risk
/// decision: those are [`REFUSED`]).
const AUTH_FAILED: u8 = 8;

/// An entity's record.
#[derive(Debug, Clone)]
pub struct Entity {
    first_unix_ms: u64,
    last_unix_ms: u64,
    ring: [Seen; WINDOW],
    len: u8,
    next: u8,
    paths: [u64; 16],
    hours: [u16; 24],
    requests: u64,
    /// Requests per minute, decayed exponentially (one-minute time constant).
    rate: f32,
    /// Addresses and agents it is known to use (hashes; 0 is empty).
    clients: [u32; 4],
    agents: [u32; 4],
    last_client: u32,
    last_agent: u32,
    client_changes: u16,
    agent_changes: u16,
    /// Its usual request rate, bytes per request and timing regularity.
    habits: Habits,
}

/// An entity's own history, learned only from requests the gateway allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Habits {
    /// ln(1 + requests per minute), at each request.
    pub rate: Habit,
    /// ln(1 + mean response bytes per request over the recent window).
    pub bytes: Habit,
    /// ln(1 + coefficient of variation of the gaps between requests).
    pub timing: Habit,
}

/// The features the risk model reads, over the entity's recent requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Features {
    /// Remembered requests from the last [`RECENT_MS`].
    pub recent: u32,
    /// Requests per minute, the higher of two looks back: the last 10 seconds (times six) and
    /// the last minute. A burst shows at once; a stopped burst cools down as time passes.
    pub rate_per_minute: f64,
    /// Distinct paths among the recent requests.
    pub distinct_paths: u32,
    /// Distinct paths among the recent requests that were new to the entity.
    pub distinct_new_paths: u32,
    /// Share of the recent requests that went to a path new to the entity.
    pub new_path_share: f64,
    /// Requests among the recent ones whose credentials were missing, invalid or refused by the
    /// route's requirements.
    pub auth_failures: u32,
    /// Share of 4xx answers.
    pub client_error_ratio: f64,
    /// Share of 404 answers.
    pub not_found_ratio: f64,
    /// Mean response bytes per request over the last eight requests, however old.
    pub bytes_per_request: f64,
    /// Recent requests that came from an address and an agent both new to the entity.
    pub new_places: u32,
    /// Times the client address changed (for a session or principal), in all.
    pub client_changes: u32,
    /// Times the user agent changed, in all.
    pub agent_changes: u32,
    /// Share of the entity's past activity in the current hour of day (low: an unusual hour).
    pub hour_share: f64,
    /// Coefficient of variation of the latest [`TIMING_GAPS`] gaps between requests, however
    /// old (near 0: machine-regular); 1 when there are too few to tell.
    pub gap_variation: f64,
    /// Gaps the variation is computed over.
    pub gaps: u32,
    /// Requests seen in all.
    pub requests: u64,
    /// Requests the gateway refused among the recent ones.
    pub refused: u32,
}

fn fold16(h: u64) -> u16 {
    (h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48)) as u16
}

fn fold32(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32 | 1
}

fn client_hash(ip: IpAddr) -> u32 {
    let h = match ip {
        IpAddr::V4(v4) => crate::event::hash_user_agent(&v4.octets()),
        IpAddr::V6(v6) => crate::event::hash_user_agent(&v6.octets()),
    };
    fold32(h)
}

/// Whether the request was refused by the gateway's decision (and so teaches nothing).
pub fn refused(e: &RequestEvent) -> bool {
    !matches!(e.decision, Decision::Allow)
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
            paths: [0; 16],
            hours: [0; 24],
            requests: 0,
            rate: 0.0,
            clients: [0; 4],
            agents: [0; 4],
            last_client: 0,
            last_agent: 0,
            client_changes: 0,
            agent_changes: 0,
            habits: Habits::default(),
        }
    }

    fn observe(&mut self, e: &RequestEvent, drift: &Drift) {
        let learn = !refused(e);
        let path = fold16(e.path);
        // Two bits per path in a 1024-bit filter.
        let (p1, p2) = ((path & 1023) as usize, ((path >> 6) ^ (path << 4)) as usize & 1023);
        let known_path = self.paths[p1 >> 6] & (1 << (p1 & 63)) != 0 && self.paths[p2 >> 6] & (1 << (p2 & 63)) != 0;
        if learn {
            self.paths[p1 >> 6] |= 1 << (p1 & 63);
            self.paths[p2 >> 6] |= 1 << (p2 & 63);
        }
        let client = client_hash(e.client);
        let agent = fold32(e.user_agent);
        let new_place = self.requests > 0 && !self.clients.contains(&client) && !self.agents.contains(&agent);
        let at = e.unix_ms.max(self.first_unix_ms);
        let mut flags = 0;
        if !known_path && self.requests > 0 {
            flags |= NEW_PATH;
        }
        if new_place {
            flags |= NEW_PLACE;
        }
        if !learn {
            flags |= REFUSED;
        }
        if matches!(
            e.auth,
            AuthOutcome::Missing | AuthOutcome::Invalid | AuthOutcome::Refused
        ) {
            flags |= AUTH_FAILED;
        }
        self.ring[self.next as usize] = Seen {
            at_ms: (at - self.first_unix_ms) as u32,
            path,
            status: e.status,
            bytes_out: encode_bytes(e.bytes_out),
            flags,
        };
        self.next = ((self.next as usize + 1) % WINDOW) as u8;
        self.len = (self.len as usize + 1).min(WINDOW) as u8;
        if self.requests > 0 && self.last_client != client {
            self.client_changes = self.client_changes.saturating_add(1);
        }
        if self.requests > 0 && self.last_agent != agent {
            self.agent_changes = self.agent_changes.saturating_add(1);
        }
        self.rate = (self.rate_at(at) + 1.0) as f32;
        self.last_client = client;
        self.last_agent = agent;
        self.last_unix_ms = self.last_unix_ms.max(at);
        self.requests += 1;
        if learn {
            let hour = ((at / 3_600_000) % 24) as usize;
            self.hours[hour] = self.hours[hour].saturating_add(1);
            remember(&mut self.clients, client);
            remember(&mut self.agents, agent);
            // Only the three features habits are made of (the rest are for scoring).
            self.habits.rate.learn(self.rate_per_minute(at).ln_1p(), at, drift.rate);
            if self.len >= 4 {
                self.habits
                    .bytes
                    .learn(self.bytes_per_request().ln_1p(), at, drift.bytes);
            }
            let (gaps, variation) = self.gap_variation();
            if gaps >= 8 {
                self.habits.timing.learn(variation.ln_1p(), at, drift.rate);
            }
        }
    }

    /// The decayed rate at `unix_ms`.
    fn rate_at(&self, unix_ms: u64) -> f64 {
        let dt = unix_ms.saturating_sub(self.last_unix_ms) as f64;
        f64::from(self.rate) * (-dt / MINUTE_MS as f64).exp()
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

    /// The entity's own history.
    pub fn habits(&self) -> &Habits {
        &self.habits
    }

    /// When it was last seen, Unix milliseconds.
    pub fn last_seen(&self) -> u64 {
        self.last_unix_ms
    }

    /// The `k`-th latest request remembered (0: the latest); `k` below `len`.
    fn latest(&self, k: usize) -> &Seen {
        &self.ring[(self.next as usize + WINDOW - 1 - k) % WINDOW]
    }

    /// The recent requests at `now_ms`: those of the last `RECENT_MS`.
    fn recent(&self, now_ms: u64) -> impl Iterator<Item = &Seen> {
        let since = now_ms.saturating_sub(RECENT_MS).saturating_sub(self.first_unix_ms);
        self.seen().filter(move |s| u64::from(s.at_ms) >= since)
    }

    /// Requests per minute at `now_ms`: the last 10 s scaled to a minute, or the last minute,
    /// whichever is higher.
    fn rate_per_minute(&self, now_ms: u64) -> f64 {
        let now_rel = now_ms.saturating_sub(self.first_unix_ms);
        let (mut in10, mut in60) = (0u32, 0u32);
        // Every remembered request, in ring order (the counts do not depend on the order, and
        // a request of the last minute is always among the recent ones).
        for s in &self.ring[..self.len as usize] {
            let age = now_rel.saturating_sub(u64::from(s.at_ms));
            in10 += u32::from(age < 10_000);
            in60 += u32::from(age < MINUTE_MS);
        }
        f64::from(in10 * 6).max(f64::from(in60))
    }

    /// Mean bytes sent over the last 8 answers.
    fn bytes_per_request(&self) -> f64 {
        let last8 = (self.len as usize).min(8);
        let bytes8: u64 = (0..last8).map(|k| decode_bytes(self.latest(k).bytes_out)).sum();
        if last8 == 0 {
            0.0
        } else {
            bytes8 as f64 / last8 as f64
        }
    }

    /// Regularity over the latest gaps, however old: how many, and their coefficient of
    /// variation (1 with fewer than three). A change of rhythm shows within a dozen requests,
    /// and a slow but steady script is still seen as one.
    fn gap_variation(&self) -> (u32, f64) {
        let mut times = [0u32; TIMING_GAPS + 1];
        let kept = (self.len as usize).min(TIMING_GAPS + 1);
        // Oldest first.
        for (i, t) in times[..kept].iter_mut().enumerate() {
            *t = self.latest(kept - 1 - i).at_ms;
        }
        let tail = &times[..kept];
        let gaps = tail.len().saturating_sub(1) as u32;
        let (mut sum, mut sum2) = (0.0f64, 0.0f64);
        for w in tail.windows(2) {
            let g = f64::from(w[1].wrapping_sub(w[0]));
            sum += g;
            sum2 += g * g;
        }
        let variation = if gaps < 3 {
            1.0
        } else {
            let mean = sum / f64::from(gaps);
            let var = (sum2 / f64::from(gaps) - mean * mean).max(0.0);
            if mean <= 0.0 {
                0.0
            } else {
                var.sqrt() / mean
            }
        };
        (gaps, variation)
    }

    /// The features at `now_ms` (Unix milliseconds).
    pub fn features(&self, now_ms: u64) -> Features {
        let mut paths = [0u16; WINDOW];
        let mut np = 0usize;
        let mut fresh = [0u16; WINDOW];
        let mut nf = 0usize;
        let (mut n, mut new_paths, mut auth, mut client_err, mut not_found) = (0u32, 0, 0, 0, 0);
        let (mut new_places, mut refused) = (0, 0);
        for s in self.recent(now_ms) {
            n += 1;
            if !paths[..np].contains(&s.path) {
                paths[np] = s.path;
                np += 1;
            }
            if s.flags & NEW_PATH != 0 && !fresh[..nf].contains(&s.path) {
                fresh[nf] = s.path;
                nf += 1;
            }
            new_paths += u32::from(s.flags & NEW_PATH != 0);
            new_places += u32::from(s.flags & NEW_PLACE != 0);
            refused += u32::from(s.flags & REFUSED != 0);
            auth += u32::from(s.flags & AUTH_FAILED != 0);
            client_err += u32::from((400..500).contains(&s.status));
            not_found += u32::from(s.status == 404);
        }
        let share = |x: u32| if n == 0 { 0.0 } else { f64::from(x) / f64::from(n) };
        let (gaps, gap_variation) = self.gap_variation();
        let total: u32 = self.hours.iter().map(|h| u32::from(*h)).sum();
        let hour = ((now_ms / 3_600_000) % 24) as usize;
        Features {
            recent: n,
            rate_per_minute: self.rate_per_minute(now_ms),
            distinct_paths: np as u32,
            distinct_new_paths: nf as u32,
            new_path_share: share(new_paths),
            auth_failures: auth,
            client_error_ratio: share(client_err),
            not_found_ratio: share(not_found),
            bytes_per_request: self.bytes_per_request(),
            new_places,
            client_changes: u32::from(self.client_changes),
            agent_changes: u32::from(self.agent_changes),
            hour_share: if total == 0 {
                0.0
            } else {
                f64::from(self.hours[hour]) / f64::from(total)
            },
            gap_variation,
            gaps,
            requests: self.requests,
            refused,
        }
    }
}

/// What is kept of an entity across a restart: its habits and what it is known to use (the
/// recent window is evidence of the moment and is not kept).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntityState {
    /// [`EntityKey`] as text.
    pub key: String,
    first_ms: u64,
    last_ms: u64,
    requests: u64,
    paths: [u64; 16],
    hours: [u16; 24],
    clients: [u32; 4],
    agents: [u32; 4],
    rate: Habit,
    bytes: Habit,
    timing: Habit,
}

// === impl EntityState ===

impl EntityState {
    /// Whether its numbers make sense (finite habits, a key that parses).
    pub fn is_sane(&self) -> bool {
        let ok = |h: &Habit| h.level.is_finite() && h.spread.is_finite() && h.spread >= 0.0 && h.budget.is_finite();
        EntityKey::parse(&self.key).is_some()
            && ok(&self.rate)
            && ok(&self.bytes)
            && ok(&self.timing)
            && self.first_ms <= self.last_ms
    }
}

/// Keeps `x` among the four most recently learned values.
fn remember(slots: &mut [u32; 4], x: u32) {
    if let Some(i) = slots.iter().position(|s| *s == x) {
        slots[..=i].rotate_right(1);
    } else {
        slots.rotate_right(1);
        slots[0] = x;
    }
}

/// Entities by key, bounded: records in a slab, a hash index from key to slot.
#[derive(Debug)]
pub struct EntityTable {
    index: crate::store::Map<EntityKey, u32>,
    slots: Vec<Option<(EntityKey, Entity)>>,
    free: Vec<u32>,
    cap: usize,
    idle_ms: u64,
    evicted: u64,
    drift: Drift,
}

// === impl EntityTable ===

impl EntityTable {
    /// A table of at most `cap` entities, each forgotten after `idle_ms` without a request.
    pub fn new(cap: usize, idle_ms: u64) -> EntityTable {
        EntityTable {
            index: crate::store::Map::default(),
            slots: Vec::new(),
            free: Vec::new(),
            cap: cap.clamp(1, u32::MAX as usize),
            idle_ms,
            evicted: 0,
            drift: Drift::default(),
        }
    }

    /// Sets how fast habits may move.
    pub fn with_drift(mut self, drift: Drift) -> EntityTable {
        self.drift = drift;
        self
    }

    /// The keys a request is recorded under: its session, principal and client.
    pub fn keys(e: &RequestEvent) -> [Option<EntityKey>; 3] {
        [
            e.session.map(EntityKey::Session),
            e.subject.clone().map(EntityKey::Principal),
            Some(EntityKey::Client(e.client)),
        ]
    }

    /// Records a request for its session, principal and client.
    pub fn observe(&mut self, e: &RequestEvent) {
        for key in Self::keys(e).into_iter().flatten() {
            self.observe_as(key, e);
        }
    }

    /// Records a request for one entity.
    pub fn observe_as(&mut self, key: EntityKey, e: &RequestEvent) {
        let drift = self.drift;
        if let Some(&i) = self.index.get(&key) {
            if let Some((_, entity)) = self.slots.get_mut(i as usize).and_then(Option::as_mut) {
                entity.observe(e, &drift);
            }
            return;
        }
        if self.index.len() >= self.cap {
            self.make_room(e.unix_ms);
        }
        let mut entity = Entity::new(e.unix_ms);
        entity.observe(e, &drift);
        self.insert(key, entity);
    }

    fn insert(&mut self, key: EntityKey, entity: Entity) {
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some((key.clone(), entity));
                i
            }
            None => {
                self.slots.push(Some((key.clone(), entity)));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
    }

    /// Removes every entity `gone` says so of; returns how many.
    fn remove_where(&mut self, gone: impl Fn(&Entity) -> bool) -> usize {
        let mut n = 0;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|(_, e)| gone(e)) {
                if let Some((key, _)) = slot.take() {
                    self.index.remove(&key);
                    self.free.push(i as u32);
                    n += 1;
                }
            }
        }
        n
    }

    fn make_room(&mut self, now_ms: u64) {
        self.expire(now_ms);
        if self.index.len() < self.cap {
            return;
        }
        // Evict the least recently seen eighth at once, so a full table under a flood of new
        // keys pays one scan per many insertions, not one each.
        let mut ages: Vec<u64> = self.entities().map(|(_, e)| e.last_unix_ms).collect();
        let k = (ages.len() / 8).max(1).min(ages.len() - 1);
        let (_, cut, _) = ages.select_nth_unstable(k);
        let cut = *cut;
        self.evicted += self.remove_where(|e| e.last_unix_ms <= cut) as u64;
    }

    fn entities(&self) -> impl Iterator<Item = (&EntityKey, &Entity)> {
        self.slots.iter().flatten().map(|(k, e)| (k, e))
    }

    /// Forgets entities idle since before `now_ms - idle`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let idle = self.idle_ms;
        self.remove_where(|e| now_ms.saturating_sub(e.last_unix_ms) > idle)
    }

    /// An entity's record.
    pub fn get(&self, key: &EntityKey) -> Option<&Entity> {
        let i = *self.index.get(key)?;
        self.slots.get(i as usize)?.as_ref().map(|(_, e)| e)
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Entities evicted because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// What to keep across a restart, most recently seen first.
    pub fn save(&self) -> Vec<EntityState> {
        let mut out: Vec<EntityState> = self
            .entities()
            .map(|(k, e)| EntityState {
                key: k.to_string(),
                first_ms: e.first_unix_ms,
                last_ms: e.last_unix_ms,
                requests: e.requests,
                paths: e.paths,
                hours: e.hours,
                clients: e.clients,
                agents: e.agents,
                rate: e.habits.rate,
                bytes: e.habits.bytes,
                timing: e.habits.timing,
            })
            .collect();
        out.sort_by(|a, b| b.last_ms.cmp(&a.last_ms).then_with(|| a.key.cmp(&b.key)));
        out
    }

    /// Takes back saved entities (up to the table's cap, most recent first); returns how many.
    /// Call [`EntityState::is_sane`] on each first.
    pub fn restore(&mut self, states: Vec<EntityState>) -> usize {
        let mut n = 0;
        for s in states {
            if self.index.len() >= self.cap {
                break;
            }
            let Some(key) = EntityKey::parse(&s.key).filter(|k| !self.index.contains_key(k)) else {
                continue;
            };
            let mut e = Entity::new(s.first_ms);
            e.last_unix_ms = s.last_ms;
            e.requests = s.requests;
            e.paths = s.paths;
            e.hours = s.hours;
            e.clients = s.clients;
            e.agents = s.agents;
            e.habits = Habits {
                rate: s.rate,
                bytes: s.bytes,
                timing: s.timing,
            };
            self.insert(key, e);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ms: u64, route: &str, status: u16, client: [u8; 4], agent: u64) -> RequestEvent {
        RequestEvent {
            unix_ms: ms,
            route: Some(Arc::from(route)),
            path: crate::event::hash_path(route.as_bytes()),
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
        // A slab slot, plus an index entry (key and slot number); the index's spare capacity
        // and the allocator's overhead are what the memory benchmark adds.
        let size = std::mem::size_of::<Option<(EntityKey, Entity)>>() + std::mem::size_of::<(EntityKey, u32)>();
        assert!(size <= 800, "{size} bytes");
    }

    #[test]
    fn bytes_are_kept_within_a_thousandth() {
        for n in [0u64, 1, 999, 2047, 2048, 2049, 65_537, 10_000_000, 1 << 40] {
            let back = decode_bytes(encode_bytes(n));
            assert!(back <= n && (n - back) as f64 <= n as f64 / 1024.0, "{n} -> {back}");
        }
    }

    #[test]
    fn keys_print_and_parse() {
        for k in [
            EntityKey::Session(42),
            EntityKey::Principal(Arc::from("alice@example.com")),
            EntityKey::Client(IpAddr::from([10, 0, 0, 1])),
            EntityKey::Client("2001:db8::1".parse().expect("v6")),
        ] {
            assert_eq!(EntityKey::parse(&k.to_string()), Some(k));
        }
        for bad in [
            "",
            "session",
            "session:x",
            "session:42",
            "principal:",
            "client:300.1.1.1",
            "user:bob",
        ] {
            assert_eq!(EntityKey::parse(bad), None, "{bad}");
        }
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
        assert_eq!((f.requests, f.recent), (7, 7));
        assert_eq!(f.distinct_paths, 2);
        assert!(f.gap_variation > 0.3, "{f:?}");
        assert_eq!(
            (f.auth_failures, f.client_changes, f.agent_changes, f.new_places),
            (0, 0, 0, 0)
        );
        assert!(f.hour_share > 0.99, "all activity in this hour");

        // A machine: perfectly regular, breadth-first over many paths, 404s, from a new
        // address with a new agent.
        for i in 0..40u64 {
            now += 500;
            t.observe(&req(now, &format!("path-{i}"), 404, [192, 0, 2, 9], 2));
        }
        let f = t.get(&EntityKey::Session(7)).expect("session").features(now);
        assert!(f.gap_variation < 0.05, "{f:?}");
        assert!(f.not_found_ratio > 0.6 && f.new_path_share > 0.6, "{f:?}");
        assert_eq!(f.distinct_paths, 32);
        assert_eq!((f.client_changes, f.agent_changes), (1, 1));
        assert!(f.rate_per_minute > 30.0, "{f:?}");
        // The client entity only saw its own requests.
        let c = t.get(&EntityKey::Client(IpAddr::from([192, 0, 2, 9]))).expect("client");
        assert_eq!(c.features(now).requests, 40);
        // Ten quiet minutes later nothing is recent any more.
        let f = t
            .get(&EntityKey::Session(7))
            .expect("session")
            .features(now + RECENT_MS + 1);
        assert_eq!((f.recent, f.distinct_paths, f.auth_failures), (0, 0, 0));
    }

    #[test]
    fn window_summaries_read_the_ring_in_order_once_it_wraps() {
        let mut t = EntityTable::new(10, 3_600_000);
        let mut now = T0;
        // Before, at and past the ring's length, with uneven gaps and sizes.
        for i in 0..(2 * WINDOW as u64 + 5) {
            now += 300 + (i * 7919) % 4000;
            let mut e = req(now, "home", 200, [10, 0, 0, 1], 1);
            e.bytes_out = 100 + (i * 104_729) % 50_000;
            t.observe(&e);
            let entity = t.get(&EntityKey::Session(7)).expect("session");
            // The same summaries computed from the requests in the order they came.
            let seen: Vec<Seen> = entity.seen().copied().collect();
            let last8 = &seen[seen.len().saturating_sub(8)..];
            let bytes = last8.iter().map(|s| decode_bytes(s.bytes_out)).sum::<u64>() as f64 / last8.len() as f64;
            assert_eq!(entity.bytes_per_request(), bytes, "after {i}");
            let tail = &seen[seen.len().saturating_sub(TIMING_GAPS + 1)..];
            let gaps: Vec<f64> = tail.windows(2).map(|w| f64::from(w[1].at_ms - w[0].at_ms)).collect();
            assert_eq!(entity.gap_variation().0 as usize, gaps.len(), "after {i}");
            if gaps.len() >= 3 {
                let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
                let var = gaps.iter().map(|g| g * g).sum::<f64>() / gaps.len() as f64 - mean * mean;
                assert!(
                    (entity.gap_variation().1 - var.max(0.0).sqrt() / mean).abs() < 1e-9,
                    "after {i}"
                );
            }
            let rel = now - entity.first_unix_ms;
            let in10 = seen.iter().filter(|s| rel - u64::from(s.at_ms) < 10_000).count() as f64;
            let in60 = seen.iter().filter(|s| rel - u64::from(s.at_ms) < MINUTE_MS).count() as f64;
            assert_eq!(entity.rate_per_minute(now), (6.0 * in10).max(in60), "after {i}");
        }
    }

    #[test]
    fn refused_requests_count_as_evidence_but_teach_nothing() {
        let mut t = EntityTable::new(100, 3_600_000);
        let mut now = T0;
        for i in 0..60u64 {
            now += 20_000 + (i * 7919 % 13) * 1000;
            t.observe(&req(now, ["home", "orders"][i as usize % 2], 200, [10, 0, 0, 1], 1));
        }
        let key = EntityKey::Principal(Arc::from("alice"));
        let before = *t.get(&key).expect("alice").habits();
        assert!(before.rate.warm() && before.bytes.warm());
        for i in 0..30u64 {
            now += 100;
            let mut e = req(now, &format!("secret-{i}"), 200, [192, 0, 2, 1], 9);
            e.bytes_out = 10_000_000;
            e.decision = Decision::Deny { reasons: vec!["risk"] };
            t.observe(&e);
        }
        let entity = t.get(&key).expect("alice");
        assert_eq!(*entity.habits(), before, "denied traffic moved a habit");
        let f = entity.features(now);
        assert_eq!(f.refused, 30);
        assert!(f.bytes_per_request > 1_000_000.0);
        // The refused paths and address did not become known: the same again is still new.
        let mut e = req(now + 100, "secret-1", 200, [192, 0, 2, 1], 9);
        e.decision = Decision::Deny { reasons: vec!["risk"] };
        t.observe(&e);
        let f = t.get(&key).expect("alice").features(now + 100);
        assert!(f.new_path_share > 0.9 && f.new_places == 31, "{f:?}");
    }

    #[test]
    fn saved_entities_come_back_with_their_habits() {
        let mut t = EntityTable::new(100, 3_600_000);
        let mut now = T0;
        for i in 0..50u64 {
            now += 30_000 + i * 100;
            t.observe(&req(now, ["home", "orders"][i as usize % 2], 200, [10, 0, 0, 1], 1));
        }
        let saved = t.save();
        assert_eq!(saved.len(), 3);
        assert!(saved.iter().all(EntityState::is_sane));
        let json = serde_json::to_string(&saved).expect("json");
        let back: Vec<EntityState> = serde_json::from_str(&json).expect("parse");
        let mut fresh = EntityTable::new(100, 3_600_000);
        assert_eq!(fresh.restore(back), 3);
        let key = EntityKey::Principal(Arc::from("alice"));
        let (a, b) = (t.get(&key).expect("old"), fresh.get(&key).expect("restored"));
        assert_eq!(a.habits(), b.habits());
        assert_eq!(a.features(now).hour_share, b.features(now).hour_share);
        // A known path and place stay known; the recent window starts empty.
        let f = b.features(now);
        assert_eq!((f.recent, f.requests), (0, 50));
        let mut fresh2 = fresh;
        fresh2.observe(&req(now + 1000, "home", 200, [10, 0, 0, 1], 1));
        let f = fresh2.get(&key).expect("restored").features(now + 1000);
        assert_eq!((f.new_path_share, f.new_places), (0.0, 0));
        // Nonsense is refused.
        let mut bad = saved[0].clone();
        bad.rate.level = f32::NAN;
        assert!(!bad.is_sane());
        bad.key = "user:x".into();
        assert!(!bad.is_sane());
    }

    #[test]
    fn habits_move_no_faster_than_their_drift() {
        let mut h = Habit::default();
        let mut now = T0;
        for _ in 0..HABIT_WARMUP {
            now += 60_000;
            h.learn(2.0, now, 0.1);
        }
        assert!((f64::from(h.level) - 2.0).abs() < 1e-6);
        // An hour of a value far above: the level moves by at most 0.1 (plus the hour's budget
        // it started with).
        for _ in 0..60 {
            now += 60_000;
            h.learn(10.0, now, 0.1);
        }
        assert!(f64::from(h.level) <= 2.0 + 0.2 + 1e-6, "{h:?}");
        assert!(h.z(10.0).expect("warm") > 4.0);
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
        assert_eq!(t.evicted() as usize + t.len(), 50);
        // The newest stayed.
        assert!(t.get(&EntityKey::Client(IpAddr::from([10, 0, 0, 49]))).is_some());
        let n = t.len();
        assert_eq!(t.expire(T0 + 49_000 + 60_001), n);
        assert!(t.is_empty());
    }
}
