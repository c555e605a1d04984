use std::net::IpAddr;

use super::*;
use crate::event::{hash_path, Decision};

const T0: u64 = 1_800_000_000_000;

fn ev(ms: u64, who: &str, client: [u8; 4], agent: u64, path: &str, status: u16, bytes: u64) -> RequestEvent {
    RequestEvent {
        unix_ms: ms,
        route: Some(Arc::from("api")),
        path: hash_path(path.as_bytes()),
        status,
        bytes_out: bytes,
        client: IpAddr::from(client),
        user_agent: agent,
        subject: (!who.is_empty()).then(|| Arc::from(who)),
        ..Default::default()
    }
}

fn risk_of(view: &RiskView, key: &EntityKey) -> f32 {
    view.load().get(key).map(|r| r.score).unwrap_or(0.0)
}

/// A person's day: a handful of paths, irregular gaps around a minute.
fn warm_up(a: &mut Assessor, who: &str, client: [u8; 4], start: u64, n: u64) -> u64 {
    let mut now = start;
    for i in 0..n {
        now += 20_000 + (i * 7919 % 17) * 5_000;
        let path = ["/home", "/orders", "/orders/1", "/profile", "/search"][(i * 31 % 5) as usize];
        a.observe(&ev(now, who, client, 1, path, 200, 2_000 + (i * 13 % 7) * 100));
        a.publish(now, now, false);
    }
    now
}

fn assessor() -> (Assessor, Arc<RiskView>) {
    let view = Arc::new(RiskView::new());
    let cfg = AssessConfig {
        population: false,
        ..Default::default()
    };
    (Assessor::new(cfg, view.clone()), view)
}

#[test]
fn a_person_at_their_usual_pace_has_no_risk() {
    let (mut a, view) = assessor();
    warm_up(&mut a, "alice", [10, 0, 0, 1], T0, 200);
    assert_eq!(risk_of(&view, &EntityKey::Principal(Arc::from("alice"))), 0.0);
    assert_eq!(risk_of(&view, &EntityKey::Client(IpAddr::from([10, 0, 0, 1]))), 0.0);
    assert!(!view.load().stale(T0, 1000));
}

#[test]
fn scraping_enumeration_and_stuffing_are_risky_within_twenty_requests() {
    let (mut a, view) = assessor();
    let mut now = warm_up(&mut a, "alice", [10, 0, 0, 1], T0, 60);
    let alice = EntityKey::Principal(Arc::from("alice"));
    // Scraping: fast, breadth-first.
    let mut first = None;
    for i in 0..40u64 {
        now += 400;
        a.observe(&ev(now, "alice", [10, 0, 0, 1], 1, &format!("/items/{i}"), 200, 2_000));
        a.publish(now, now, false);
        if first.is_none() && risk_of(&view, &alice) >= 0.5 {
            first = Some(i + 1);
        }
    }
    assert!(first.is_some_and(|n| n <= 20), "scraping flagged after {first:?}");
    let r = view.load().get(&alice).cloned().expect("risky");
    assert!(r.reasons.iter().any(|x| x.signal == "scraping"), "{:?}", r.reasons);

    // Enumeration from an anonymous client: 404 bursts.
    let enumerator = EntityKey::Client(IpAddr::from([192, 0, 2, 7]));
    let mut first = None;
    for i in 0..30u64 {
        now += 3_000 + (i % 5) * 700;
        a.observe(&ev(now, "", [192, 0, 2, 7], 5, &format!("/admin{i}"), 404, 100));
        a.publish(now, now, false);
        if first.is_none() && risk_of(&view, &enumerator) >= 0.5 {
            first = Some(i + 1);
        }
    }
    assert!(first.is_some_and(|n| n <= 20), "enumeration flagged after {first:?}");

    // Credential stuffing: many failures from one address.
    let stuffer = EntityKey::Client(IpAddr::from([198, 51, 100, 3]));
    let mut first = None;
    for i in 0..30u64 {
        now += 1_000;
        let mut e = ev(now, "", [198, 51, 100, 3], 6, "/login", 401, 50);
        e.auth = crate::event::AuthOutcome::Invalid;
        e.decision = Decision::Deny {
            reasons: vec!["invalid_token"],
        };
        a.observe(&e);
        a.publish(now, now, false);
        if first.is_none() && risk_of(&view, &stuffer) >= 0.85 {
            first = Some(i + 1);
        }
    }
    assert!(first.is_some_and(|n| n <= 20), "stuffing denied after {first:?}");
    // Ten quiet minutes later the address is forgiven.
    now += RISK_HOLDS_MS + 1;
    a.publish(now, now, false);
    assert_eq!(risk_of(&view, &stuffer), 0.0);
}

