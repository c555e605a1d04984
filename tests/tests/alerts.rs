//! The rules in `alerts/`: the SLO rules are what `gateway slo-rules` makes of
//! `alerts/slo-config.yaml` (regenerated here; any difference fails); every alert has a
//! severity, a summary, a description and a runbook that exists; `promtool check rules` finds
//! every file clean, and `promtool test rules` passes the unit tests in `alerts/tests/`
//! (Prometheus from Debian, installed by `scripts/test.sh`); every metric a rule reads is in
//! `docs/metrics.md`; `alerts/alertmanager.yml` passes `amtool check-config` and sends each
//! severity to its receiver.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_committed_rules_are_what_the_config_generates() {
    let out = Command::new(gateway_tests::gateway_bin!())
        .current_dir(root())
        .args(["slo-rules", "alerts/slo-config.yaml"])
        .output()
        .expect("run gateway");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let committed = std::fs::read_to_string(root().join("alerts/slo.rules.yml")).expect("alerts/slo.rules.yml");
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "alerts/slo.rules.yml is out of date: run `gateway slo-rules alerts/slo-config.yaml --output alerts/slo.rules.yml`"
    );
}

fn rule_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("alerts"))
        .expect("alerts/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".rules.yml"))
        .map(|n| format!("alerts/{n}"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_alert_has_a_severity_its_annotations_and_a_runbook() {
    let files = rule_files();
    assert!(files.len() >= 2, "{files:?}");
    let mut alerts = 0;
    for f in &files {
        let text = std::fs::read_to_string(root().join(f)).expect("rules");
        // Each alert's block: from `- alert:` to the next rule.
        for block in text.split("- alert: ").skip(1) {
            let block = block.split("\n      - ").next().unwrap_or(block);
            let name = block.lines().next().unwrap_or("");
            for key in ["severity: ", "summary: ", "description: ", "runbook_url: "] {
                assert!(block.contains(key), "{f}: {name} has no {key}");
            }
            let url = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("runbook_url: "))
                .unwrap_or("")
                .trim_matches('\'');
            assert!(root().join(url).exists(), "{f}: {name}: missing runbook {url}");
            alerts += 1;
        }
    }
    assert!(alerts >= 17, "{alerts} alerts");
}

#[test]
fn promtool_finds_the_rules_clean_and_their_tests_pass() {
    let check = Command::new("promtool")
        .current_dir(root())
        .args(["check", "rules"])
        .args(rule_files())
        .output()
        .expect("promtool (scripts/test.sh installs prometheus)");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let tests: Vec<String> = std::fs::read_dir(root().join("alerts/tests"))
        .expect("alerts/tests")
        .filter_map(|e| e.ok())
        .map(|e| format!("alerts/tests/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".yml"))
        .collect();
    assert!(!tests.is_empty());
    let run = Command::new("promtool")
        .current_dir(root())
        .args(["test", "rules"])
        .args(&tests)
        .output()
        .expect("promtool");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn every_metric_the_rules_read_is_documented() {
    let documented = gateway_tests::documented_metrics();
    let mut read = std::collections::BTreeSet::new();
    for f in rule_files() {
        let text = std::fs::read_to_string(root().join(&f)).expect("rules");
        for name in gateway_tests::metric_names_in(&text) {
            read.insert(name.clone());
            assert!(
                documented.contains(&name),
                "{f} reads {name}, which docs/metrics.md does not define"
            );
        }
    }
    assert!(read.len() >= 12, "the rules read only {read:?}");
}

#[test]
fn the_alertmanager_example_is_valid_and_routes_each_severity() {
    let check = Command::new("amtool")
        .current_dir(root())
        .args(["check-config", "alerts/alertmanager.yml"])
        .output()
        .expect("amtool (scripts/test.sh installs prometheus-alertmanager)");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut severities = std::collections::BTreeSet::new();
    for f in rule_files() {
        let text = std::fs::read_to_string(root().join(&f)).expect("rules");
        for block in text.split("- alert: ").skip(1) {
            let name = block.lines().next().unwrap_or("").trim().to_string();
            let severity = block
                .split("severity: ")
                .nth(1)
                .and_then(|r| r.split([',', ' ', '}', '\n']).next())
                .unwrap_or("")
                .to_string();
            severities.insert((name, severity));
        }
    }
    for (name, severity) in &severities {
        let receiver = match severity.as_str() {
            "page" => "pager",
            "ticket" => "tickets",
            other => panic!("{name}: severity {other} has no route in alerts/alertmanager.yml"),
        };
        let out = Command::new("amtool")
            .current_dir(root())
            .args(["config", "routes", "test", "--config.file=alerts/alertmanager.yml"])
            .arg(format!("--verify.receivers={receiver}"))
            .arg(format!("alertname={name}"))
            .arg(format!("severity={severity}"))
            .output()
            .expect("amtool");
        assert!(
            out.status.success(),
            "{name} ({severity}) does not reach {receiver}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
