//! `baseline-engine score --input series.csv --output scores.csv`: scores a CSV series with the
//! streaming detector the gateway runs. Exit codes: 0 done, 1 I/O failure, 2 bad command line,
//! 65 bad input data.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "baseline-engine", version, about = "The adaptive gateway's baseline engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Score a `timestamp,value` CSV series; writes `timestamp,value,anomaly_score`.
    Score {
        /// Input CSV (header `timestamp,value`, timestamps `YYYY-MM-DD HH:MM:SS`).
        #[arg(long)]
        input: std::path::PathBuf,
        /// Output CSV.
        #[arg(long)]
        output: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Score { input, output } => {
            let reader = match std::fs::File::open(&input) {
                Ok(f) => std::io::BufReader::new(f),
                Err(e) => {
                    eprintln!("{}: {e}", input.display());
                    return ExitCode::from(1);
                }
            };
            let writer = match std::fs::File::create(&output) {
                Ok(f) => std::io::BufWriter::new(f),
                Err(e) => {
                    eprintln!("{}: {e}", output.display());
                    return ExitCode::from(1);
                }
            };
            match baseline_engine::csv::score(reader, writer, baseline_engine::series::Config::default()) {
                Ok(n) => {
                    eprintln!("{}: {n} points scored", output.display());
                    ExitCode::SUCCESS
                }
                Err(e) if e.is::<baseline_engine::csv::CsvError>() => {
                    eprintln!("{}: {e}", input.display());
                    let _ = std::fs::remove_file(&output);
                    ExitCode::from(65)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
