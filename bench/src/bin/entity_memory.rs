//! Memory per tracked entity, measured: the process's resident memory before and after the
//! entity table takes N entities (default 200,000; sessions, principals and client addresses in
//! equal parts, each with a full window of requests), divided by the count. Includes the hash map's
//! own overhead and the allocator's. Target of the engine issue: at most 1 KiB.
//!
//! `cargo run --release -p gateway-bench --bin entity_memory [N]`

use std::net::IpAddr;
use std::sync::Arc;

use baseline_engine::entity::{EntityTable, WINDOW};
use baseline_engine::RequestEvent;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let total: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let per_kind = total / 3;
    let events: Vec<RequestEvent> = (0..per_kind)
        .map(|i| RequestEvent {
            unix_ms: 1_800_000_000_000,
            route: None,
            path: i,
            status: 200,
            bytes_out: 1000,
            client: IpAddr::from((0x0a00_0000u32 + i as u32).to_be_bytes()),
            user_agent: i,
            subject: Some(Arc::from(format!("user-{i:08}@example.com"))),
            session: Some(i),
            ..Default::default()
        })
        .collect();
    let before = rss_kib();
    let mut table = EntityTable::new(1_000_000, u64::MAX);
    for round in 0..WINDOW as u64 {
        for e in &events {
            let mut e = e.clone();
            e.unix_ms += round * 1000;
            table.observe(&e);
        }
    }
    let after = rss_kib();
    let n = table.len();
    println!(
        "{n} entities: {} KiB resident more, {:.0} bytes per entity (the subjects' text included)",
        after.saturating_sub(before),
        (after.saturating_sub(before) * 1024) as f64 / n as f64
    );
}