#[test]
fn a_stolen_token_from_a_new_place_is_risky() {
    let (mut a, view) = assessor();
    let now = warm_up(&mut a, "bob", [10, 0, 0, 2], T0, 60);
    let bob = EntityKey::Principal(Arc::from("bob"));
    a.observe(&ev(now + 5_000, "bob", [203, 0, 113, 9], 77, "/orders", 200, 2_000));
    a.publish(now + 5_000, now + 5_000, false);
    let r = view.load().get(&bob).cloned().expect("risky");
    assert!(r.score >= 0.5, "{r:?}");
    assert_eq!(r.reasons[0].signal, "new_place");
    // A new address with the usual agent (a phone moving networks) is not.
    let (mut a, view) = assessor();
    let now = warm_up(&mut a, "bob", [10, 0, 0, 2], T0, 60);
    a.observe(&ev(now + 5_000, "bob", [203, 0, 113, 9], 1, "/orders", 200, 2_000));
    a.publish(now + 5_000, now + 5_000, false);
    assert!(risk_of(&view, &bob) < 0.5);
}

#[test]
fn slow_poisoning_is_still_flagged_and_denied_traffic_teaches_nothing() {
    let (mut a, view) = assessor();
    let mut now = warm_up(&mut a, "carol", [10, 0, 0, 3], T0, 100);
    let carol = EntityKey::Principal(Arc::from("carol"));
    // Bytes per request growing by half each simulated day, over six days, at the usual pace.
    let mut flagged_at = None;
    for i in 0..(6 * 24 * 12u64) {
        now += 300_000;
        let day = i as f64 / (24.0 * 12.0);
        let bytes = (2_300.0 * 1.5f64.powf(day * 3.0)) as u64;
        let path = ["/home", "/orders", "/profile"][(i % 3) as usize];
        a.observe(&ev(now, "carol", [10, 0, 0, 3], 1, path, 200, bytes));
        a.publish(now, now, false);
        if flagged_at.is_none() && risk_of(&view, &carol) >= 0.5 {
            flagged_at = Some(day);
        }
    }
    assert!(
        flagged_at.is_some(),
        "a ramp of x{:.0} over six days was never flagged",
        1.5f64.powf(18.0)
    );

    // Denied traffic leaves the habits where they were.
    let (mut a, _view) = assessor();
    let mut now = warm_up(&mut a, "dave", [10, 0, 0, 4], T0, 100);
    let dave = EntityKey::Principal(Arc::from("dave"));
    let before = *a.table.get(&dave).expect("dave").habits();
    for i in 0..500u64 {
        now += 60_000;
        let mut e = ev(now, "dave", [10, 0, 0, 4], 1, "/export", 200, 50_000_000 + i);
        e.decision = Decision::Deny { reasons: vec!["risk"] };
        a.observe(&e);
        a.publish(now, now, false);
    }
    assert_eq!(*a.table.get(&dave).expect("dave").habits(), before);
}

#[test]
fn the_population_model_trains_in_the_background_and_scores() {
    let view = Arc::new(RiskView::new());
    let mut a = Assessor::new(
        AssessConfig {
            sample_every: 1,
            ..Default::default()
        },
        view.clone(),
    );
    let mut now = T0;
    for p in 0..20u8 {
        now = warm_up(&mut a, &format!("user{p}"), [10, 0, 1, p], T0 + u64::from(p) * 1000, 80).max(now);
    }
    // Background training finishes within a bounded number of publications.
    for _ in 0..200 {
        now += 10;
        a.publish(now, now, false);
        if a.model_samples().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(a.model_samples().is_some(), "no model trained");
    assert!(view.load().model_samples.is_some());
    assert!(a.train_now());
}
