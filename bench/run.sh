#!/usr/bin/env bash
# Builds the gateway and the load driver in release mode, installs nginx and wrk if missing, and
# runs the load harness with the given arguments (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --release --locked -p gateway -p gateway-bench
# 10,000 idle connections need descriptors on both sides.
ulimit -n "$(ulimit -Hn)"
exec target/release/load "$@"
