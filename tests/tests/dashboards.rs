//! The Grafana dashboards in `dashboards/`: `dashboards/check/check.mjs` type-checks them
//! against Grafana's own dashboard types (`@grafana/schema`, pinned) with `tsc --strict` and
//! lints them (installed by `scripts/test.sh` with `npm ci --prefix dashboards/check`); it
//! catches a broken dashboard; every metric they read is in `docs/metrics.md`; the provisioning
//! files match them. Their queries run against a real Prometheus in `tests/tests/observability.rs`.

use std::path::PathBuf;

use anyhow::Context;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<_> = std::fs::read_dir(root().join("dashboards"))
        .expect("dashboards/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("dashboard");
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap_or_default().to_string_lossy().to_string(), json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn check(dir: &std::path::Path) -> std::process::Output {
    Command::new("node")
        .arg(root().join("dashboards/check/check.mjs"))
        .arg(dir)
        .output()
        .expect("node (scripts/test.sh needs Node.js and runs npm ci --prefix dashboards/check)")
}

#[test]
fn the_dashboards_type_check_and_lint_clean() {
    let names: Vec<String> = dashboards().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "baselines.json",
            "identity.json",
            "overview.json",
            "runtime.json",
            "trust.json"
        ]
    );
    let out = check(&root().join("dashboards"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_check_catches_a_broken_dashboard() -> anyhow::Result<()> {
    let (_, mut d) = dashboards()
        .into_iter()
        .find(|(n, _)| n == "overview.json")
        .context("overview")?;
    let panel = d["panels"]
        .as_array_mut()
        .and_then(|ps| ps.iter_mut().find(|p| p["type"] == "timeseries"))
        .context("a time series panel")?;
    panel["colour"] = "red".into(); // not a panel field
    panel["options"]["legend"]["placement"] = "middle".into(); // not a legend placement
    panel["targets"][0]["expr"] = "sum(gateway_requests_total{instance=~\"$instance\"})".into();
    panel.as_object_mut().context("panel")?.remove("description");
    d["graphTooltip"] = 7.into(); // not a cursor sync mode
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("broken.json"), serde_json::to_vec_pretty(&d)?)?;
    std::fs::write(dir.path().join("broken-too.json"), serde_json::to_vec_pretty(&d)?)?;
    let out = check(dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "'\"colour\"' does not exist",
        "Type '\"middle\"' is not assignable",
        "Type '7' is not assignable to type 'DashboardCursorSync",
        "no description",
        "the counter gateway_requests_total is read outside rate() or increase()",
        "uid gateway-overview is also used by broken-too.json",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        err.contains("broken.json: line "),
        "problems name file and line:\n{err}"
    );
    Ok(())
}

#[test]
fn every_metric_the_dashboards_read_is_documented() {
    let documented = gateway_tests::documented_metrics();
    let mut read = std::collections::BTreeSet::new();
    for (name, d) in dashboards() {
        for m in gateway_tests::metric_names_in(&d.to_string()) {
            assert!(
                documented.contains(&m),
                "{name} reads {m}, which docs/metrics.md does not define"
            );
            read.insert(m);
        }
    }
    assert!(read.len() >= 60, "the dashboards read only {} families", read.len());
}

#[test]
fn the_provisioning_files_match_the_dashboards() -> anyhow::Result<()> {
    let ds = std::fs::read_to_string(root().join("dashboards/provisioning/datasources/prometheus.yml"))?;
    assert!(
        ds.contains("type: prometheus") && ds.contains("uid: prometheus"),
        "{ds}"
    );
    let provider = std::fs::read_to_string(root().join("dashboards/provisioning/dashboards/gateway.yml"))?;
    assert!(
        provider.contains("type: file") && provider.contains("folder: Gateway"),
        "{provider}"
    );
    for (name, d) in dashboards() {
        let var = d["templating"]["list"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == "datasource"))
            .with_context(|| format!("{name}: no datasource variable"))?;
        assert_eq!(
            var["current"]["value"], "prometheus",
            "{name}: starts on the provisioned data source"
        );
    }
    Ok(())
}
