//! Identity: who is calling and how strongly they proved it.
//!
//! In the data path this sits between routing and forwarding (the `identify` stage of
//! `../shared/ARCHITECTURE.md`): [`jwt`] verifies tokens against a provider's keys;
//! [`provider`] keeps discovery and keys fresh, caches verified bearer tokens and speaks to the
//! token endpoint; [`login`] signs browsers in and out; [`session`] keeps their sessions;
//! [`check`] holds a caller to a route's requirements (scopes, claims, `acr`, `auth_time`);
//! [`assertion`] signs what upstreams receive; [`Revocations`] refuses revoked subjects;
//! [`certificate`] reads verified client certificates for upstreams.

pub mod assertion;
pub mod certificate;
pub mod jwt;
pub mod login;
pub mod provider;
pub mod session;

use crate::config::Requirements;
use jwt::Claims;

/// Why an authenticated caller may not use a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Scopes missing (space-separated, all the route requires).
    InsufficientScope(String),
    /// A required claim is absent or has another value.
    MissingClaim(String),
    /// The authentication is not strong or recent enough: step up (RFC 9470).
    StepUp {
        /// Accepted `acr` values, space-separated.
        acr_values: Option<String>,
        /// Longest accepted authentication age in seconds.
        max_age: Option<u64>,
        /// The RFC's wording of what is needed.
        description: &'static str,
    },
}

// === impl Refusal ===

impl Refusal {
    /// What exactly is missing, as a bounded code: `insufficient_scope`, `missing_claim`,
    /// `acr` or `max_age`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::StepUp { description, .. } if *description == STEP_UP_ACR => "acr",
            Refusal::StepUp { description, .. } if *description == STEP_UP_RISK => "risk",
            Refusal::StepUp { .. } => "max_age",
            other => other.reason(),
        }
    }

    /// Bounded label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::InsufficientScope(_) => "insufficient_scope",
            Refusal::MissingClaim(_) => "missing_claim",
            Refusal::StepUp { .. } => "step_up",
        }
    }
}

/// RFC 9470's description when the `acr` is not one the route accepts.
pub const STEP_UP_ACR: &str = "A different authentication level is required";
/// RFC 9470's description when the authentication is too old.
pub const STEP_UP_AGE: &str = "More recent authentication is required";
/// The step-up description when the request's risk asks for it.
pub const STEP_UP_RISK: &str = "Unusual activity: authenticate again to continue";

fn claim_matches(value: &serde_json::Value, want: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s == want,
        serde_json::Value::Array(items) => items.iter().any(|v| v.as_str() == Some(want)),
        serde_json::Value::Bool(b) => b.to_string() == want,
        serde_json::Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

/// Sets the identity headers for upstreams from a verified token: the subject and the selected
/// claims (lists joined with `,`; values that are not valid header text are left out).
pub fn set_upstream_headers(headers: &mut http::HeaderMap, names: &crate::config::IdentityHeaders, claims: &Claims) {
    let text = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            serde_json::Value::Array(items) => {
                Some(items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(","))
            }
            _ => None,
        }
    };
    if let Some(v) = claims
        .subject
        .as_deref()
        .and_then(|s| http::HeaderValue::from_str(s).ok())
    {
        headers.insert(&names.subject, v);
    }
    for (claim, header) in &names.claims {
        if let Some(v) = claims
            .all
            .get(claim)
            .and_then(text)
            .and_then(|t| http::HeaderValue::from_str(&t).ok())
        {
            headers.insert(header, v);
        }
    }
}

