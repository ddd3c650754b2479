#!/usr/bin/env bash
# Runs berth's whole test suite: installs system packages, checks formatting and lints, builds
# every target once (debug profile) and runs all tests, including the end-to-end ones that start
# real berthd and registry processes, and the cgroup tests again in a cgroup v2 VM
# (scripts/v2-lane.sh); then builds the release berthd once and tests the Debian
# package and the Helm chart with it. Run as root on Debian bookworm.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The e2e tests start target/debug/berthd: build every binary before running them.
cargo build --workspace --all-targets --locked
failed=()
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast || failed+=(suite)
else
    cargo test --workspace --locked --no-fail-fast || failed+=(suite)
fi
# The community's CRI validation suite against this tree's berthd (serially, after the rest).
scripts/critest.sh || failed+=(critest)
# cgroup v2 (production's layout; this machine kind boots v1): the cgroup tests in a throwaway
# pure cgroup v2 VM, from the debug build above. It prints how long it took.
scripts/v2-lane.sh || failed+=(v2-lane)
# Checkpoint/restore with CRIU, in a VM whose kernel CRIU works on (not this host's).
scripts/criu-lane.sh || failed+=(criu-lane)

# Operations: the package and the chart ship release binaries (built once, here; the shim
# linked statically, as shipped).
t=$SECONDS
scripts/build-release.sh target/dist
echo "test.sh: release build in $((SECONDS - t))s"
scripts/test-packaging.sh target/dist || failed+=(packaging)
scripts/test-chart.sh target/dist || failed+=(chart)

if ((${#failed[@]})); then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all passed (suite, critest, cgroup v2 lane, criu lane, packaging, chart)"
