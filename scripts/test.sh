#!/usr/bin/env bash
# Runs berth's whole test suite: installs system packages, checks formatting and lints, builds
# every target once (debug profile) and runs all tests, including the end-to-end ones that start
# real berthd and registry processes. Run as root on Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The e2e tests start target/debug/berthd: build every binary before running them.
cargo build --workspace --all-targets --locked
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
# The community's CRI validation suite against this tree's berthd (serially, after the rest).
scripts/critest.sh
