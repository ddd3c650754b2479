#!/usr/bin/env bash
# Benchmarks berth side by side with containerd (Debian's containerd 1.6 + runc) on this
# machine: installs what is missing, starts a private docker-registry, containerd and berthd
# (own sockets, state dirs, bridges and /24s inside 10.88.0.0/16), runs `berth-bench
# --compare` for each scenario, and stops and removes everything it started (also on
# Ctrl-C). Run as root on Debian bookworm, from anywhere in the repository.
#
# Usage: bench/compare-containerd.sh [--berth-only] [SCENARIO...]
#   SCENARIO: density pod-start burst exec churn pull (default: all, in that order; density
#   first so its "before pre-pull" figure is a fresh daemon's). --berth-only skips containerd.
# Environment (defaults in brackets): PODS [50] pods in pod-start, DENSITY_PODS [100],
#   DENSITY_SETTLE [12] seconds before each memory snapshot,
#   EXEC_RUNS [200], CHURN_WORKERS [4], CHURN_SECONDS [30], PULL_RUNS [3], BURST_PODS [110],
#   BURST_CLIENTS [1,4,16], BURST_ROUNDS [3],
#   CRUN [0] (1: also pod-start against containerd with crun), RUNC [0] (1: also pod-start of
#   berth's runc RuntimeClass handler against berth's native executor), BERTH_SHIM [the
#   static berth-shim beside berthd in target/dist] another shim to run (a file named
#   berth-shim, so the helper pattern finds its processes), OUT_DIR
#   [target/bench-results/<UTC time>]: tables (*.txt), reports (*.json), pod-start.png.
#
# Network: containerd's pods use CNI bridge bbn-ctrd on 10.88.250.0/24, berth's built-in
# network bridge bbn-berth on 10.88.251.0/24 with nft table inet berth_bench; e2e tests lease
# 10.88.100-249. No default route, DNS or host interface is touched; pods send no traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

BERTH_ONLY=0
SCENARIOS=()
for arg in "$@"; do
    case $arg in
    --berth-only) BERTH_ONLY=1 ;;
    density | pod-start | burst | exec | churn | pull) SCENARIOS+=("$arg") ;;
    -h | --help)
        sed -n '2,20p' "$0"
        exit 0
        ;;
    *)
        echo "compare-containerd: unknown argument $arg (see --help)" >&2
        exit 2
        ;;
    esac
