//! Bad config: every problem named with file, line, column and field; `gateway check-config`
//! exits 64 with those messages and 0 on a valid file; `gateway run` refuses to start.

use std::process::Command;

fn check(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(gateway_tests::gateway_bin!())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run gateway");
    let text = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "gw.yaml");
    (out.status.code().unwrap_or(-1), text)
}

/// The problems `check-config` lists for `yaml`, one per line (it must exit 64).
fn problems(yaml: &str) -> Vec<String> {
    let (code, err) = check(yaml);
    assert_eq!(code, 64, "{err}");
    err.lines().map(str::to_string).collect()
}

#[test]
fn unknown_field() {
    let (code, err) = check("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    colour: blue\n");
    assert_eq!(code, 64);
    assert_eq!(
        err.trim(),
        "gw.yaml:4:5: listeners[0].colour: unknown field `colour`, expected one of: address, name, quic, redirect_to_https, tls"
    );
}

#[test]
fn wrong_type() {
    let (code, err) = check("listeners:\n  - name: a\n    address: 127.0.0.1:1\nlimits:\n  max_headers: many\n");
    assert_eq!(code, 64);
    assert_eq!(
        err.trim(),
        "gw.yaml:5:16: limits.max_headers: expected a whole number, found the string `many`"
    );
    let (code, err) = check("listeners:\n  - name: a\n    address: [1, 2]\n");
    assert_eq!(code, 64);
    assert_eq!(
        err.trim(),
        "gw.yaml:3:14: listeners[0].address: expected a string, found a list"
    );
}

#[test]
fn every_structural_problem_is_listed() {
    let yaml = "\
listeners:
  - name: public
    address: 127.0.0.1:8443
    colour: blue
  - adress: 127.0.0.1:8444
limits:
  max_headers: many
routes:
  - name: r
    upstream: u
    match: [ \"/x\" ]
upstreams:
  - name: u
    endpoints: http://x
extra: 1
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:4:5: listeners[0].colour: unknown field `colour`, expected one of: address, name, quic, redirect_to_https, tls",
            "gw.yaml:5:5: listeners[1].adress: unknown field `adress`, expected one of: address, name, quic, redirect_to_https, tls",
            "gw.yaml:5:5: listeners[1]: missing field `name`",
            "gw.yaml:5:5: listeners[1]: missing field `address`",
            "gw.yaml:7:16: limits.max_headers: expected a whole number, found the string `many`",
            "gw.yaml:11:12: routes[0].match: expected a mapping, found a list",
            "gw.yaml:14:16: upstreams[0].endpoints: expected a list, found the string `http://x`",
            "gw.yaml:15:1: extra: unknown field `extra`, expected one of: admin, engine, identity, limits, listeners, reload, routes, shutdown, slos, telemetry, trusted_proxies, upstreams",
        ]
    );
}

#[test]
fn empty_file_and_broken_yaml() {
    let (code, err) = check("");
    assert_eq!(code, 64);
    assert_eq!(
        err.trim(),
        "gw.yaml:1:1: (top level): expected a mapping, found nothing"
    );
    let (code, err) = check("listeners:\n  - name: [unclosed\n");
    assert_eq!(code, 64);
    assert!(err.starts_with("gw.yaml:"), "{err}");
}

#[test]
fn missing_upstream_and_every_problem_listed() {
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:1
routes:
  - name: r
    upstream: nope
    match: { path_prefix: api }
upstreams:
  - name: u
    endpoints: [ftp://x]
    connect_timeout: 5
    connect_attempts: 0
    health: { check: { path: healthz, unhealthy_after: 0 } }
    retry: { attempts: 11, statuses: [503, 404] }
    max_in_flight_per_endpoint: 0
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:6:15: routes[0].upstream: no upstream named `nope` (defined: u)",
            "gw.yaml:7:27: routes[0].match.path_prefix: `api` must start with '/'",
            "gw.yaml:10:17: upstreams[0].endpoints[0]: `ftp://x` is not an endpoint like http://10.0.0.1:8080 or https://api.internal",
            "gw.yaml:11:22: upstreams[0].connect_timeout: `5` has no unit: write it like 500ms, 10s, 5m or 1h",
            "gw.yaml:12:23: upstreams[0].connect_attempts: must be greater than zero",
            "gw.yaml:13:30: upstreams[0].health.check.path: `healthz` is not a path like /healthz",
            "gw.yaml:13:56: upstreams[0].health.check.unhealthy_after: must be greater than zero",
            "gw.yaml:14:24: upstreams[0].retry.attempts: must be at most 10",
            "gw.yaml:14:44: upstreams[0].retry.statuses[1]: 404 is not a 5xx status like 502 or 503",
            "gw.yaml:15:33: upstreams[0].max_in_flight_per_endpoint: must be greater than zero",
        ]
    );
}

