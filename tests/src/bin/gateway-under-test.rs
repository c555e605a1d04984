//! The gateway command, built inside the test crate so end-to-end tests always run the current
//! code (cargo passes its path to the tests as `CARGO_BIN_EXE_gateway-under-test`).

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
