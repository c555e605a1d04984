//! The trust decision on the request path: load the risk view's snapshot, look up the
//! request's session, principal and client, add the identity assurance, and map the score
//! through the route's thresholds (target: at most 1 µs at p99). Measured against a view holding
//! 10,000 risky entities, for a caller the view does not know (the common case) and for a risky
//! one; after criterion's means, a run of one million timed single decisions prints the p50,
//! p99 and p99.9 (each timing includes reading the clock, about 20 ns).
//!
//! `cargo bench -p gateway-bench --bench trust`
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::net::IpAddr;
use std::sync::Arc;

use baseline_engine::entity::EntityKey;
use baseline_engine::risk::Reason;
use baseline_engine::store::{EntityRisk, Map, RiskSnapshot, RiskView};
use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config::TrustConfig;
use gateway::identity::jwt::Claims;
use gateway::pipeline::trust::{decide, Context, Verdict};

const NOW: u64 = 1_800_000_000;

fn view() -> RiskView {
    let mut entities = Map::default();
    for i in 0..10_000u32 {
        let key = match i % 3 {
            0 => EntityKey::Principal(Arc::from(format!("risky-{i}"))),
            1 => EntityKey::Client(IpAddr::from(i.to_be_bytes())),
            _ => EntityKey::Session(u64::from(i)),
        };
        entities.insert(
            key,
            Arc::new(EntityRisk {
                score: 0.3 + (i % 7) as f32 / 10.0,
                reasons: vec![Reason {
                    signal: "scraping",
                    observed: 30.0,
                    expected: (0.0, 10.0),
                    weight: 0.6,
                }],
                at_ms: NOW * 1000,
                requests: 100,
                history: Vec::new(),
            }),
        );
    }
    let v = RiskView::new();
    v.publish(RiskSnapshot {
        published_ms: NOW * 1000,
        engine_ms: NOW * 1000,
        entities: Arc::new(entities),
        service_anomalous: false,
        tracked: 30_000,
        model_samples: Some(4096),
    });
    v
}

fn claims(sub: &str) -> Claims {
    let all = serde_json::json!({ "sub": sub, "iat": NOW - 600, "auth_time": NOW - 600, "acr": "urn:pwd" });
    Claims {
        subject: Some(sub.to_string()),
        expires: NOW + 3600,
        issued_at: Some(NOW - 600),
        all: all.as_object().cloned().unwrap_or_default(),
    }
}

fn trust_read(c: &mut Criterion) {
    let view = view();
    let trust = TrustConfig::default();
    let (quiet, risky) = (claims("alice"), claims("risky-3"));
    let (alice, bad): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("risky-3"));
    let ctx_quiet = Context {
        session: Some(999_999),
        subject: Some(&alice),
        client: IpAddr::from([192, 168, 1, 1]),
        claims: Some(&quiet),
        can_step_up: true,
    };
    let ctx_risky = Context {
        session: Some(2),
        subject: Some(&bad),
        client: IpAddr::from(1u32.to_be_bytes()),
        claims: Some(&risky),
        can_step_up: true,
    };
    assert_eq!(decide(&view.load(), &trust, &ctx_quiet, NOW).verdict, Verdict::Allow);
    assert_ne!(decide(&view.load(), &trust, &ctx_risky, NOW).verdict, Verdict::Allow);
    let mut g = c.benchmark_group("trust");
    g.bench_function("decide: caller unknown to the view", |b| {
        b.iter(|| decide(&view.load(), &trust, &ctx_quiet, NOW))
    });
    g.bench_function("decide: risky session, principal and client", |b| {
        b.iter(|| decide(&view.load(), &trust, &ctx_risky, NOW))
    });
    g.finish();

    for (name, ctx) in [("unknown caller", &ctx_quiet), ("risky caller", &ctx_risky)] {
        let mut ns: Vec<u64> = Vec::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            let t = tokio::time::Instant::now();
            let a = decide(&view.load(), &trust, ctx, NOW);
            ns.push(t.elapsed().as_nanos() as u64);
            std::hint::black_box(a);
        }
        ns.sort_unstable();
        let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)];
        println!(
            "trust/decide {name}: p50 {} ns, p99 {} ns, p99.9 {} ns over {} decisions",
            q(0.5),
            q(0.99),
            q(0.999),
            ns.len()
        );
    }
}

criterion_group!(benches, trust_read);
criterion_main!(benches);