done
((${#SCENARIOS[@]})) || SCENARIOS=(density pod-start burst exec churn pull)

PODS=${PODS:-50}
DENSITY_PODS=${DENSITY_PODS:-100}
# Past tokio's 10 s keep-alive of idle blocking threads, so "idle" has none of a pull's left.
DENSITY_SETTLE=${DENSITY_SETTLE:-12}
EXEC_RUNS=${EXEC_RUNS:-200}
CHURN_WORKERS=${CHURN_WORKERS:-4}
CHURN_SECONDS=${CHURN_SECONDS:-30}
BURST_PODS=${BURST_PODS:-110}
BURST_CLIENTS=${BURST_CLIENTS:-1,4,16}
BURST_ROUNDS=${BURST_ROUNDS:-3}
PULL_RUNS=${PULL_RUNS:-3}
CRUN=${CRUN:-0}
RUNC=${RUNC:-0}
OUT_DIR=${OUT_DIR:-$REPO/target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}

CTRD_BRIDGE=bbn-ctrd
CTRD_SUBNET=10.88.250.0/24
BERTH_BRIDGE=bbn-berth
BERTH_SUBNET=10.88.251.0/24
BERTH_NFT=berth_bench

log() { echo "compare-containerd: $*" >&2; }
die() {
    log "$*"
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root"
# One comparison at a time: the bridges, /24s and nft table are fixed names.
exec 9>/run/berth-bench.lock
flock -n 9 || die "another comparison holds /run/berth-bench.lock"

install_packages() {
    scripts/install-deps.sh test
    local want=(containerd runc) missing=()
    apt-cache show crun >/dev/null 2>&1 && want+=(crun)
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

((BERTH_ONLY)) || install_packages
((BERTH_ONLY)) && scripts/install-deps.sh test
log "building (release)"
# berthd and berth-shim as shipped (the shim linked statically), berth-bench beside cargo's.
scripts/build-release.sh target/dist >/dev/null
cargo build --release --locked -p berth-bench --bins
BIN=$REPO/target/dist
BENCH=$REPO/target/release/berth-bench

# Persistent state (images, snapshots) of both runtimes on the same disk filesystem; sockets
# and volatile state under /run (tmpfs, short paths: unix socket paths are limited to 108
# bytes).
WORK=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
RUN=$(mktemp -d /run/bbn.XXXXXX)
# The pods' cgroup parent (in every hierarchy), swept for leftover processes at the end.
CG_PARENT=/${RUN##*/}
mkdir -p "$OUT_DIR"
STARTED=() # PIDs this script started, stopped in reverse order

stop_pid() { # PID: TERM, up to 15 s, then KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# PIDs of processes whose command line mentions our private dirs (shims our daemons started,
# detached from them).
pids_under_work() {
    local d args
    for d in /proc/[0-9]*; do
        [[ ${d#/proc/} == "$$" || ${d#/proc/} == "$BASHPID" ]] && continue
        mapfile -d '' args <"$d/cmdline" 2>/dev/null || continue
        [[ " ${args[*]} " == *"$WORK/"* || " ${args[*]} " == *"$RUN/"* ]] && echo "${d#/proc/}"
    done
    return 0
}

cleanup() {
    local status=$? i pid
    trap - EXIT INT TERM
    log "cleaning up"
    for sock in "$RUN/berth.sock" "$RUN/containerd.sock"; do
        if [[ -S $sock ]]; then
            timeout 120 "$BENCH" remove-pods --endpoint "$sock" || true
        fi
    done
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED[i]}"
    done
    for pid in $(pids_under_work); do
        stop_pid "$pid"
    done
    # Container processes left in the run's cgroups (their shims gone), then the cgroups.
    local cg
    for cg in "/sys/fs/cgroup$CG_PARENT" /sys/fs/cgroup/*"$CG_PARENT"; do
        [[ -d $cg ]] || continue
        find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u |
            while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done
        sleep 0.2
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    # Daemon logs are kept with the results.
    for f in "$WORK"/*/log; do
        [[ -f $f ]] && cp "$f" "$OUT_DIR/$(basename "$(dirname "$f")").log"
    done
    # Mounts left under the private dirs (overlays, shm, netns), deepest first.
    awk -v w="$WORK/" -v r="$RUN/" 'index($5, w) == 1 || index($5, r) == 1 { print $5 }' \
        /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    ip link del "$CTRD_BRIDGE" 2>/dev/null || true
    ip link del "$BERTH_BRIDGE" 2>/dev/null || true
    nft delete table inet "$BERTH_NFT" 2>/dev/null || true
    nft delete table ip "$BERTH_NFT" 2>/dev/null || true
    rm -rf "$WORK" "$RUN"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    local p
    while :; do
        p=$((30000 + RANDOM % 10000))
        ss -Hltn "sport = :$p" | grep -q . || {
            echo "$p"
            return
        }
    done
}

wait_http() { # PORT PID: until GET /v2/ answers 200; fails if PID exits or after 15 s
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
            head -c 12 <&3) 2>/dev/null | grep -q ' 200'; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

wait_cri() { # SOCKET LOGFILE
    local i
    for ((i = 0; i < 300; i++)); do
        [[ -S $1 ]] && "$BENCH" info --endpoint "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    cat "$2" >&2
    die "no CRI answer on $1"
}

# --- registry ----------------------------------------------------------------------------
log "pushing the test images"
"$BENCH" push-test-images --storage "$WORK/registry/storage" >"$WORK/images.txt"
registry_config() { # PORT
    cat <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry/storage
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: 127.0.0.1:$1
  secret: berth-bench-$1
health:
  storagedriver:
    enabled: false
EOF
}
# A free port can be taken by another process before the registry binds it: try a few.
for attempt in 1 2 3 4 5; do
    PORT=$(free_port)
    registry_config "$PORT" >"$WORK/registry/config.yml"
    setsid env -u REGISTRY_HTTP_ADDR docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_http "$PORT" "$pid" && break
    stop_pid "$pid"
    ((attempt < 5)) || die "docker-registry did not start: $(cat "$WORK/registry/log")"
done
REGISTRY=127.0.0.1:$PORT
IMAGE=$REGISTRY/berth-test/busybox:oci
PAUSE=$REGISTRY/berth-bench/pause:latest
PULL_IMAGE=$REGISTRY/berth-bench/pull:latest

# --- berthd --------------------------------------------------------------------------------
mkdir -p "$WORK/berth/net.d"
cat >"$WORK/berth/berth.toml" <<EOF
shim_path = "${BERTH_SHIM:-}"
[log]
level = "warn"
[metrics]
address = "127.0.0.1:0"
[network]
bridge = "$BERTH_BRIDGE"
pod_cidr = "$BERTH_SUBNET"
nft_table = "$BERTH_NFT"
[cni]
conf_dir = "$WORK/berth/net.d"
[registry]
insecure = ["$REGISTRY"]
EOF
if command -v runc >/dev/null; then
    printf '[runtimes.runc]\npath = "%s"\n' "$(command -v runc)" >>"$WORK/berth/berth.toml"
fi
# setsid: the daemons must not get the terminal's Ctrl-C (berth-bench still needs them then).
setsid "$BIN/berthd" --config "$WORK/berth/berth.toml" --socket "$RUN/berth.sock" \
    --root-dir "$WORK/berth/root" --state-dir "$RUN/berth" 2>"$WORK/berth/log" &
STARTED+=($!)
wait_cri "$RUN/berth.sock" "$WORK/berth/log"
BERTH_ARGS=(--endpoint "$RUN/berth.sock" --name berth
    --helper-pattern "berth-shim pod ${RUN//./\\.}/berth$")

# --- containerd ----------------------------------------------------------------------------
COMPARE_ARGS=()
if ((!BERTH_ONLY)); then
    C=$WORK/containerd
    mkdir -p "$C/net.d"
    cat >"$C/net.d/10-berth-bench.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "berth-bench",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CTRD_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$CTRD_SUBNET" }]],
        "dataDir": "$C/cni-ipam"
      }
    }
  ]
}
EOF
    CRUN_RUNTIME=""
    if command -v crun >/dev/null; then
        CRUN_RUNTIME="
    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun]
      runtime_type = \"io.containerd.runc.v2\"
      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.crun.options]
        BinaryName = \"$(command -v crun)\"
        Root = \"$RUN/crun\"
        SystemdCgroup = false"
    fi
    cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$RUN/containerd.sock"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  # This machine's sessions may not lower oom_score_adj (no CAP_SYS_RESOURCE); without this
  # runc fails to start the sandbox at oom_score_adj -998 ("can't get final child's PID").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUN/runc"
        SystemdCgroup = false$CRUN_RUNTIME
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$C/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
    endpoint = ["http://$REGISTRY"]
