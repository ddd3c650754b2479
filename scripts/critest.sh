#!/usr/bin/env bash
# Runs critest, the community's CRI validation suite (cri-tools), against a berthd built from
# this tree (target/debug/berthd; build first) with offline stand-ins of its images, serially,
# and fails on any failed spec or fewer than $CRITEST_MIN_PASSED (127) passed. berthd serves NRI
# on a private socket that critest gets with -nri-socket, so its 13 NRI specs run too. Prints `critest: N passed, M failed, K skipped`; the JUnit and
# JSON reports stay in target/critest/.
# Then it runs critest again with --runtime-handler=runc against a berthd with runc configured
# as the `runc` handler (docs/runtime-handlers.md), failing on any failed spec or fewer than
# $CRITEST_RUNC_MIN_PASSED (127, as the native pass: the runc handler runs user-namespaced
# pods too) passed; its reports stay in target/critest-runc/.
#
# critest comes from $CRITEST, the first argument, or the workplace's pinned build beside the
# checkout (../shared/tools/cri-tools/critest.xz, checked against its SHA256SUMS); the image
# builder from $CRI_TEST_IMAGES or ../shared/tools/cri-test-images.sh. Without them the run is
# skipped with a message, except under CI, where it fails.
# Extra arguments after `--` go to critest (e.g. -- -ginkgo.focus='Image Volume').
set -euo pipefail
cd "$(dirname "$0")/.."

shared=../shared/tools
critest=${CRITEST:-}
if [[ $# -gt 0 && $1 != -- ]]; then
    critest=$1
    shift
fi
[[ ${1:-} == -- ]] && shift
images_script=${CRI_TEST_IMAGES:-$shared/cri-test-images.sh}

missing() {
    if [[ -n ${CI:-} ]]; then
        echo "critest.sh: $1 (CI must run critest)" >&2
        exit 1
    fi
    echo "critest.sh: skipped: $1" >&2
    exit 0
}

if [[ -z $critest ]]; then
    [[ -f $shared/cri-tools/critest.xz ]] ||
        missing "no critest: set CRITEST or pass its path ($shared/cri-tools/critest.xz is absent)"
    mkdir -p target/cri-tools
    critest=target/cri-tools/critest
    want=$(awk '$2 == "critest" {print $1}' "$shared/cri-tools/SHA256SUMS")
    if [[ ! -x $critest ]] || [[ $(sha256sum "$critest" | cut -d' ' -f1) != "$want" ]]; then
        xz -dc "$shared/cri-tools/critest.xz" > "$critest.tmp"
        got=$(sha256sum "$critest.tmp" | cut -d' ' -f1)
        if [[ $got != "$want" ]]; then
            echo "critest.sh: critest digest $got, expected $want" >&2
            exit 1
        fi
        chmod +x "$critest.tmp"
        mv "$critest.tmp" "$critest"
    fi
fi
[[ -x $critest ]] || missing "critest at $critest is not executable"
[[ -f $images_script ]] || missing "no image builder: set CRI_TEST_IMAGES ($images_script is absent)"


target/debug/berth-critest \
    --critest "$critest" \
    --images-script "$images_script" \
    --work-dir /var/tmp/berth-cri-test-images \
    --report-dir target/critest \
    --min-passed "${CRITEST_MIN_PASSED:-127}" \
    --nri \
    -- "$@"

[[ -x /usr/bin/runc ]] || missing "no /usr/bin/runc for the runc handler pass (scripts/install-deps.sh installs it)"
target/debug/berth-critest \
    --critest "$critest" \
    --images-script "$images_script" \
    --work-dir /var/tmp/berth-cri-test-images \
    --report-dir target/critest-runc \
    --min-passed "${CRITEST_RUNC_MIN_PASSED:-127}" \
    --config-extra $'[runtimes.runc]\npath = "/usr/bin/runc"\n' \
    --nri \
    -- --runtime-handler=runc "$@"
