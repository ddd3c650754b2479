#!/usr/bin/env bash
# The cgroup v2 lane: runs berth's cgroup tests (scripts/v2lane/tests.txt) in a throwaway VM
# whose kernel has only cgroup v2 (this machine kind boots cgroup v1/hybrid), from this tree's
# debug build. Run as root on Debian bookworm; scripts/test.sh runs it after the suite.
#
#   scripts/v2-lane.sh            build what is missing, boot the VM, run the tests
#   scripts/v2-lane.sh --image    only build (or check) the cached VM image
#   scripts/v2-lane.sh --boot plain|systemd   only the tests of one of the two boots
#   V2LANE_TESTS=FILE scripts/v2-lane.sh      the tests listed in FILE (same format) instead of
#                                             scripts/v2lane/tests.txt: a few while iterating
#
# The VM (scripts/v2lane/vm.sh, from ../shared/tools/v2lane.sh) boots Debian's stock kernel with
# cgroup_no_v1=all under QEMU (TCG where there is no real VT-x/AMD-V: every fork+exec costs
# ~50 ms, so the lane is a focused set, not the whole suite). Its image is built once (~4 min,
# debootstrap from the host's apt sources) into $V2LANE_DIR (default /var/tmp/berth-v2lane) and
# reused while vm.sh and the package list are unchanged. The work tree is shared with the
# guest; test binaries and berthd run there unchanged (same bookworm glibc).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$PWD
start=$SECONDS

export V2LANE_DIR=${V2LANE_DIR:-/var/tmp/berth-v2lane}
# docker-registry: the e2e registry; busybox (dynamic): the test images' userland;
# containernetworking-plugins: the CNI pod tests; ca-certificates: berthd's registry client
# will not start without them; systemd + dbus: the systemd cgroup driver; crun: the OCI
# runtime handler tests under crun, which refuses the development machines' hybrid layout.
export V2LANE_PACKAGES=docker-registry,apache2-utils,busybox,containernetworking-plugins,ca-certificates,systemd,dbus,crun
export V2LANE_SHARE=$tree
export V2LANE_MEM=${V2LANE_MEM:-3072}
export V2LANE_TIMEOUT=${V2LANE_TIMEOUT:-3600}
export V2LANE_MODULES=${V2LANE_MODULES:-overlay veth bridge}
vm=scripts/v2lane/vm.sh
tests=${V2LANE_TESTS:-scripts/v2lane/tests.txt}
[[ -r $tests ]] || { echo "v2-lane: cannot read the tests file $tests" >&2; exit 2; }

log() { echo "v2-lane: $*"; }

# The VM image, rebuilt only when vm.sh or the package list changed (a package change redoes
# the debootstrap; a vm.sh change only the init, initramfs and image, ~15 s).
image() {
    local key have=""
    key=$( { sha256sum <"$vm"; echo "$V2LANE_PACKAGES"; } | sha256sum | cut -c1-16)
    [[ -e $V2LANE_DIR/berth-image.key ]] && have=$(cat "$V2LANE_DIR/berth-image.key")
    if [[ $have == "$key" && -e $V2LANE_DIR/root.img ]]; then
        log "VM image cached in $V2LANE_DIR ($key)"
        return
    fi
    mkdir -p "$V2LANE_DIR"
    if [[ $(cat "$V2LANE_DIR/berth-packages" 2>/dev/null) != "$V2LANE_PACKAGES" ]]; then
        rm -f "$V2LANE_DIR/rootfs/.v2lane-debootstrap-ok"
    fi
    local t=$SECONDS
    log "building the VM image in $V2LANE_DIR (log: $V2LANE_DIR/build.log)"
    if ! "$vm" build >"$V2LANE_DIR/build.log" 2>&1; then
        tail -n 30 "$V2LANE_DIR/build.log"
        log "VM image build failed"
        exit 2
    fi
    echo "$V2LANE_PACKAGES" >"$V2LANE_DIR/berth-packages"
    echo "$key" >"$V2LANE_DIR/berth-image.key"
    log "VM image built in $((SECONDS - t))s"
}

only=""
case ${1:-} in
    --image) image; exit 0 ;;
    --boot) only=${2:?--boot plain or systemd} ;;
    "") ;;
    *) echo "usage: $0 [--image | --boot plain|systemd]" >&2; exit 2 ;;
esac
image

# The test executables of this tree's debug build (a no-op when test.sh built them already):
# cargo reports each as a compiler artifact with its package, target and path.
t=$SECONDS
mkdir -p target/v2lane
cargo build --workspace --all-targets --locked --message-format=json 2>target/v2lane/build.err \
    | jq -r 'select(.reason == "compiler-artifact" and .profile.test and .executable != null)
             | "\(.manifest_path | split("/") | .[-2]):\(if .target.kind == ["lib"] then "lib" else .target.name end)\t\(.executable)"' \
        >target/v2lane/executables || { cat target/v2lane/build.err; log "cargo build failed"; exit 2; }
log "test executables ready in $((SECONDS - t))s"

# The plans: one `<executable>\t<pattern>` line per selected test (or pattern); the tests after
# `[systemd]` in tests.txt run in a second boot, with systemd as PID 1.
set -f  # `*` is a pattern here, not a glob
plan=target/v2lane/plan
: >"$plan"
: >"$plan-systemd"
while read -r target patterns; do
    [[ -z $target ]] && continue
    if [[ $target == "[systemd]" ]]; then plan=target/v2lane/plan-systemd; continue; fi
    exe=$(awk -F'\t' -v t="$target" '$1 == t {print $2; exit}' target/v2lane/executables)
    [[ -n $exe ]] || { log "no test executable for $target ($tests)"; exit 2; }
    for p in $patterns; do printf '%s\t%s\n' "$exe" "$p" >>"$plan"; done
done < <(sed 's/#.*//' "$tests")
set +f

rc=0
for plan in target/v2lane/plan target/v2lane/plan-systemd; do
    [[ -s $plan ]] || continue
    t=$SECONDS
    systemd=0
    [[ $plan == *-systemd ]] && systemd=1
    if [[ -n $only && $only != "$([[ $systemd == 1 ]] && echo systemd || echo plain)" ]]; then continue; fi
    log "$(wc -l <"$plan") entries in $plan, booting with $([[ $systemd == 1 ]] && echo systemd || echo the plain init) as PID 1"
    V2LANE_SYSTEMD=$systemd "$vm" run scripts/v2lane/guest.sh "$tree" "$plan" || rc=$?
    log "boot for $plan done in $((SECONDS - t))s"
done
log "$([[ $rc == 0 ]] && echo passed || echo "FAILED (status $rc)") in $((SECONDS - start))s (logs: target/v2lane/logs/)"
exit "$rc"
