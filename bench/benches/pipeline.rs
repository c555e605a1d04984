//! How much do the per-request stages cost that do not touch the network: route lookup among
//! many routes, and the header rewriting of the forward stage?

#![allow(missing_docs)] // criterion_group! generates an undocumented function

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::pipeline::forward;

fn config(routes: usize) -> gateway::config::Config {
    let mut yaml = String::from("listeners: [{ name: l, address: \"127.0.0.1:0\" }]\nroutes:\n");
    for i in 0..routes {
        yaml.push_str(&format!(
            "  - {{ name: r{i}, upstream: u, match: {{ host: h{}.example.com, path_prefix: /api/v{i} }} }}\n",
            i % 10
        ));
    }
    yaml.push_str(
        "  - { name: wild, upstream: u, match: { host: \"*.example.com\" } }\n  - { name: any, upstream: u }\n",
    );
    yaml.push_str("upstreams: [{ name: u, endpoints: [\"http://127.0.0.1:9\"] }]\n");
    gateway::config::parse("bench.yaml", &yaml).expect("valid")
}

fn routing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = gateway::telemetry::Metrics::register(&mut registry);
    let snap = gateway::config::Snapshot::build("bench.yaml", config(200), &metrics, None).expect("snapshot");
    let get = http::Method::GET;
    let headers = http::HeaderMap::new();
    c.bench_function("route: exact host, 200 routes", |b| {
        b.iter(|| {
            let host = gateway::pipeline::route::normalize_host(std::hint::black_box("h7.example.com:443"));
            matches!(
                snap.router.find(&host, "/api/v197/items/42", &get, &headers),
                gateway::pipeline::route::RouteMatch::Found(_)
            )
        })
    });
    c.bench_function("route: fall through to any host", |b| {
        b.iter(|| {
            matches!(
                snap.router
                    .find(std::hint::black_box("other.org"), "/x", &get, &headers),
                gateway::pipeline::route::RouteMatch::Found(_)
            )
        })
    });
}

fn forwarding(c: &mut Criterion) {
    let mut base = http::HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("accept-encoding", "gzip, br"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.9"),
        ("cookie", "a=b; c=d"),
    ] {
        base.insert(http::HeaderName::from_static(k), http::HeaderValue::from_static(v));
    }
    let peer = forward::PeerHeaders::new("192.0.2.1:5555".parse().expect("addr"));
    let host = http::HeaderValue::from_static("api.example.com");
    c.bench_function("forward: hop-by-hop + forwarding headers + request id", |b| {
        b.iter(|| {
            let mut h = base.clone();
            forward::strip_hop_by_hop(&mut h, false);
            let mut added = forward::Added::default();
            forward::add_forwarding(&h, &mut added, &peer, false, "https", Some(&host));
            added.take_from(&mut h);
            let id = forward::request_id(&h, false);
            (h.len() + added.iter().count(), id.len())
        })
    });
}

criterion_group!(benches, routing, forwarding);
criterion_main!(benches);
