#!/usr/bin/env bash
# Runs the ignored tests of one e2e test file: those that need something installed first
# (e.g. `packaging`, run by test-packaging.sh and test-chart.sh). Their output is shown.
# Usage: scripts/run-ignored-e2e.sh TEST_FILE_NAME
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --locked -p e2e --test "$1" --run-ignored only --no-capture
fi
exec cargo test --locked -p e2e --test "$1" -- --ignored --nocapture