#[test]
fn duplicate_listener_address() {
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:8443
  - name: b
    address: 127.0.0.1:8443
admin:
  address: 127.0.0.1:8443
";
    let (code, err) = check(yaml);
    assert_eq!(code, 64);
    assert!(
        err.contains(
            "gw.yaml:5:14: listeners[1].address: address 127.0.0.1:8443 is already used by the listener at line 3"
        ),
        "{err}"
    );
    assert!(
        err.contains("gw.yaml:7:12: admin.address: address 127.0.0.1:8443 is already used"),
        "{err}"
    );
}

#[test]
fn unreadable_certificate() {
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:8443
    tls:
      certificates:
        - cert: /nonexistent/cert.pem
          key: /nonexistent/key.pem
";
    let (code, err) = check(yaml);
    assert_eq!(code, 64);
    assert!(
        err.contains("gw.yaml:6:17: listeners[0].tls.certificates[0].cert: cannot read /nonexistent/cert.pem"),
        "{err}"
    );
    assert!(
        err.contains("gw.yaml:7:16: listeners[0].tls.certificates[0].key: cannot read /nonexistent/key.pem"),
        "{err}"
    );
}

#[test]
fn garbage_certificate_and_mismatched_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let a = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).expect("cert");
    let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).expect("cert");
    let cert = dir.path().join("a.pem");
    let key = dir.path().join("b.key");
    std::fs::write(&cert, a.cert.pem()).expect("write");
    std::fs::write(&key, b.signing_key.serialize_pem()).expect("write");
    let yaml = format!(
        "listeners:\n  - name: a\n    address: 127.0.0.1:8443\n    tls:\n      certificates:\n        - {{ cert: {}, key: {} }}\n        - {{ cert: {}, key: {} }}\n",
        junk.display(),
        key.display(),
        cert.display(),
        key.display()
    );
    let (code, err) = check(&yaml);
    assert_eq!(code, 64);
    assert!(err.contains("contains no PEM certificate"), "{err}");
    assert!(err.contains("does not fit the certificate"), "{err}");
}

#[test]
fn valid_config_passes_and_run_refuses_invalid() {
    let (code, err) = check("listeners:\n  - name: a\n    address: 127.0.0.1:0\nadmin: { address: 127.0.0.1:0 }\n");
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, "listeners: []\n").expect("write");
    let out = Command::new(gateway_tests::gateway_bin!())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listeners: at least one listener is required"));
}

#[test]
fn schema_is_printed() {
    let out = Command::new(gateway_tests::gateway_bin!())
        .arg("config-schema")
        .output()
        .expect("run");
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(schema["title"], "FileConfig");
    assert!(schema["properties"]["listeners"].is_object());
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown fields are rejected by the schema too"
    );
}

#[test]
fn identity_provider_problems() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
identity:
  providers:
    - name: corp
      issuer: not a url
      algorithms: [HS256, none, ES256]
routes:
  - { name: r, upstream: u, auth: { bearer: nobody } }
