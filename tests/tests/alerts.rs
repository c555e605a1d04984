//! The rules in `alerts/`: the SLO rules are what `gateway slo-rules` makes of
//! `alerts/slo-config.yaml` (regenerated here; any difference fails); every alert has a
//! severity, a summary, a description and a runbook that exists; `promtool check rules` finds
//! every file clean, and `promtool test rules` passes the unit tests in `alerts/tests/`
//! (Prometheus from Debian, installed by `scripts/test.sh`).

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
