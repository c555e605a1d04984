#!/usr/bin/env bash
# Builds the gateway and the HTTP/3 load driver in release mode, installs nginx if missing, and
# compares HTTP/3 with HTTP/2 over TLS through the gateway (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
cargo build --release --locked -p gateway -p gateway-bench
exec target/release/h3load "$@"
