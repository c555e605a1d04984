//! TLS listeners: TLS 1.3 only by default, h1 and h2 by ALPN, SNI certificate choice, the
//! post-quantum hybrid key exchange preferred, TLS 1.2 only when a listener opts in.

use gateway_tests::{json, request, TestGateway, TestPki, TlsConn, Upstream};

async fn setup(min_version: Option<&str>) -> anyhow::Result<(TestPki, TestGateway, Upstream)> {
    let pki = TestPki::new()?;
    let (a_cert, a_key) = pki.leaf("a", &["a.test", "localhost"])?;
    let (b_cert, b_key) = pki.leaf("b", &["b.test"])?;
    let (w_cert, w_key) = pki.leaf("w", &["*.wild.test"])?;
    let up = Upstream::start("up", "127.0.0.1:0".parse()?).await?;
    let min = min_version
        .map(|v| format!("\n      min_version: \"{v}\""))
        .unwrap_or_default();
    let yaml = format!(
        r#"
listeners:
  - name: https
    address: 127.0.0.1:0
    tls:{min}
      certificates:
        - cert: {}
          key: {}
        - cert: {}
          key: {}
        - cert: {}
          key: {}
          server_names: ["*.wild.test", "explicit.test"]
admin: {{ address: 127.0.0.1:0 }}
routes:
  - name: all
    upstream: up
upstreams:
  - name: up
    endpoints: [http://{}]
"#,
        a_cert.display(),
        a_key.display(),
        b_cert.display(),
        b_key.display(),
        w_cert.display(),
        w_key.display(),
        up.addr()
    );
    let gw = TestGateway::start(&yaml).await?;
    Ok((pki, gw, up))
}

#[tokio::test]
async fn h1_and_h2_over_tls13_with_pq_hybrid_first() -> anyhow::Result<()> {
    let (pki, gw, _up) = setup(None).await?;
    let addr = gw.addr("https");
    for (alpn, want) in [
        (&b"http/1.1"[..], http::Version::HTTP_11),
        (&b"h2"[..], http::Version::HTTP_2),
    ] {
        let cfg = pki.client_config(&[alpn], &[&rustls::version::TLS13]);
        let conn = TlsConn::connect(addr, "a.test", cfg).await?;
        assert_eq!(conn.version(), Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(conn.alpn().as_deref(), Some(alpn));
        assert_eq!(conn.kx_group(), Some(rustls::NamedGroup::X25519MLKEM768));
        let resp = conn.send(request("a.test", "/hello")).await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), want);
        let body = json(&resp);
        assert_eq!(body["path"], "/hello");
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    }
    let metrics = gw.metrics().await?;
    assert_eq!(
        gateway_tests::metric(&metrics, "gateway_connections_accepted_total", &[("listener", "https")]),
        Some(2.0)
    );
    Ok(())
}

#[tokio::test]
async fn classical_only_client_gets_x25519() -> anyhow::Result<()> {
    let (pki, gw, _up) = setup(None).await?;
    let mut provider = (*gateway::listen::tls::provider()).clone();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone())?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = TlsConn::connect(gw.addr("https"), "a.test", cfg.into()).await?;
    assert_eq!(conn.kx_group(), Some(rustls::NamedGroup::X25519));
    Ok(())
}

