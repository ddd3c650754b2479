#!/bin/bash
# Runs inside the CRIU lane's VM (scripts/criu-lane.sh): the worktree is shared at /shared and
# bind-mounted at its host path (the test binary names its build directories by absolute
# path), then the checkpoint tests run one at a time with CRIU required.
# Usage (in the guest): criu-guest.sh HOST_WORKTREE TEST_BINARY [FILTER]
set -euo pipefail
root=$1 bin=$2 filter=${3:-}
mkdir -p "$root"
mount --bind /shared "$root"
cd "$root"
echo "criu-guest: $(criu --version | head -n1); criu check: $(criu check 2>&1 | tail -n1)"
export BERTH_REQUIRE_CRIU=1 CI=true RUST_BACKTRACE=1 BERTH_E2E_TIMEOUT_SCALE=${BERTH_E2E_TIMEOUT_SCALE:-8}
args=(--test-threads=1)
[[ -n $filter ]] && args+=("$filter")
"$bin" "${args[@]}"
