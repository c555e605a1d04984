#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a developer's: installs what the tests use
# (Prometheus and Alertmanager, from Debian), then checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# A real OpenID provider for the identity tests (npm's oidc-provider, pinned by the lockfile).
command -v npm >/dev/null 2>&1 || { echo "npm is needed (Node.js 20 or later)"; exit 1; }
npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
# Grafana's dashboard types and TypeScript, pinned, for the dashboard check.
npm ci --prefix dashboards/check --no-audit --no-fund --loglevel=error

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One total over every test binary (cargo prints one line per binary, the last often empty).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
