//! Reload: under continuous load, 50 reloads alternating two valid configs plus one invalid one
//! lose no request; the invalid one is rejected and the running config keeps serving; metrics
//! count all of it. Also reload by file change and by SIGHUP on the real binary.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use gateway_tests::{assert_eventually, get, json, metric, request, send, TestGateway, Upstream};
use http_body_util::{BodyExt, Full};

fn config(route_to: &str, a: &Upstream, b: &Upstream, watch: bool) -> String {
    format!(
        r#"
listeners: [{{ name: http, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes: [{{ name: main, upstream: {route_to} }}]
upstreams:
  - {{ name: a, endpoints: [http://{}] }}
  - {{ name: b, endpoints: [http://{}] }}
reload: {{ watch: {watch}, poll_interval: 100ms }}
"#,
        a.addr(),
        b.addr()
    )
}

async fn post_reload(admin: std::net::SocketAddr) -> anyhow::Result<gateway_tests::Collected> {
    let req = http::Request::post("/reload")
        .header("host", "admin")
        .body(Full::new(Bytes::new()))?;
    send(admin, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_nothing() -> anyhow::Result<()> {
    let a = Upstream::start("a", "127.0.0.1:0".parse()?).await?;
    let b = Upstream::start("b", "127.0.0.1:0".parse()?).await?;
    let gw = TestGateway::start(&config("a", &a, &b, false)).await?;
    let addr = gw.addr("http");
    let admin = gw.gw.admin_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let pooled = gateway_tests::pooled_client();
            while !stop.load(Ordering::Relaxed) {
                // Half the clients reuse keep-alive connections, half open new ones.
                let result = if i % 2 == 0 {
                    let req = http::Request::get(format!("http://{addr}/"))
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    match pooled.request(req).await {
                        Ok(r) => {
                            let status = r.status();
                            r.into_body()
                                .collect()
                                .await
                                .map(|_| status)
                                .map_err(anyhow::Error::from)
                        }
                        Err(e) => Err(e.into()),
                    }
                } else {
                    send(addr, request("x", "/")).await.map(|r| r.status())
                };
                match result {
                    Ok(s) if s == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let path = gw.config_path();
    for i in 0..50 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        std::fs::write(&path, config(target, &a, &b, false))?;
        let r = post_reload(admin).await?;
        assert_eq!(r.status(), 200, "reload {i}: {:?}", r.body());
        if i == 25 {
            std::fs::write(
                &path,
                "listeners: [{ name: http, address: \"127.0.0.1:0\" }]\nroutes: [{ name: main, upstream: nowhere }]\n",
            )?;
            let r = post_reload(admin).await?;
            assert_eq!(r.status(), 422);
            let problems = json(&r)["problems"].to_string();
            assert!(
                problems.contains("routes[0].upstream: no upstream named `nowhere`"),
                "{problems}"
            );
        }
    }
    // Let traffic run on the last config too.
    let before = ok.load(Ordering::Relaxed);
    assert_eventually!(ok.load(Ordering::Relaxed) > before + 50, "traffic continues");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during reloads ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 100);

    // The last valid config (i = 49 → "a") is the one serving.
    let r = send(addr, request("x", "/")).await?;
    assert_eq!(r.headers()["x-upstream"], "a");
    let m = gw.metrics().await?;
    assert_eq!(
        metric(&m, "gateway_config_reloads_total", &[("result", "success")]),
        Some(51.0),
        "the start plus 50 reloads"
    );
    assert_eq!(
        metric(&m, "gateway_config_reloads_total", &[("result", "failure")]),
        Some(1.0)
    );
    Ok(())
}

#[tokio::test]
async fn reload_refuses_listener_changes() -> anyhow::Result<()> {
    let a = Upstream::start("a", "127.0.0.1:0".parse()?).await?;
    let b = Upstream::start("b", "127.0.0.1:0".parse()?).await?;
    let gw = TestGateway::start(&config("a", &a, &b, false)).await?;
    let changed = config("a", &a, &b, false).replace("name: http,", "name: renamed,");
    std::fs::write(gw.config_path(), changed)?;
    let r = post_reload(gw.gw.admin_addr()).await?;
    assert_eq!(r.status(), 422);
    assert!(json(&r)["problems"].to_string().contains("need a restart"));
    assert_eq!(send(gw.addr("http"), request("x", "/")).await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn file_change_reloads() -> anyhow::Result<()> {
    let a = Upstream::start("a", "127.0.0.1:0".parse()?).await?;
    let b = Upstream::start("b", "127.0.0.1:0".parse()?).await?;
    let gw = TestGateway::start(&config("a", &a, &b, true)).await?;
    let addr = gw.addr("http");
    assert_eq!(send(addr, request("x", "/")).await?.headers()["x-upstream"], "a");
    // Write atomically, as editors and config management do.
    let tmp = gw.dir.path().join("next.yaml");
    std::fs::write(&tmp, config("b", &a, &b, true))?;
    std::fs::rename(&tmp, gw.config_path())?;
    assert_eventually!(
        send(addr, request("x", "/")).await?.headers()["x-upstream"] == "b",
        "the watcher applies the new file"
    );
    // An invalid edit is rejected once and the running config keeps serving.
    std::fs::write(&tmp, "listeners: nope\n")?;
    std::fs::rename(&tmp, gw.config_path())?;
    assert_eventually!(
        metric(
            &gw.metrics().await?,
            "gateway_config_reloads_total",
            &[("result", "failure")]
        ) == Some(1.0),
        "the invalid file is counted"
    );
    assert_eq!(send(addr, request("x", "/")).await?.headers()["x-upstream"], "b");
    Ok(())
}

#[tokio::test]
async fn sighup_reloads_the_binary() -> anyhow::Result<()> {
    let a = Upstream::start("a", "127.0.0.1:0".parse()?).await?;
    let b = Upstream::start("b", "127.0.0.1:0".parse()?).await?;
    let dir = tempfile::tempdir()?;
    let (port, admin) = (gateway_tests::free_port(), gateway_tests::free_port());
    let cfg = |to: &str| {
        config(to, &a, &b, false)
            .replace(
                "name: http, address: \"127.0.0.1:0\"",
                &format!("name: http, address: \"127.0.0.1:{port}\""),
            )
            .replace(
                "address: \"127.0.0.1:0\" }\nroutes",
                &format!("address: \"127.0.0.1:{admin}\" }}\nroutes"),
            )
    };
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, cfg("a"))?;
    let mut child = gateway_tests::Process::spawn_with(
        &gateway_tests::gateway_bin!(),
        &[std::ffi::OsStr::new("run"), "--config".as_ref(), path.as_os_str()],
    )?;
    let base = format!("http://127.0.0.1:{port}/");
    assert_eventually!(
        get(&format!("http://127.0.0.1:{admin}/readyz"))
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false),
        "gateway ready"
    );
    assert_eq!(get(&base).await?.headers()["x-upstream"], "a");
    std::fs::write(&path, cfg("b"))?;
    child.signal("HUP")?;
    assert_eventually!(
        get(&base)
            .await
            .map(|r| r.headers()["x-upstream"] == "b")
            .unwrap_or(false),
        "SIGHUP applies the new file"
    );
    child.signal("TERM")?;
    assert_eq!(child.wait_exit().await?, Some(0));
    Ok(())
}
