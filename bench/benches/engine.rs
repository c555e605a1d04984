//! The baseline engine's costs: ingesting one request event (target: at least 1,000,000 per
//! second on one core, so under 1 µs each) and closing a tick.
//!
//! `cargo bench -p gateway-bench --bench engine`
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use std::sync::Arc;
use std::time::Duration;

use baseline_engine::engine::SeriesEngine;
use baseline_engine::series::Config;
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
