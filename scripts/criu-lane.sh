#!/usr/bin/env bash
# The CRIU lane: runs berth's checkpoint/restore e2e tests (e2e/tests/checkpoint.rs) in a
# throwaway VM whose kernel CRIU works on (../shared/tools/v2lane.sh: Debian bookworm, kernel
# 6.1, cgroup v2, with Debian's criu, docker-registry and ca-certificates), because `criu check` fails on the
# development hosts' kernel. The tests run with BERTH_REQUIRE_CRIU=1, so a guest where CRIU
# cannot work fails the lane instead of skipping.
#
# Usage: scripts/criu-lane.sh [TEST_FILTER]     (as root; builds the VM image once, ~4 min)
# Needs the debug build of every target (scripts/test.sh builds it first; else this does).
# Environment: V2LANE (path of v2lane.sh; default ../shared/tools/v2lane.sh),
#              BERTH_CRIU_LANE_DIR (VM state; default /var/tmp/berth-criu-lane).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
v2lane=${V2LANE:-$root/../shared/tools/v2lane.sh}
[[ -x $v2lane ]] || { echo "criu-lane: no v2lane.sh at $v2lane (set V2LANE)" >&2; exit 2; }
export V2LANE_DIR=${BERTH_CRIU_LANE_DIR:-/var/tmp/berth-criu-lane}
export V2LANE_PACKAGES=criu,docker-registry,ca-certificates
export V2LANE_MEM=${V2LANE_MEM:-3072} V2LANE_TIMEOUT=${V2LANE_TIMEOUT:-1500}

if [[ ! -e $V2LANE_DIR/root.img ]]; then
    echo "criu-lane: building the VM image in $V2LANE_DIR"
    "$v2lane" build
fi
# The test binary (built on the host: same glibc as the guest).
cargo build --locked -p cri-server -p runtime-core --bin berthd --bin berth-shim
bin=$(cargo test --locked -p e2e --test checkpoint --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .target.name == "checkpoint" and .executable != null) | .executable' |
    tail -n1)
[[ -x $bin ]] || { echo "criu-lane: cannot find the checkpoint test binary" >&2; exit 2; }
# crictl for `crictl checkpoint` (the test looks for target/cri-tools/crictl; the worktree is
# shared with the guest): the workplace's pinned build, checked against its SHA256SUMS.
shared_tools=$root/../shared/tools/cri-tools
if [[ -f $shared_tools/crictl.xz ]]; then
    want=$(awk '$2 == "crictl" {print $1}' "$shared_tools/SHA256SUMS")
    crictl=target/cri-tools/crictl
    if [[ ! -x $crictl ]] || [[ $(sha256sum "$crictl" | cut -d' ' -f1) != "$want" ]]; then
        mkdir -p target/cri-tools
        xz -dc "$shared_tools/crictl.xz" > "$crictl.tmp"
        [[ $(sha256sum "$crictl.tmp" | cut -d' ' -f1) == "$want" ]] ||
            { rm -f "$crictl.tmp"; echo "criu-lane: crictl.xz does not match SHA256SUMS" >&2; exit 2; }
        chmod +x "$crictl.tmp" && mv "$crictl.tmp" "$crictl"
    fi
else
    echo "criu-lane: no $shared_tools/crictl.xz: the crictl checkpoint test will skip in the VM" >&2
fi
echo "criu-lane: running $bin in the VM"
t=$SECONDS
rc=0
"$v2lane" run scripts/lane/criu-guest.sh "$root" "$bin" "${1:-}" || rc=$?
echo "criu-lane: VM run took $((SECONDS - t))s, status $rc"
exit "$rc"
