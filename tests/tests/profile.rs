//! CPU profiles: the admin endpoint returns a pprof protobuf (and a flamegraph) that names the
//! function the test keeps busy, one capture at a time; the internal capture writes to a
//! bounded directory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use gateway_tests::{assert_eventually, metric, TestGateway};
use pprof::protos::Message;

/// Spins until told to stop; the profile must name it.
#[inline(never)]
fn spin_for_the_profiler(stop: &AtomicBool) -> u64 {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    x
}

async fn admin_get(gw: &TestGateway, path: &str) -> anyhow::Result<gateway_tests::Collected> {
    let req = http::Request::get(path)
        .header("host", "admin")
        .body(http_body_util::Full::new(Bytes::new()))?;
    gateway_tests::send(gw.gw.admin_addr(), req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_name_the_busy_function() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "listeners: [{{ name: http, address: \"127.0.0.1:0\" }}]\nadmin: {{ address: \"127.0.0.1:0\" }}\n\
         telemetry: {{ profiles: {{ dir: \"{}\", keep: 2, duration: 1s }} }}\n",
        dir.path().display()
    );
    let gw = TestGateway::start(&yaml).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = stop.clone();
        std::thread::spawn(move || spin_for_the_profiler(&stop))
    };

    // Bad parameters are refused before anything is sampled.
    for bad in ["seconds=0", "seconds=61", "seconds=x", "format=png"] {
        let r = admin_get(&gw, &format!("/debug/pprof/profile?{bad}")).await?;
        assert_eq!(r.status(), 400, "{bad}");
    }

    // Two captures asked for at once: one profile, one refusal.
    let (a, b) = tokio::join!(
        admin_get(&gw, "/debug/pprof/profile?seconds=2"),
        admin_get(&gw, "/debug/pprof/profile?seconds=2")
    );
    let (a, b) = (a?, b?);
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "one capture at a time");
    let r = if a.status() == 200 { a } else { b };
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let profile = pprof::protos::Profile::decode(r.body().as_ref())?;
    assert!(!profile.sample.is_empty(), "samples were taken");
    assert!(
        profile.string_table.iter().any(|s| s.contains("spin_for_the_profiler")),
        "the busy function is named"
    );

    // A flamegraph.
    let r = admin_get(&gw, "/debug/pprof/profile?seconds=1&format=svg").await?;
    assert_eq!(r.status(), 200);
    let svg = String::from_utf8_lossy(r.body());
    assert!(svg.contains("<svg") && svg.contains("spin_for_the_profiler"));

    // Internal captures go to the directory, which keeps the newest two.
    for _ in 0..3 {
        assert_eventually!(
            gateway::telemetry::profile::capture_profile(gw.gw.shared(), "test"),
            "no capture running"
        );
        let before = metric(
            &gw.metrics().await?,
            "gateway_profiles_total",
            &[("trigger", "internal"), ("result", "ok")],
        );
        assert_eventually!(
            metric(
                &gw.metrics().await?,
                "gateway_profiles_total",
                &[("trigger", "internal"), ("result", "ok")]
            ) > before,
            "the capture ends"
        );
    }
    assert_eventually!(std::fs::read_dir(dir.path())?.count() == 2, "two captures kept");
    for entry in std::fs::read_dir(dir.path())? {
        let bytes = std::fs::read(entry?.path())?;
        assert!(!pprof::protos::Profile::decode(bytes.as_slice())?.sample.is_empty());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = spinner.join();
    let m = gw.metrics().await?;
    assert!(metric(
        &m,
        "gateway_profiles_total",
        &[("trigger", "admin"), ("result", "busy")]
    )
    .is_some_and(|v| v >= 1.0));
    Ok(())
}
