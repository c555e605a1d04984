//! The SLO rules in `alerts/` are what `gateway slo-rules` makes of `alerts/slo-config.yaml`
//! (regenerated here; any difference fails), `promtool check rules` finds them clean, and
//! `promtool test rules` passes the unit tests in `alerts/tests/` (Prometheus from Debian,
//! installed by `scripts/test.sh`).

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
    // Every runbook the rules name exists.
    for line in committed.lines().filter_map(|l| l.trim().strip_prefix("runbook_url: ")) {
        let path = line.trim_matches('\'');
        assert!(root().join(path).exists(), "missing runbook {path}");
    }
}

#[test]
fn promtool_finds_the_rules_clean_and_their_tests_pass() {
    let check = Command::new("promtool")
        .current_dir(root())
        .args(["check", "rules", "alerts/slo.rules.yml"])
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
