#!/usr/bin/env bash
# Builds the gateway and the simulator in release mode, installs the test suite's OpenID provider
# if missing, and runs the adaptive-trust evaluation with the given arguments (see
# bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null 2>&1 || { echo "npm is needed (Node.js 20 or later)"; exit 1; }
[ -d tests/oidc/node_modules ] || npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
cargo build --release --locked -p gateway -p gateway-bench
ulimit -n "$(ulimit -Hn)"
exec target/release/simulate "$@"
