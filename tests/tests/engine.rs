//! The embedded baseline engine: it consumes the tap, learns the service's and the runtime's
//! series, exports their bands, and turns a sustained runtime anomaly (blocked workers) into a
//! log event, the `gateway_runtime_anomaly` metric and a CPU profile on disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway_tests::{assert_eventually, metric, request, send, TestGateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_workers_raise_a_runtime_anomaly_and_a_profile() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let profiles = tempfile::tempdir()?;
    let yaml = format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes: [{{ name: app, upstream: up }}]
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
engine: {{ warmup: 20, sustained: 3 }}
telemetry:
  runtime_interval: 50ms
  task_sampling: 1
  profiles: {{ dir: "{}", keep: 3, duration: 1s }}
"#,
        up.addr(),
        profiles.path().display()
    );
    let gw = TestGateway::start(&yaml).await?;
    // Some traffic while the series learn.
    for _ in 0..30 {
        assert_eq!(send(gw.addr("http"), request("app.test", "/x")).await?.status(), 200);
    }
    let m = || async { gw.metrics().await };
    assert_eventually!(
        metric(
            &m().await?,
            "gateway_baseline_score",
            &[("scope", "runtime"), ("signal", "busy_ratio")]
        )
        .is_some()
            && metric(&m().await?, "gateway_engine_events_total", &[]) >= Some(30.0),
        "the engine consumes the tap and exports series"
    );
    // The tap no longer overflows: the engine reads it.
    assert_eq!(
        metric(&m().await?, "gateway_tap_events_total", &[("result", "dropped")]),
        Some(0.0)
    );
    let text = m().await?;
    assert!(metric(
        &text,
        "gateway_baseline_upper",
        &[("scope", "service"), ("signal", "request_rate")]
    )
    .is_some());
    assert!(metric(
        &text,
        "gateway_baseline_value",
        &[("scope", "route:app"), ("signal", "request_rate")]
    )
    .is_some());
    // Warm-up: 20 ticks of 50 ms.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        metric(&m().await?, "gateway_runtime_anomaly", &[]),
        Some(0.0),
        "a quiet runtime is normal"
    );

    // Block both workers in turns (tasks that hold a worker for 40 ms at a time) while clients
    // keep calling: their requests wait for a worker.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = gw.addr("http");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = send(addr, request("app.test", "/x")).await;
                }
            })
        })
        .collect();
    let blockers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(40));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    assert_eventually!(
        metric(&m().await?, "gateway_runtime_anomaly", &[]) == Some(1.0),
        "blocked workers make a sustained runtime anomaly"
    );
    assert!(metric(&m().await?, "gateway_runtime_anomaly_score", &[]).is_some_and(|s| s >= 0.9));
    assert_eventually!(
        std::fs::read_dir(profiles.path())?.count() >= 1,
        "a profile is captured"
    );
    stop.store(true, Ordering::Relaxed);
    for b in blockers.into_iter().chain(clients) {
        b.await?;
    }
    assert_eq!(metric(&m().await?, "gateway_runtime_anomalies_total", &[]), Some(1.0));
    Ok(())
}

fn state_config(up: &Upstream, state: &std::path::Path) -> String {
    format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes: [{{ name: app, upstream: up }}]
upstreams: [{{ name: up, endpoints: ["http://{}"] }}]
engine: {{ warmup: 5, state_file: "{}", save_every: 1h }}
telemetry: {{ runtime_interval: 50ms }}
"#,
        up.addr(),
        state.display()
    )
}

#[tokio::test]
async fn learned_state_survives_a_restart_and_a_bad_file_is_reported() -> anyhow::Result<()> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("engine.json");
    let loads = |text: &str, result: &str| {
        metric(
            text,
            "gateway_engine_state_total",
            &[("op", "load"), ("result", result)],
        )
    };

    // First run: nothing to restore; the state is written at shutdown.
    let gw = TestGateway::start(&state_config(&up, &state)).await?;
    assert_eq!(loads(&gw.metrics().await?, "missing"), Some(1.0));
    for _ in 0..20 {
        send(gw.addr("http"), request("app.test", "/x")).await?;
    }
    assert_eventually!(
        metric(
            &gw.metrics().await?,
            "gateway_baseline_score",
            &[("scope", "route:app"), ("signal", "request_rate")]
        )
        .is_some(),
        "the route's series exists"
    );
    let TestGateway { gw, dir: _d1 } = gw;
    gw.shutdown(Duration::from_secs(5)).await;
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state)?)?;
    assert_eq!(saved["version"], 1);
    let series = saved["series"].as_array().cloned().unwrap_or_default();
    assert!(series
        .iter()
        .any(|s| s["scope"] == "route:app" && s["signal"] == "request_rate"));
    // The client's entity (its habits and what it uses) is kept too.
    let entities = saved["entities"].as_array().cloned().unwrap_or_default();
    assert!(
        entities
            .iter()
            .any(|e| e["key"] == "client:127.0.0.1" && e["requests"] == 20),
        "{entities:?}"
    );

    // Second run: restored, entities included.
    let gw = TestGateway::start(&state_config(&up, &state)).await?;
    assert_eventually!(loads(&gw.metrics().await?, "ok") == Some(1.0), "the state is restored");
    assert_eventually!(
        metric(&gw.metrics().await?, "gateway_engine_entities", &[]) == Some(1.0),
        "the entity is back"
    );
    let TestGateway { gw, dir: _d2 } = gw;
    gw.shutdown(Duration::from_secs(5)).await;

    // A truncated file: reported, learning starts afresh, the gateway serves.
    let bytes = std::fs::read(&state)?;
    std::fs::write(&state, &bytes[..bytes.len() / 3])?;
    let gw = TestGateway::start(&state_config(&up, &state)).await?;
    assert_eventually!(
        loads(&gw.metrics().await?, "corrupt") == Some(1.0),
        "the bad file is reported"
    );
    assert_eq!(send(gw.addr("http"), request("app.test", "/x")).await?.status(), 200);
    let TestGateway { gw, dir: _d3 } = gw;
    gw.shutdown(Duration::from_secs(5)).await;
    // And replaced by a good one at shutdown.
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(&state)?)?;
    assert_eq!(again["version"], 1);
    Ok(())
}