#[tokio::test]
async fn tls12_refused_by_default_and_accepted_when_enabled() -> anyhow::Result<()> {
    let (pki, gw, _up) = setup(None).await?;
    let tls12_only = pki.client_config(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let refused = TlsConn::connect(gw.addr("https"), "a.test", tls12_only.clone()).await;
    assert!(refused.is_err(), "a TLS 1.2-only client must be refused by default");
    let metrics = gw.metrics().await?;
    assert_eq!(
        gateway_tests::metric(&metrics, "gateway_tls_handshake_errors_total", &[("listener", "https")]),
        Some(1.0)
    );

    let (_pki2, gw12, _up2) = setup(Some("1.2")).await?;
    // The second gateway has its own CA; trust it.
    let cfg = _pki2.client_config(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let conn = TlsConn::connect(gw12.addr("https"), "a.test", cfg).await?;
    assert_eq!(conn.version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let resp = conn.send(request("a.test", "/")).await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

#[tokio::test]
async fn sni_picks_the_certificate() -> anyhow::Result<()> {
    let (pki, gw, _up) = setup(None).await?;
    let cfg = pki.client_config(&[b"http/1.1"], &[&rustls::version::TLS13]);
    let a = std::fs::read(pki.dir.path().join("a.pem"))?;
    let b = std::fs::read(pki.dir.path().join("b.pem"))?;
    let w = std::fs::read(pki.dir.path().join("w.pem"))?;
    let der = |pem: &[u8]| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem).expect("pem")
    };
    for (name, want) in [
        ("a.test", der(&a)),
        ("b.test", der(&b)),
        ("x.wild.test", der(&w)),
        ("explicit.test", der(&w)),
    ] {
        // The client verifies the chain and name, so a wrong pick would fail the handshake; the
        // leaf comparison makes the choice explicit.
        let conn = if name == "explicit.test" {
            // explicit.test is not in the certificate: look at what is served without verifying it.
            let insecure = gateway_tests::insecure_client();
            TlsConn::connect(gw.addr("https"), name, insecure).await?
        } else {
            TlsConn::connect(gw.addr("https"), name, cfg.clone()).await?
        };
        assert_eq!(conn.peer_leaf().as_ref(), Some(&want), "certificate for {name}");
    }
    // An unknown name gets the first (default) certificate.
    let conn = TlsConn::connect(gw.addr("https"), "unknown.test", gateway_tests::insecure_client()).await?;
    assert_eq!(conn.peer_leaf().as_ref(), Some(&der(&a)));
    Ok(())
}

#[tokio::test]
async fn certificates_are_reloaded_with_the_config() -> anyhow::Result<()> {
    let (pki, gw, _up) = setup(None).await?;
    let cfg = pki.client_config(&[b"http/1.1"], &[&rustls::version::TLS13]);
    let before = TlsConn::connect(gw.addr("https"), "a.test", cfg.clone())
        .await?
        .peer_leaf();
    // Issue a new certificate for the same names into the same files, then reload.
    let (cert, key) = pki.leaf("a-next", &["a.test", "localhost"])?;
    std::fs::copy(&cert, pki.dir.path().join("a.pem"))?;
    std::fs::copy(&key, pki.dir.path().join("a.key"))?;
    gw.gw.reload().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let after = TlsConn::connect(gw.addr("https"), "a.test", cfg).await?.peer_leaf();
    assert_ne!(before, after, "new connections get the new certificate");
    let next = std::fs::read(pki.dir.path().join("a-next.pem"))?;
    use rustls::pki_types::pem::PemObject;
    assert_eq!(after, Some(rustls::pki_types::CertificateDer::from_pem_slice(&next)?));
    Ok(())
}

#[tokio::test]
async fn a_broken_certificate_on_reload_keeps_the_old_one() -> anyhow::Result<()> {
    let (pki, gw, _up) = setup(None).await?;
    let cfg = pki.client_config(&[b"http/1.1"], &[&rustls::version::TLS13]);
    let before = TlsConn::connect(gw.addr("https"), "a.test", cfg.clone())
        .await?
        .peer_leaf();
    std::fs::write(pki.dir.path().join("a.pem"), "garbage")?;
    let err = gw.gw.reload().await.expect_err("reload must be refused");
    assert!(err.to_string().contains("a.pem contains no PEM certificate"), "{err}");
    let after = TlsConn::connect(gw.addr("https"), "a.test", cfg).await?.peer_leaf();
    assert_eq!(before, after, "the running certificate keeps serving");
    Ok(())
}