upstreams: [{ name: u, endpoints: [http://127.0.0.1:2] }]
";
    let (code, err) = check(yaml);
    assert_eq!(code, 64);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].starts_with("gw.yaml:5:15: identity.providers[0].issuer: `not a url` is not an issuer URL"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("gw.yaml:6:20: identity.providers[0].algorithms[0]: `HS256` is not an allowed algorithm"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("gw.yaml:6:27: identity.providers[0].algorithms[1]: `none` is not an allowed algorithm"),
        "{err}"
    );
    assert_eq!(
        lines[3],
        "gw.yaml:8:45: routes[0].auth.bearer: no identity provider named `nobody`"
    );
}

#[test]
fn browser_sign_in_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short_key = dir.path().join("short.key");
    std::fs::write(&short_key, "c2hvcnQ=\n").expect("write");
    let yaml = format!(
        "\
listeners: [{{ name: a, address: 127.0.0.1:1 }}]
identity:
  providers:
    - name: api
      issuer: http://127.0.0.1:3
    - name: corp
      issuer: http://127.0.0.1:4
      login: {{ client_id: gw, scopes: [\"two words\"], post_logout_redirect_uri: nowhere }}
  sessions:
    key_file: {}
    idle_timeout: soon
    callback_path: relative
routes:
  - {{ name: r, upstream: u, auth: {{ login: api }} }}
  - {{ name: s, upstream: u, match: {{ path_prefix: /s }}, auth: {{ scopes: [x] }} }}
upstreams: [{{ name: u, endpoints: [http://127.0.0.1:2] }}]
",
        short_key.display()
    );
    let (code, err) = check(&yaml);
    assert_eq!(code, 64);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        vec![
            "gw.yaml:8:27: identity.providers[1].login: a `client_secret` or `client_secret_file` is required",
            "gw.yaml:8:40: identity.providers[1].login.scopes[0]: a scope is one word",
            "gw.yaml:8:80: identity.providers[1].login.post_logout_redirect_uri: an absolute http(s) URL is required",
            "gw.yaml:11:19: identity.sessions.idle_timeout: `soon` is not a duration like 500ms, 10s, 5m or 1h",
            "gw.yaml:12:20: identity.sessions.callback_path: a path like /.gateway/callback is required",
            "gw.yaml:14:44: routes[0].auth.login: identity provider `api` has no `login` client for browser sign-in",
            "gw.yaml:15:13: routes[1].auth: name a provider in `bearer`, `login` or both (leave `auth` out for a public route, or require only `client_certificate`)",
        ]
    );
    // The key file is read with the rest of the files the config names.
    let fixed = yaml
        .replace(
            "gw, scopes: [\"two words\"], post_logout_redirect_uri: nowhere",
            "gw, client_secret: s",
        )
        .replace("    idle_timeout: soon\n    callback_path: relative\n", "")
        .replace("auth: { login: api }", "auth: { login: corp }")
        .replace("auth: { scopes: [x] }", "auth: { bearer: api, scopes: [x] }");
    let (code, err) = check(&fixed);
    assert_eq!(code, 64, "{err}");
    assert_eq!(
        err.trim(),
        "gw.yaml:10:15: identity.sessions.key_file: the key has 5 bytes; 32 random bytes are required (openssl rand -base64 32)"
    );
}

#[test]
fn telemetry_problems() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
telemetry:
  tap_capacity: 0
  runtime_interval: often
  logs: { level: \"gateway=[\", format: xml }
";
    let (code, err) = check(yaml);
    assert_eq!(code, 64);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(lines[0].starts_with("gw.yaml:3:17: telemetry.tap_capacity:"), "{err}");
    assert!(
        lines[1].starts_with("gw.yaml:4:21: telemetry.runtime_interval:"),
        "{err}"
    );
    assert!(
        lines[2].starts_with("gw.yaml:5:18: telemetry.logs.level: `gateway=[` is not a log filter"),
        "{err}"
    );
    assert_eq!(
        lines[3],
        "gw.yaml:5:39: telemetry.logs.format: `xml` is not `text` or `json`"
    );
}

#[test]
fn trace_problems() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
telemetry:
  traces: { endpoint: \"https://collector:4317\", protocol: thrift, sampling_ratio: 1.5 }
";
    let (code, err) = check(yaml);
    assert_eq!(code, 64);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("gw.yaml:3:23: telemetry.traces.endpoint: `https://collector:4317` is not an endpoint"),
        "{err}"
    );
    assert_eq!(
        lines[1],
        "gw.yaml:3:59: telemetry.traces.protocol: `thrift` is not `grpc` or `http`"
    );
    assert_eq!(
        lines[2],
        "gw.yaml:3:83: telemetry.traces.sampling_ratio: a share from 0 to 1, e.g. 0.01"
    );
}

#[test]
fn trust_policies_and_engine_settings_are_checked() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
upstreams: [{ name: u, endpoints: [http://127.0.0.1:2] }]
routes:
  - name: r
    upstream: u
    trust:
      mode: watch
      step_up_at: 0.9
      deny_at: 0.8
      on_unavailable: maybe
  - name: s
    upstream: u
    match: { path_prefix: /s }
    trust: { deny_at: 1.5, step_up: { acr_values: [] } }
engine: { time_scale: 0.5, stale_after: 0s }
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:7:13: routes[0].trust.mode: `enforce` or `shadow`",
            "gw.yaml:8:19: routes[0].trust.step_up_at: must be below deny_at (0.8), or no request would ever be asked to step up",
            "gw.yaml:10:23: routes[0].trust.on_unavailable: `last_known` or `fail_closed`",
            "gw.yaml:11:11: routes[1].trust.step_up: name `acr_values`, `max_age` or both: a step-up must ask for something",
            "gw.yaml:14:23: routes[1].trust.deny_at: a risk from 0 (exclusive) to 1, e.g. 0.5",
            "gw.yaml:15:23: engine.time_scale: a factor from 1 to 100000 (1 in production)",
            "gw.yaml:15:41: engine.stale_after: must be greater than zero",
        ]
    );
}

#[test]
fn quic_settings_are_checked() {
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:1
    quic: { max_streams: 0, stream_window: 100, idle_timeout: forever }
upstreams: [{ name: u, endpoints: [http://127.0.0.1:2] }]
routes: [{ name: r, upstream: u }]
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:2:11: listeners[0].quic: QUIC needs the listener's `tls` (HTTP/3 is always encrypted)",
            "gw.yaml:4:26: listeners[0].quic.max_streams: must be greater than zero",
            "gw.yaml:4:44: listeners[0].quic.stream_window: a window from 1200 bytes to 4294967295",
            "gw.yaml:4:63: listeners[0].quic.idle_timeout: `forever` is not a duration like 500ms, 10s, 5m or 1h",
        ]
    );
}

#[test]
fn engine_alert_receivers_are_checked() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
upstreams: [{ name: u, endpoints: [http://127.0.0.1:2] }]
routes: [{ name: r, upstream: u }]
engine:
  alerts:
    alertmanagers: [\"http://127.0.0.1:9093\", \"127.0.0.1:9093\"]
    webhooks: [\"ftp://hooks.test/x\", \"https://hooks.test/gw?token=1\", \"http://\"]
    resend_every: soon
    instance: \" \"
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:6:46: engine.alerts.alertmanagers[1]: `127.0.0.1:9093` is not a URL like http://127.0.0.1:9093",
            "gw.yaml:7:16: engine.alerts.webhooks[0]: `ftp://hooks.test/x` is not a URL like https://hooks.example.com/gateway",
            "gw.yaml:7:71: engine.alerts.webhooks[2]: `http://` is not a URL like https://hooks.example.com/gateway",
            "gw.yaml:8:19: engine.alerts.resend_every: `soon` is not a duration like 500ms, 10s, 5m or 1h",
            "gw.yaml:9:15: engine.alerts.instance: an empty instance label",
        ]
    );
}

#[test]
fn service_level_objectives_are_checked() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
upstreams: [{ name: u, endpoints: [http://127.0.0.1:2] }]
routes: [{ name: r, upstream: u }]
slos:
  - { name: r, routes: [r, nope], window: 7d, availability: 100 }
  - { name: r, routes: [r], latency: { threshold: 300ms, objective: 99 } }
";
    let lines = problems(yaml);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "gw.yaml:5:28: slos[0].routes[1]: no route named `nope`");
    assert_eq!(lines[1], "gw.yaml:5:43: slos[0].window: `28d` or `30d`");
    assert_eq!(
        lines[2],
        "gw.yaml:5:61: slos[0].availability: a percentage above 0 and below 100, e.g. 99.9"
    );
    assert_eq!(lines[3], "gw.yaml:6:13: slos[1].name: another objective is named `r`");
    assert!(
        lines[4].starts_with("gw.yaml:6:51: slos[1].latency.threshold: must be a bound of the duration histogram's buckets: one of 1ms, 2ms,")
            && lines[4].contains("256ms, 512ms"),
        "{}",
        lines[4]
    );
}

#[test]
fn route_rewrites_header_changes_rate_limits_and_timeouts_are_checked() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
routes:
  - name: r
    upstream: u
    rewrite_prefix: v2
    request_headers:
      set: { transfer-encoding: chunked, x-forwarded-for: 1.2.3.4, \"bad name\": x, x-ok: \"a\\x01b\" }
      remove: [X-Auth-Subject]
    response_headers: { remove: [x-request-id, server] }
    rate_limit: { rate: 10/d, burst: 0, by: ip }
    request_timeout: 0s
upstreams: [{ name: u, endpoints: [http://x] }]
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:5:21: routes[0].rewrite_prefix: `v2` is not a path like / or /v2/",
            "gw.yaml:7:33: routes[0].request_headers.set.transfer-encoding: `transfer-encoding` frames the message or belongs to one hop; it cannot be changed",
            "gw.yaml:7:59: routes[0].request_headers.set.x-forwarded-for: `x-forwarded-for` is written by the gateway; it cannot be changed",
            "gw.yaml:7:80: routes[0].request_headers.set.bad name: `bad name` is not a header name",
            "gw.yaml:7:89: routes[0].request_headers.set.x-ok: not a header value (visible ASCII, spaces and tabs)",
            "gw.yaml:8:16: routes[0].request_headers.remove[0]: `x-auth-subject` is written by the gateway; it cannot be changed",
            "gw.yaml:9:34: routes[0].response_headers.remove[0]: `x-request-id` is written by the gateway; it cannot be changed",
            "gw.yaml:10:25: routes[0].rate_limit.rate: `10/d` is not a rate like 100/s, 600/m or 1000/h",
            "gw.yaml:10:38: routes[0].rate_limit.burst: must be greater than zero",
            "gw.yaml:10:45: routes[0].rate_limit.by: `ip` is not `client`, `subject` or `route`",
            "gw.yaml:11:22: routes[0].request_timeout: must be greater than zero",
        ]
    );
}

#[test]
fn https_redirects_and_upstream_protocols_are_checked() {
    let yaml = "\
listeners:
  - { name: a, address: 127.0.0.1:1, redirect_to_https: 0 }
  - { name: b, address: 127.0.0.1:2, tls: { certificates: [{ cert: c.pem, key: k.pem }] }, redirect_to_https: 443 }
routes: [{ name: r, upstream: u }]
upstreams: [{ name: u, endpoints: [http://x], protocol: h3, host: sni }]
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:2:57: listeners[0].redirect_to_https: a port from 1 to 65535, e.g. 443",
            "gw.yaml:3:111: listeners[1].redirect_to_https: only a plain listener redirects to HTTPS (this one has `tls`)",
            "gw.yaml:5:57: upstreams[0].protocol: `h3` is not an upstream protocol: use http1 or h2",
            "gw.yaml:5:67: upstreams[0].host: `sni` is not `client` or `endpoint`",
        ]
    );
}

#[test]
fn mutual_tls_problems_are_checked() {
    // Early data would be served before the client's certificate is checked; a route cannot
    // ask for a certificate no listener asks for.
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:1
    tls: { certificates: [{ cert: c.pem, key: k.pem }], client_auth: { ca_files: [ca.pem] } }
    quic: { early_data: true }
routes: [{ name: r, upstream: u, auth: { client_certificate: true, scopes: [x] } }]
upstreams: [{ name: u, endpoints: [http://x] }]
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:2:11: listeners[0].quic.early_data: early data would serve requests before the client certificate is verified; turn off one of quic.early_data and tls.client_auth",
            "gw.yaml:6:18: routes[0].auth: name a provider in `bearer`, `login` or both (leave `auth` out for a public route, or require only `client_certificate`)",
        ]
    );
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
routes: [{ name: r, upstream: u, auth: { client_certificate: true } }]
upstreams: [{ name: u, endpoints: [http://x] }]
";
    assert_eq!(
        problems(yaml),
        vec!["gw.yaml:2:18: routes[0].auth.client_certificate: no listener asks for client certificates (listeners[].tls.client_auth)"]
    );
    // Files are read: the client CAs of a listener, the certificate presented to an upstream.
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:1
    tls:
      certificates: [{ cert: /nonexistent/c.pem, key: /nonexistent/k.pem }]
      client_auth: { ca_files: [/nonexistent/clients.pem] }
routes: [{ name: r, upstream: u }]
upstreams:
  - name: u
    endpoints: [https://x]
    tls: { client_certificate: { cert: /nonexistent/me.pem, key: /nonexistent/me.key } }
";
    let (code, err) = check(yaml);
    assert_eq!(code, 64);
    for line in [
        "gw.yaml:6:33: listeners[0].tls.client_auth.ca_files[0]: cannot read /nonexistent/clients.pem",
        "gw.yaml:11:40: upstreams[0].tls.client_certificate.cert: cannot read /nonexistent/me.pem",
        "gw.yaml:11:66: upstreams[0].tls.client_certificate.key: cannot read /nonexistent/me.key",
    ] {
        assert!(err.contains(line), "{line}\n{err}");
    }
}

#[test]
fn cors_policies_are_checked() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
routes:
  - name: r
    upstream: u
    cors:
      allow_origins: [\"*\", app.example.com, \"https://*.\"]
      allow_methods: [\"GE T\"]
      allow_headers: [\"bad name\"]
      max_age: 5
      allow_credentials: true
upstreams: [{ name: u, endpoints: [http://x] }]
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:6:23: routes[0].cors.allow_origins[0]: `*` cannot go with allow_credentials: browsers refuse it; list the origins",
            "gw.yaml:6:28: routes[0].cors.allow_origins[1]: `app.example.com` is not an origin like https://app.example.com or https://*.example.com",
            "gw.yaml:6:45: routes[0].cors.allow_origins[2]: `https://*.` is not an origin like https://app.example.com or https://*.example.com",
            "gw.yaml:7:23: routes[0].cors.allow_methods[0]: `GE T` is not a method",
            "gw.yaml:8:23: routes[0].cors.allow_headers[0]: `bad name` is not a header name",
            "gw.yaml:9:16: routes[0].cors.max_age: `5` has no unit: write it like 500ms, 10s, 5m or 1h",
        ]
    );
}

#[test]
fn route_splits_client_rules_and_compression_are_checked() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
routes:
  - name: r
    upstream: u
    split: [{ upstream: v, percent: 60 }, { upstream: v, percent: 50 }, { upstream: nope, percent: 0 }, { upstream: u, percent: 1 }]
    clients: { allow: [10.0.0.0/33], deny: [nope] }
    split_by: sometimes
    compress: { types: [json, \"*/*\"] }
upstreams: [{ name: u, endpoints: [http://x] }, { name: v, endpoints: [http://y] }]
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:5:55: routes[0].split[1].upstream: `v` already has a share of this route",
            "gw.yaml:5:67: routes[0].split[1].percent: the route's shares add up to 110 percent, more than 100",
            "gw.yaml:5:85: routes[0].split[2].upstream: no upstream named `nope`",
            "gw.yaml:5:100: routes[0].split[2].percent: a share from above 0 to 100",
            "gw.yaml:5:117: routes[0].split[3].upstream: `u` already has a share of this route",
            "gw.yaml:6:24: routes[0].clients.allow[0]: `10.0.0.0/33` is not an IP address or CIDR like 10.0.0.0/8",
            "gw.yaml:6:45: routes[0].clients.deny[0]: `nope` is not an IP address or CIDR like 10.0.0.0/8",
            "gw.yaml:7:15: routes[0].split_by: `sometimes` is not `request`, `client` or `subject`",
            "gw.yaml:8:25: routes[0].compress.types[0]: `json` is not a content type like application/json or text/*",
            "gw.yaml:8:31: routes[0].compress.types[1]: `*/*` is not a content type like application/json or text/*",
        ]
    );
}

#[test]
fn header_conditions_are_checked() {
    // Different header conditions make different routes; the same ones make a duplicate.
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
routes:
  - { name: a, upstream: u, match: { headers: { x-canary: \"1\" } } }
  - { name: b, upstream: u, match: { headers: { x-canary: \"2\" } } }
  - { name: c, upstream: u, match: { headers: { X-Canary: \"1\" } } }
  - { name: d, upstream: u, match: { headers: { \"bad name\": x } } }
upstreams: [{ name: u, endpoints: [http://x] }]
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:5:13: routes[2].match: matches exactly what the route at line 3 matches, so it could never be chosen",
            "gw.yaml:6:61: routes[3].match.headers.bad name: `bad name` is not a header name",
        ]
    );
}

#[test]
fn routes_that_answer_by_themselves_are_checked() {
    let yaml = "\
listeners: [{ name: a, address: 127.0.0.1:1 }]
routes:
  - { name: none }
  - { name: both, upstream: u, respond: { status: 200 }, match: { path_prefix: /b } }
  - { name: r, redirect: { to: example.com, status: 200 }, trust: {}, match: { path_prefix: /r } }
  - { name: f, respond: { status: 700 }, match: { path_prefix: /f } }
upstreams: [{ name: u, endpoints: [http://x] }]
";
    assert_eq!(
        problems(yaml),
        vec![
            "gw.yaml:3:13: routes[0]: a route needs `upstream`, `redirect` or `respond`",
            "gw.yaml:4:13: routes[1]: `upstream`, `redirect` and `respond` exclude each other: give one",
            "gw.yaml:5:13: routes[2].trust: a route without `upstream` answers before this would apply",
            "gw.yaml:5:32: routes[2].redirect.to: `example.com` is not a URL like https://new.example.com or a path like /v2",
            "gw.yaml:5:53: routes[2].redirect.status: a redirect status: 301, 302, 303, 307 or 308",
            "gw.yaml:6:35: routes[3].respond.status: a status from 200 to 599",
        ]
    );
}