/// Checks a verified token's claims against a route's requirements at `now` (Unix seconds).
pub fn check(claims: &Claims, req: &Requirements, now: u64) -> Result<(), Refusal> {
    if !req.scopes.is_empty() {
        let granted: Vec<&str> = match (claims.all.get("scope"), claims.all.get("scp")) {
            (Some(serde_json::Value::String(s)), _) => s.split(' ').collect(),
            (_, Some(serde_json::Value::Array(a))) => a.iter().filter_map(|v| v.as_str()).collect(),
            (_, Some(serde_json::Value::String(s))) => s.split(' ').collect(),
            _ => Vec::new(),
        };
        if !req.scopes.iter().all(|s| granted.contains(&s.as_str())) {
            return Err(Refusal::InsufficientScope(req.scopes.join(" ")));
        }
    }
    for (name, want) in &req.claims {
        if !claims.all.get(name).is_some_and(|v| claim_matches(v, want)) {
            return Err(Refusal::MissingClaim(name.clone()));
        }
    }
    let acr_values = (!req.acr_values.is_empty()).then(|| req.acr_values.join(" "));
    let max_age = req.max_age.map(|m| m.as_secs());
    if !req.acr_values.is_empty() {
        let acr = claims.all.get("acr").and_then(|v| v.as_str());
        if !acr.is_some_and(|a| req.acr_values.iter().any(|v| v == a)) {
            return Err(Refusal::StepUp {
                acr_values,
                max_age,
                description: STEP_UP_ACR,
            });
        }
    }
    if let Some(max) = max_age {
        let fresh = claims
            .all
            .get("auth_time")
            .and_then(|v| v.as_u64())
            .is_some_and(|t| now.saturating_sub(t) <= max);
        if !fresh {
            return Err(Refusal::StepUp {
                acr_values,
                max_age,
                description: STEP_UP_AGE,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn claims(v: serde_json::Value) -> Claims {
        Claims {
            subject: Some("alice".into()),
            expires: u64::MAX,
            issued_at: None,
            all: v.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn scopes_claims_and_strength() {
        let now = 10_000;
        let c = claims(
            json!({ "scope": "read write", "groups": ["staff", "admins"], "tenant": "acme", "acr": "urn:mfa", "auth_time": now - 60 }),
        );
        let ok = Requirements {
            scopes: vec!["read".into()],
            claims: vec![("groups".into(), "admins".into()), ("tenant".into(), "acme".into())],
            acr_values: vec!["urn:pwd".into(), "urn:mfa".into()],
            max_age: Some(Duration::from_secs(300)),
        };
        assert_eq!(check(&c, &ok, now), Ok(()));
        let need = |f: &dyn Fn(&mut Requirements)| {
            let mut r = ok.clone();
            f(&mut r);
            check(&c, &r, now)
        };
        assert_eq!(
            need(&|r| r.scopes.push("delete".into())),
            Err(Refusal::InsufficientScope("read delete".into()))
        );
        assert_eq!(
            need(&|r| r.claims.push(("groups".into(), "root".into()))),
            Err(Refusal::MissingClaim("groups".into()))
        );
        assert_eq!(
            need(&|r| r.claims.push(("missing".into(), "x".into()))),
            Err(Refusal::MissingClaim("missing".into()))
        );
        assert!(matches!(
            need(&|r| r.acr_values = vec!["urn:hardware".into()]),
            Err(Refusal::StepUp {
                description: "A different authentication level is required",
                ..
            })
        ));
        assert_eq!(
            need(&|r| r.max_age = Some(Duration::from_secs(30))),
            Err(Refusal::StepUp {
                acr_values: Some("urn:pwd urn:mfa".into()),
                max_age: Some(30),
                description: "More recent authentication is required"
            })
        );
        // No auth_time at all cannot satisfy a max age.
        let bare = claims(json!({ "scp": ["read"] }));
        assert!(matches!(
            check(
                &bare,
                &Requirements {
                    max_age: Some(Duration::from_secs(60)),
                    ..Default::default()
                },
                now
            ),
            Err(Refusal::StepUp { .. })
        ));
        assert_eq!(
            check(
                &bare,
                &Requirements {
                    scopes: vec!["read".into()],
                    ..Default::default()
                },
                now
            ),
            Ok(())
        );
    }
}

/// Subjects whose tokens issued up to a moment are refused (admin `POST /identity/revoke`).
/// Kept across reloads; bounded.
#[derive(Debug, Default)]
pub struct Revocations {
    subjects: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// Most revoked subjects remembered; beyond it the oldest revocations are dropped.
pub const MAX_REVOCATIONS: usize = 100_000;

// === impl Revocations ===

impl Revocations {
    /// Revokes every token of `subject` issued at or before `now` (Unix seconds).
    pub fn revoke(&self, subject: &str, now: u64) {
        if let Ok(mut m) = self.subjects.lock() {
            if m.len() >= MAX_REVOCATIONS && !m.contains_key(subject) {
                if let Some(oldest) = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    m.remove(&oldest);
                }
            }
            m.insert(subject.to_string(), now);
        }
    }

    /// Whether these claims belong to a revoked token (a token without `iat` counts as old).
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let Some(sub) = claims.subject.as_deref() else {
            return false;
        };
        let Ok(m) = self.subjects.lock() else { return false };
        m.get(sub)
            .is_some_and(|&at| claims.issued_at.is_none_or(|iat| iat <= at))
    }

    /// Revoked subjects and when.
    pub fn list(&self) -> Vec<(String, u64)> {
        self.subjects
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}
