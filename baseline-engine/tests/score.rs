//! `baseline-engine score` as a user runs it: files in, files out, exit codes.

use std::process::Command;

fn run(input: &str) -> (Option<i32>, String, Option<String>) {
    let dir = tempfile_dir();
    let (i, o) = (dir.join("in.csv"), dir.join("out.csv"));
    std::fs::write(&i, input).expect("write input");
    let out = Command::new(env!("CARGO_BIN_EXE_baseline-engine"))
        .args(["score", "--input"])
        .arg(&i)
        .arg("--output")
        .arg(&o)
        .output()
        .expect("run baseline-engine");
    let written = std::fs::read_to_string(&o).ok();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        written,
    )
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "baseline-engine-score-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn scores_a_series() {
    let mut input = String::from("timestamp,value\n");
    for i in 0..300 {
        let v = if i == 250 { 90.0 } else { 20.0 + ((i * 7) % 5) as f64 };
        input.push_str(&format!("2024-03-01 {:02}:{:02}:00,{v}\n", i / 60, i % 60));
    }
    let (code, err, out) = run(&input);
    assert_eq!(code, Some(0), "{err}");
    let out = out.expect("output written");
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 301);
    assert_eq!(rows[0], "timestamp,value,anomaly_score");
    assert!(rows[251].starts_with("2024-03-01 04:10:00,90,"), "{}", rows[251]);
    let score: f64 = rows[251].rsplit(',').next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    assert!(score > 0.9);
    // Causal: the same prefix scores the same whatever follows.
    let prefix: String = input.lines().take(201).map(|l| format!("{l}\n")).collect();
    let (_, _, short) = run(&prefix);
    let short = short.expect("output");
    assert_eq!(short.lines().collect::<Vec<_>>(), rows[..201].to_vec());
}

#[test]
fn bad_data_is_refused_with_its_line() {
    let (code, err, out) = run("timestamp,value\n2024-03-01 00:00:00,1\n2024-03-01 00:01:00,lots\n");
    assert_eq!(code, Some(65));
    assert!(err.contains("line 3: `lots` is not a number"), "{err}");
    assert_eq!(out, None, "no half-written output is left");
    let (code, err, _) = run("");
    assert_eq!(code, Some(65));
    assert!(err.contains("line 1: the header must be `timestamp,value`"), "{err}");
}
