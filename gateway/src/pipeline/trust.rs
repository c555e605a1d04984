//! Trust stage: reads the baseline engine's risk for the request's context (its session,
//! principal and client address) from the lock-free [`RiskView`](baseline_engine::store::RiskView),
//! adds how strongly the caller proved who they are and the service's state, and maps the score
//! through the route's policy to allow, step up or deny.
//!
//! Reads never wait: one atomic load of the current snapshot and at most three hash lookups.
//! When the snapshot is older than `engine.stale_after` (or the engine is off) the route's
//! `on_unavailable` decides: `last_known` goes on with what was last published, `fail_closed`
//! answers 503. Either way it is counted.

use std::net::IpAddr;
use std::sync::Arc;

use baseline_engine::entity::EntityKey;
use baseline_engine::risk::{self, Assurance, Evidence, Reason};

use crate::config::TrustConfig;
use crate::identity::jwt::Claims;
use crate::Shared;

/// How much stricter the policy is with weakly identified callers while the service's traffic
/// is anomalous.
const SERVICE_ANOMALY_FACTOR: f64 = 1.5;

/// What the policy concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allow,
    /// Authenticate again, more strongly.
    StepUp,
    /// Refuse, and revoke.
    Deny,
}

// === impl Verdict ===

impl Verdict {
    /// Its name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::StepUp => "step_up",
            Verdict::Deny => "deny",
        }
    }
}

/// A request's assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The decision.
    pub verdict: Verdict,
    /// Risk in [0,1].
    pub score: f32,
    /// Top reasons, heaviest first.
    pub reasons: Vec<Reason>,
}

// === impl Assessment ===

impl Assessment {
    /// The reasons' signal names (bounded), for events, metrics and the span.
    pub fn signals(&self) -> Vec<&'static str> {
        self.reasons.iter().map(|r| r.signal).collect()
    }

    /// The reasons in words, joined, for logs.
    pub fn explain(&self) -> String {
        self.reasons.iter().map(Reason::text).collect::<Vec<_>>().join("; ")
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Browser session handle.
    pub session: Option<u64>,
    /// Verified subject.
    pub subject: Option<&'a Arc<str>>,
    /// Client address.
    pub client: IpAddr,
    /// Verified claims; `None` for an unauthenticated caller.
    pub claims: Option<&'a Claims>,
    /// Whether the route authenticates callers at all (else nobody can step up).
    pub can_step_up: bool,
}

/// The risk view could not be used and the route fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Whether the view is unusable now; counts it for `route` when so.
fn unavailable(
    view: &baseline_engine::store::RiskSnapshot,
    stale_ms: u64,
    route: &super::route::Route,
    trust: &TrustConfig,
) -> bool {
    let stale = view.stale(crate::unix_now_ms(), stale_ms);
    if stale {
        route.metrics.unavailable(trust.fail_closed);
    }
    stale
}

/// When credentials failed: whether the client address alone is risky enough to deny
/// (credential stuffing, enumeration from one address). A stale view does not deny here. (With
/// credentials that verify, [`assess`] weighs the address with the rest, and a deny revokes.)
pub fn screen(shared: &Shared, stale_ms: u64, trust: &TrustConfig, client: IpAddr) -> Option<Assessment> {
    let view = shared.risk.load();
    if view.stale(crate::unix_now_ms(), stale_ms) {
        return None;
    }
    let r = view.get(&EntityKey::Client(client))?;
    (f64::from(r.score) >= trust.deny_at).then(|| Assessment {
        verdict: Verdict::Deny,
        score: r.score,
        reasons: r.reasons.clone(),
    })
}

/// The full assessment of a request on a route with a trust policy: the risk view's current
/// snapshot through [`decide`], or [`Unavailable`] when it is stale and the route fails closed.
pub fn assess(
    shared: &Shared,
    stale_ms: u64,
    route: &super::route::Route,
    trust: &TrustConfig,
    ctx: &Context<'_>,
    now_secs: u64,
) -> Result<Assessment, Unavailable> {
    let view = shared.risk.load();
    if unavailable(&view, stale_ms, route, trust) && trust.fail_closed {
        return Err(Unavailable);
    }
    Ok(decide(&view, trust, ctx, now_secs))
}

/// The decision for a request from one snapshot of risk: the risks of its session, principal
/// and client, its identity assurance and the service's state, through the route's thresholds.
pub fn decide(
    view: &baseline_engine::store::RiskSnapshot,
    trust: &TrustConfig,
    ctx: &Context<'_>,
    now_secs: u64,
) -> Assessment {
    let mut ev = Evidence::new();
    let keys = [
        ctx.session.map(EntityKey::Session),
        ctx.subject.cloned().map(EntityKey::Principal),
        Some(EntityKey::Client(ctx.client)),
    ];
    for key in keys.iter().flatten() {
        if let Some(r) = view.get(key) {
            ev.absorb(&r.reasons);
        }
    }
    let stepped_up = ctx
        .claims
        .is_some_and(|c| crate::identity::check(c, &trust.step_up, now_secs).is_ok());
    let age_secs = ctx.claims.and_then(|c| {
        c.all
            .get("auth_time")
            .and_then(|v| v.as_u64())
            .or(c.issued_at)
            .map(|t| now_secs.saturating_sub(t))
    });
    risk::identity(
        &mut ev,
        &Assurance {
            authenticated: ctx.claims.is_some(),
            stepped_up,
            step_up_defined: ctx.can_step_up,
            age_secs,
        },
    );
    if view.service_anomalous && !stepped_up {
        ev.stricter("service_anomaly", SERVICE_ANOMALY_FACTOR);
    }
    let (score, reasons) = ev.finish(risk::MAX_REASONS);
    let verdict = if score >= trust.deny_at {
        Verdict::Deny
    } else if score >= trust.step_up_at && ctx.can_step_up && !stepped_up {
        Verdict::StepUp
    } else {
        Verdict::Allow
    };
    Assessment {
        verdict,
        score: score as f32,
        reasons,
    }
}
