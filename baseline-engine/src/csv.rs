//! The offline scoring of a CSV series (`baseline-engine score`): the same streaming detector
//! that runs inside the gateway, fed one point at a time in file order, each point scored before
//! it is learned (no look-ahead).

use std::io::{BufRead, Write};

use crate::series::{Config, Detector};

/// Why a file could not be scored.
#[derive(Debug, PartialEq, Eq)]
pub struct CsvError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for CsvError {}

/// Seconds since 1970 of `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days_in_month = match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d > days_in_month {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Reads `timestamp,value` rows and writes `timestamp,value,anomaly_score`. Returns the number
/// of points scored. Nothing is written past the first bad line.
pub fn score(input: impl BufRead, mut output: impl Write, config: Config) -> Result<usize, Box<dyn std::error::Error>> {
    let mut detector = Detector::new(config);
    let mut lines = input.lines();
    let header = lines.next().transpose()?.unwrap_or_default();
    if header.trim().trim_start_matches('\u{feff}') != "timestamp,value" {
        return Err(Box::new(CsvError {
            line: 1,
            reason: format!("the header must be `timestamp,value`, not `{}`", header.trim()),
        }));
    }
    writeln!(output, "timestamp,value,anomaly_score")?;
    let mut n = 0;
    let mut last: Option<i64> = None;
    for (i, line) in lines.enumerate() {
        let line = line?;
        let lineno = i + 2;
        let row = line.trim();
        if row.is_empty() {
            continue;
        }
        let bad = |reason: String| CsvError { line: lineno, reason };
        let Some((ts_text, value_text)) = row.split_once(',') else {
            return Err(bad(format!("expected `timestamp,value`, found `{row}`")).into());
        };
        let ts = parse_timestamp(ts_text.trim())
            .ok_or_else(|| bad(format!("`{ts_text}` is not a timestamp like 2024-01-31 23:59:00")))?;
        let value: f64 = value_text
            .trim()
            .parse()
            .map_err(|_| bad(format!("`{value_text}` is not a number")))?;
        if last.is_some_and(|l| ts < l) {
            return Err(bad("timestamps must not go backwards".into()).into());
        }
        last = Some(ts);
        let a = detector.observe(ts, value);
        writeln!(output, "{},{},{:.6}", ts_text.trim(), value_text.trim(), a.score)?;
        n += 1;
    }
    output.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2000-02-29 12:00:00"), Some(951_825_600));
        assert_eq!(parse_timestamp("2026-11-26 07:40:13"), Some(1_795_678_813));
        for bad in [
            "2001-02-29 00:00:00",
            "2026-13-01 00:00:00",
            "2026-11-26T07:40:13",
            "2026-11-26 7:40:13",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn scores_are_written_for_every_point() {
        let mut input = String::from("timestamp,value\n");
        for i in 0..200 {
            let v = if i == 150 { 500.0 } else { 10.0 + (i % 3) as f64 };
            input.push_str(&format!("2024-01-01 {:02}:{:02}:00,{v}\n", i / 60, i % 60));
        }
        let mut out = Vec::new();
        assert_eq!(score(input.as_bytes(), &mut out, Config::default()).ok(), Some(200));
        let text = String::from_utf8(out).unwrap_or_default();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "timestamp,value,anomaly_score");
        assert_eq!(rows.len(), 201);
        let score_of = |r: &str| r.rsplit(',').next().and_then(|s| s.parse::<f64>().ok()).unwrap_or(-1.0);
        assert!(score_of(rows[151]) > 0.9, "{}", rows[151]);
        assert!(rows[1..150].iter().all(|r| score_of(r) < 0.5));
    }

    #[test]
    fn bad_input_names_the_line() {
        let cases = [
            ("time,value\n", 1, "header"),
            (
                "timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,x\n",
                3,
                "not a number",
            ),
            ("timestamp,value\n2024-01-01 00:00:00\n", 2, "expected"),
            ("timestamp,value\n2024-01-01,1\n", 2, "not a timestamp"),
            (
                "timestamp,value\n2024-01-02 00:00:00,1\n2024-01-01 00:00:00,1\n",
                3,
                "backwards",
            ),
        ];
        for (input, line, words) in cases {
            let err = score(input.as_bytes(), Vec::new(), Config::default()).expect_err(input);
            let e = err.downcast_ref::<CsvError>().expect("a CSV error");
            assert_eq!(e.line, line, "{input}");
            assert!(e.reason.contains(words), "{}", e.reason);
        }
    }
}
