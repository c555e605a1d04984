//! Load harness and benches for the gateway; see `bench/README.md`.
