//! Graceful shutdown of the real binary: after SIGTERM in-flight requests complete, new
//! connections are refused, and the process exits 0; a request longer than the drain deadline
//! is cut at the deadline and the exit is still 0.

use gateway_tests::{assert_eventually, get, Process, Upstream};

async fn start(drain: &str) -> anyhow::Result<(Process, u16, u16, Upstream, tempfile::TempDir)> {
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let (port, admin) = (gateway_tests::free_port(), gateway_tests::free_port());
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gw.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners: [{{ name: http, address: \"127.0.0.1:{port}\" }}]\nadmin: {{ address: \"127.0.0.1:{admin}\" }}\n\
             routes: [{{ name: r, upstream: up }}]\nupstreams: [{{ name: up, endpoints: [\"http://{}\"] }}]\n\
             shutdown: {{ drain_timeout: {drain} }}\n",
            up.addr()
        ),
    )?;
    let p = Process::spawn_with(
        &gateway_tests::gateway_bin!(),
        &["run".as_ref(), "--config".as_ref(), path.as_os_str()],
    )?;
    assert_eventually!(
        get(&format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false),
        "ready"
    );
    Ok((p, port, admin, up, dir))
}

async fn active(admin: u16) -> anyhow::Result<Option<f64>> {
    let text = String::from_utf8_lossy(get(&format!("http://127.0.0.1:{admin}/metrics")).await?.body()).to_string();
    Ok(gateway_tests::metric(
        &text,
        "gateway_connections_active",
        &[("listener", "http")],
    ))
}

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() -> anyhow::Result<()> {
    let (mut p, port, _admin, _up, _dir) = start("10s").await?;
    let slow = tokio::spawn(async move { get(&format!("http://127.0.0.1:{port}/delay/1500")).await });
    // The slow request is in flight once the gateway counts an active connection for it.
    assert_eventually!(active(_admin).await? == Some(1.0), "slow request in flight");
    p.signal("TERM")?;
    assert_eventually!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "new connections are refused after SIGTERM"
    );
    let resp = slow.await??;
    assert_eq!(resp.status(), 200, "the in-flight request completes");
    assert_eq!(gateway_tests::json(&resp)["delayed_ms"], 1500);
    assert_eq!(p.wait_exit().await?, Some(0));
    Ok(())
}

#[tokio::test]
async fn drain_deadline_bounds_the_wait() -> anyhow::Result<()> {
    let (mut p, port, admin, _up, _dir) = start("300ms").await?;
    let stuck = tokio::spawn(async move { get(&format!("http://127.0.0.1:{port}/delay/20000")).await });
    assert_eventually!(active(admin).await? == Some(1.0), "request in flight");
    p.signal("TERM")?;
    assert_eq!(p.wait_exit().await?, Some(0), "exits 0 once the deadline passes");
    assert!(stuck.await?.is_err(), "the request longer than the deadline was cut");
    Ok(())
}