EOF
    setsid containerd --config "$C/config.toml" 2>"$C/log" &
    STARTED+=($!)
    wait_cri "$RUN/containerd.sock" "$C/log"
    COMPARE_ARGS=(--compare "$RUN/containerd.sock" --compare-name containerd
        --compare-helper-pattern "containerd-shim-runc-v2 .*-address ${RUN//./\\.}/containerd\\.sock"
        --compare-sandbox-pattern '^/pause$')
fi

# --- versions and machine ------------------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r)," \
        "cgroup $(if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then echo v2; else echo "v1 (hybrid)"; fi)"
    echo "berth: $("$BENCH" info --endpoint "$RUN/berth.sock" | cut -f1)" \
        "(commit $(git -C "$REPO" rev-parse --short HEAD))"
    if ((!BERTH_ONLY)); then
        echo "containerd: $("$BENCH" info --endpoint "$RUN/containerd.sock" | cut -f1)"
        echo "runc: $(runc --version | head -1)"
        command -v crun >/dev/null && echo "crun: $(crun --version | head -1)"
    fi
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT_DIR/machine.txt"

# --- scenarios -----------------------------------------------------------------------------
COMMON=("${BERTH_ARGS[@]}" "${COMPARE_ARGS[@]}" --image "$IMAGE" --cgroup-parent "$CG_PARENT")
run() { # SCENARIO ARGS...
    local name=$1
    shift
    log "scenario $name"
    echo "\$ berth-bench $name ${*}" >"$OUT_DIR/$name.txt"
    "$BENCH" "$name" "${COMMON[@]}" --save "$OUT_DIR/$name.json" "$@" | tee -a "$OUT_DIR/$name.txt"
}
for s in "${SCENARIOS[@]}"; do
    case $s in
    density) run density --pods "$DENSITY_PODS" --settle "$DENSITY_SETTLE" ;;
    pod-start)
        run pod-start --pods "$PODS"
        "$BENCH" plot "$OUT_DIR/pod-start.json" --output "$OUT_DIR/pod-start.png"
        if ((CRUN && !BERTH_ONLY)) && command -v crun >/dev/null; then
            log "scenario pod-start with crun"
            "$BENCH" pod-start "${BERTH_ARGS[@]}" --compare "$RUN/containerd.sock" \
                --compare-name containerd+crun --compare-runtime-handler crun --image "$IMAGE" \
                --cgroup-parent "$CG_PARENT" \
                --pods "$PODS" --save "$OUT_DIR/pod-start-crun.json" | tee "$OUT_DIR/pod-start-crun.txt" || true
        fi
        if ((RUNC)) && command -v runc >/dev/null; then
            log "scenario pod-start: berth's runc handler against its native executor"
            "$BENCH" pod-start --endpoint "$RUN/berth.sock" --name berth+runc --runtime-handler runc \
                --helper-pattern "berth-shim pod ${RUN//./\\.}/berth$" \
                --compare "$RUN/berth.sock" --compare-name berth \
                --compare-helper-pattern "berth-shim pod ${RUN//./\\.}/berth$" --image "$IMAGE" \
                --cgroup-parent "$CG_PARENT" --pods "$PODS" --save "$OUT_DIR/pod-start-runc.json" |
                tee "$OUT_DIR/pod-start-runc.txt"
        fi
        ;;
    exec) run exec --runs "$EXEC_RUNS" ;;
    burst) run burst --pods "$BURST_PODS" --clients "$BURST_CLIENTS" --rounds "$BURST_ROUNDS" ;;
    churn) run churn --workers "$CHURN_WORKERS" --seconds "$CHURN_SECONDS" ;;
    pull)
        log "scenario pull"
        echo "\$ berth-bench pull --runs $PULL_RUNS" >"$OUT_DIR/pull.txt"
        "$BENCH" pull "${BERTH_ARGS[@]}" "${COMPARE_ARGS[@]}" --pull-image "$PULL_IMAGE" \
            --cgroup-parent "$CG_PARENT" \
            --runs "$PULL_RUNS" --save "$OUT_DIR/pull.json" | tee -a "$OUT_DIR/pull.txt"
        ;;
    esac
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT_DIR/machine.txt"
log "results in $OUT_DIR"
