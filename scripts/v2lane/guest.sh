#!/bin/bash
# Runs inside the cgroup v2 VM (scripts/v2-lane.sh starts it): runs every test of the plan
# the host wrote, each in its own process, and prints one line per test and a summary.
#   guest.sh HOST_TREE PLAN
# HOST_TREE is the work tree's path on the host: the share (/shared) is linked there so the
# paths compiled into the test binaries (CARGO_MANIFEST_DIR, build script outputs) resolve.
# PLAN holds `<executable>\t<pattern>` lines (see scripts/v2lane/tests.txt for patterns): `*`
# and exact names run each test in its own process (tests that make cgroups or start berthd
# assume one process per test, as under nextest); `prefix::` runs the matching (pure unit)
# tests in one process; `-name` leaves a test out.
set -u
tree=$1 plan=$2
if [ "$tree" != /shared ] && [ ! -e "$tree" ]; then
    mkdir -p "$(dirname "$tree")" && ln -s /shared "$tree"
fi
cd "$tree" || exit 2
logs=target/v2lane/logs/$(basename "$plan")
rm -rf "$logs" && mkdir -p "$logs"
# Test state (berthd's root and state dirs, registries) on the VM's ext4 root, as on a node:
# the VM's /tmp is a nodev tmpfs, and Debian 12's kernel (6.1) cannot idmap tmpfs mounts (6.3+),
# which user-namespaced pods need for their image layers. Writes go to QEMU's throwaway overlay.
# Bound over /tmp so paths stay as short as the host's (unix socket paths have 108 bytes).
mkdir -p /var/tmp/v2lane-tests && mount --bind /var/tmp/v2lane-tests /tmp
export CI=true RUST_BACKTRACE=1 TMPDIR=/tmp
# Starting a debug berthd from the 9p share under emulation can pass the harness's native 20 s
# when the host is busy.
export BERTH_E2E_READY_TIMEOUT_SECS=${BERTH_E2E_READY_TIMEOUT_SECS:-180}
declare -A excluded
while IFS=$'\t' read -r exe pattern; do
    [[ $pattern == -* ]] && excluded["$exe|${pattern#-}"]=1
done <"$plan"
per_test_timeout=${BERTH_V2LANE_TEST_TIMEOUT:-900}

echo "v2-lane: $(uname -r), PID 1 $(cat /proc/1/comm), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
[ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "v2-lane: /sys/fs/cgroup is not cgroup2"; exit 2; }

passed=0 failed=() skipped=()
while IFS=$'\t' read -r exe pattern; do
    [ -n "$exe" ] || continue
    [[ $pattern == -* ]] && continue
    if [[ $pattern == *:: ]]; then
        name="$(basename "$exe" | sed 's/-[0-9a-f]*$//')::$pattern*"
        log=$logs/$(basename "$exe")__${pattern//::/__}.log
        t0=$(date +%s.%N)
        timeout -k 10 "$per_test_timeout" "$exe" "$pattern" --test-threads 2 >"$log" 2>&1
        rc=$?
        dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
        n=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log")
        if [ $rc -eq 0 ] && [ -n "$n" ] && [ "$n" -gt 0 ]; then
            echo "v2-lane: PASS $name: $n tests (${dt}s)"
            passed=$((passed + n))
        else
            echo "v2-lane: FAIL $name (${dt}s, status $rc); last lines of $log:"
            tail -n 60 "$log" | sed 's/^/    /'
            failed+=("$name")
        fi
        continue
    fi
    # `--list --format terse`: one `name: test` line per test.
    mapfile -t names < <("$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p')
    selected=()
    for n in "${names[@]}"; do
        [ -n "${excluded["$exe|$n"]:-}" ] && continue
        case $pattern in
            '*') selected+=("$n") ;;
            *) [[ $n == "$pattern" ]] && selected+=("$n") ;;
        esac
    done
    if [ ${#selected[@]} -eq 0 ]; then
        echo "v2-lane: MISSING $(basename "$exe") $pattern: no such test"
        failed+=("$(basename "$exe"):$pattern (missing)")
        continue
    fi
    for n in "${selected[@]}"; do
        log=$logs/$(basename "$exe")__${n//::/__}.log
        t0=$(date +%s.%N)
        timeout -k 10 "$per_test_timeout" "$exe" --exact "$n" --nocapture --test-threads 1 >"$log" 2>&1
        rc=$?
        dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
        name="$(basename "$exe" | sed 's/-[0-9a-f]*$//')::$n"
        if [ $rc -eq 0 ] && grep -q '^test result: ok. 1 passed' "$log"; then
            if grep -q '^skipped' "$log"; then
                echo "v2-lane: SKIP $name (${dt}s): $(grep -m1 '^skipped' "$log")"
                skipped+=("$name")
            else
                echo "v2-lane: PASS $name (${dt}s)"
                passed=$((passed + 1))
            fi
        else
            [ $rc -eq 124 ] && echo "v2-lane: timed out after ${per_test_timeout}s"
            echo "v2-lane: FAIL $name (${dt}s, status $rc); last lines of $log:"
            tail -n 60 "$log" | sed 's/^/    /'
            failed+=("$name")
        fi
    done
done <"$plan"

echo "v2-lane: ${passed} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
for f in "${failed[@]}"; do echo "v2-lane: failed: $f"; done
for s in "${skipped[@]}"; do echo "v2-lane: skipped: $s"; done
# A skipped test proved nothing: the lane exists to run them all.
[ ${#failed[@]} -eq 0 ] && [ ${#skipped[@]} -eq 0 ]
