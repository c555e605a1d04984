//! The baseline engine's costs: ingesting one request event (target: at least 1,000,000 per
//! second on one core, so under 1 µs each) into the series and into the entity table with its
//! scoring and publication, and closing a tick.
//!
//! `cargo bench -p gateway-bench --bench engine`
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::sync::Arc;
use std::time::Duration;

use baseline_engine::assess::{AssessConfig, Assessor};
use baseline_engine::engine::SeriesEngine;
use baseline_engine::series::Config;
use baseline_engine::store::RiskView;
use baseline_engine::{RequestEvent, RuntimeSample};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn events() -> Vec<RequestEvent> {
    let routes: Vec<Arc<str>> = (0..20).map(|i| Arc::from(format!("route-{i}"))).collect();
    (0..10_000u64)
        .map(|i| RequestEvent {
            route: Some(routes[(i % 20) as usize].clone()),
            status: if i % 50 == 0 { 503 } else { 200 },
            total: Duration::from_micros(500 + i % 3000),
            ..Default::default()
        })
        .collect()
}

/// Events from 1,000 principals on 1,000 addresses over 50 paths, a second apart in all.
fn entity_events() -> Vec<RequestEvent> {
    let subjects: Vec<Arc<str>> = (0..1000).map(|i| Arc::from(format!("user-{i}"))).collect();
    let route: Arc<str> = Arc::from("app");
    (0..10_000u64)
        .map(|i| RequestEvent {
            unix_ms: 1_800_000_000_000 + i * 1000,
            route: Some(route.clone()),
            path: baseline_engine::hash_path(format!("/app/page-{}", i % 50).as_bytes()),
            status: if i % 40 == 0 { 404 } else { 200 },
            bytes_out: 2000 + i % 500,
            client: std::net::IpAddr::from([10, 0, (i % 1000 / 250) as u8, (i % 250) as u8]),
            user_agent: 7 + i % 3,
            subject: Some(subjects[(i % 1000) as usize].clone()),
            session: Some(i % 1000),
            ..Default::default()
        })
        .collect()
}

/// Events from one busy client without identity: one entity with a full window, as under load
/// from a single address.
fn busy_client_events() -> Vec<RequestEvent> {
    let route: Arc<str> = Arc::from("api");
    (0..10_000u64)
        .map(|i| RequestEvent {
            unix_ms: 1_800_000_000_000 + i,
            route: Some(route.clone()),
            path: baseline_engine::hash_path(b"/api/items"),
            status: 200,
            bytes_out: 24,
            client: std::net::IpAddr::from([10, 0, 0, 1]),
            user_agent: 7,
            ..Default::default()
        })
        .collect()
}

fn sample(t: u64) -> RuntimeSample {
    RuntimeSample {
        unix_ms: t * 1000,
        elapsed: Duration::from_secs(1),
        workers: 2,
        busy_ratio: 0.3,
        alive_tasks: 100,
        ..Default::default()
    }
}

fn ingest(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("ingest 10k request events (20 routes)", |b| {
        b.iter_batched_ref(
            || SeriesEngine::new(Config::default(), 64),
            |engine| {
                for e in &evs {
                    engine.request(e);
                }
            },
            BatchSize::SmallInput,
        )
    });
    let evs = entity_events();
    g.bench_function(
        "ingest 10k request events into entities, scored and published every 100",
        |b| {
            // The table already knows everyone (as in a running gateway); the population model is
            // trained on the calling thread first, so scoring includes it.
            let mut a = Assessor::new(AssessConfig::default(), Arc::new(RiskView::new()));
            // Four rounds: forty requests each, past every warm-up.
            for round in 0..4u64 {
                for e in &evs {
                    let mut e = e.clone();
                    e.unix_ms += round * 10_000_000;
                    a.observe(&e);
                }
                let end = 1_800_000_000_000 + (round + 1) * 10_000_000;
                a.publish(end, end, false);
            }
            assert!(a.train_now(), "population model trained");
            let mut round = 3u64;
            b.iter(|| {
                round += 1;
                for (i, e) in evs.iter().enumerate() {
                    let mut e = e.clone();
                    e.unix_ms += round * 10_000_000;
                    a.observe(&e);
                    if i % 100 == 99 {
                        a.publish(e.unix_ms, e.unix_ms, false);
                    }
                }
            })
        },
    );
    let evs = busy_client_events();
    g.bench_function("ingest 10k request events from one busy client", |b| {
        let mut a = Assessor::new(AssessConfig::default(), Arc::new(RiskView::new()));
        let mut round = 0u64;
        b.iter(|| {
            round += 1;
            for e in &evs {
                let mut e = e.clone();
                e.unix_ms += round * 10_000;
                a.observe(&e);
            }
            a.publish(
                1_800_000_000_000 + round * 10_000,
                1_800_000_000_000 + round * 10_000,
                false,
            );
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("tick (20 routes, 69 series)", |b| {
        let mut engine = SeriesEngine::new(Config::default(), 64);
        let mut t = 1_000_000u64;
        b.iter(|| {
            for e in evs.iter().take(200) {
                engine.request(e);
            }
            t += 1;
            engine.tick(&sample(t))
        })
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
