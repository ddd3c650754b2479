#!/usr/bin/env bash
# Tests the Helm chart (charts/berth): helm lint and helm template for every values file in
# charts/berth/ci/, the rendered manifests validated offline against the Kubernetes 1.30–1.36
# schemas (kubernetes-validate --strict), the rendered berth.toml checked by berthd, and the
# installer script run for real against a scratch directory standing in for the host root:
# the berth it installs serves a pod through its unit's ExecStart (e2e test `packaging`), kubelet
# is switched to berth and back, and uninstall leaves the scratch root as it found it.
# Usage: scripts/test-chart.sh [BIN_DIR]  (default target/dist, from scripts/build-release.sh)
# Needs the tools scripts/install-deps.sh puts in target/ops-tools. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=$(realpath "${1:-target/dist}")
tools=target/ops-tools
helm=$tools/bin/helm
validate=$tools/venv/bin/kubernetes-validate
chart=charts/berth
start=$SECONDS
step() { echo "test-chart: $*"; }
fail() { echo "test-chart: FAILED: $*" >&2; exit 1; }
[[ -x $helm && -x $validate ]] || fail "helm or kubernetes-validate missing: run scripts/install-deps.sh"
[[ -x $bin_dir/berthd && -x $bin_dir/berth-shim ]] || fail "no berthd/berth-shim in $bin_dir"

work=$(mktemp -d /tmp/berth-chart-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The chart's unit is the package's, with the binary in /usr/local/bin.
diff <(sed -e '/^Documentation=/d' -e 's#^ExecStart=/usr/bin/berthd#ExecStart=/usr/local/bin/berthd#' packaging/berth.service) \
    "$chart/files/berth.service" || fail "$chart/files/berth.service differs from packaging/berth.service"
diff packaging/berth-tmpfiles.conf "$chart/files/berth-tmpfiles.conf" || fail "tmpfiles entries differ"
bash -n "$chart/files/berth-install.sh"

toml_of() { # rendered manifest -> the berth.toml in its config Secret
    /usr/bin/python3 -c '
import sys
docs = sys.stdin.read().split("\n---\n")
for d in docs:
    if "kind: Secret" in d and "berth.toml: |" in d:
        body = d.split("berth.toml: |\n", 1)[1]
        print("\n".join(l[4:] for l in body.splitlines()))
        break
else:
    sys.exit("no berth.toml Secret rendered")'
}

for values in "$chart"/ci/*.yaml; do
    name=$(basename "$values" .yaml)
    "$helm" lint --strict "$chart" -f "$values" >"$work/lint.out" || { cat "$work/lint.out"; fail "helm lint $name"; }
    # As on a cluster running the Prometheus Operator (its PodMonitor CRD served).
    "$helm" template berth "$chart" --namespace kube-system -f "$values" \
        --api-versions monitoring.coreos.com/v1/PodMonitor >"$work/$name.yaml"
    kinds=$(grep -c '^kind:' "$work/$name.yaml")
    for v in 1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0 1.36.0; do
        # kubernetes-validate knows no CRDs: it warns about the PodMonitor and checks the rest.
        "$validate" --strict --quiet -k "$v" "$work/$name.yaml" 2>&1 | grep -v "Couldn't find schema for kind PodMonitor" || true
        "$validate" --strict --quiet -k "$v" "$work/$name.yaml" >/dev/null 2>&1 || fail "$name does not validate against Kubernetes $v"
    done
    toml_of <"$work/$name.yaml" >"$work/$name.toml"
    "$bin_dir/berthd" --check-config --config "$work/$name.toml" >/dev/null || fail "berthd rejects the berth.toml of $name"
    crd=""
    if grep -q '^kind: PodMonitor' "$work/$name.yaml"; then crd=" (the PodMonitor is a CRD: not schema-checked)"; fi
    step "$name: lint ok, $kinds objects valid for Kubernetes 1.30-1.36$crd, berth.toml accepted"
done
# The chart's defaults are berthd's defaults.
diff <("$bin_dir/berthd" --check-config --config "$work/default-values.toml") \
    <("$bin_dir/berthd" --check-config --config /dev/null) || fail "values.yaml config differs from berthd's defaults"
grep -q '^kind: PodMonitor' "$work/kubelet-metrics-values.yaml" || fail "no PodMonitor with metrics on"
if "$helm" template berth "$chart" --set metrics.proxy.enabled=true | grep -q '^kind: PodMonitor'; then
    fail "PodMonitor rendered without the Prometheus Operator's CRD"
fi
if "$helm" template berth "$chart" --set config.bogus=1 >/dev/null 2>&1; then
    fail "values.schema.json accepted an unknown config key"
fi
if "$helm" template berth "$chart" --set metrics.proxy.enabled=true --set config.metrics.address= >/dev/null 2>&1; then
    fail "the metrics proxy rendered with berthd's /metrics turned off"
fi
step "defaults equal berthd's, PodMonitor only with its CRD, unknown config keys and a proxy without /metrics rejected"

# The installer, for real, into a scratch host root (no systemd there: files only).
host=$work/host
payload=$work/payload
chart_dir=$work/chart-files
# What any host has: the installer adds files to these, not the directories.
mkdir -p "$host/var/lib/kubelet" "$host/usr/local/bin" "$host/etc/systemd/system" "$host/etc/tmpfiles.d" \
    "$host/run" "$payload" "$chart_dir"
cp "$bin_dir/berthd" "$bin_dir/berth-shim" "$payload/"
cp "$work/default-values.toml" "$chart_dir/berth.toml"
cp "$chart/files/berth.service" "$chart/files/berth-tmpfiles.conf" "$chart_dir/"
# kubelet as kubeadm leaves it, on containerd.
printf 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n' \
    >"$host/var/lib/kubelet/config.yaml"
echo 'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10"' \
    >"$host/var/lib/kubelet/kubeadm-flags.env"
find "$host" -printf '%P %m %s\n' | sort >"$work/before"
md5sum "$host"/var/lib/kubelet/* >"$work/kubelet.md5"

installer() {
    HOST_ROOT=$host BERTH_PAYLOAD=$payload BERTH_CHART_DIR=$chart_dir BERTH_SYSTEMCTL=none \
        BERTH_STATUS_DIR=$work/status bash "$chart/files/berth-install.sh" "$@"
}
installer install
for f in usr/local/bin/berthd usr/local/bin/berth-shim etc/berth/berth.toml etc/systemd/system/berth.service etc/tmpfiles.d/berth.conf; do
    [[ -f $host/$f ]] || fail "installer did not write /$f"
done
[[ $(stat -c %a "$host/etc/berth/berth.toml") == 600 ]] || fail "/etc/berth/berth.toml is not mode 0600"
installer probe || fail "probe after install"
# A second run changes nothing.
find "$host" -type f -printf '%P %s %T@\n' | sort >"$work/once"
installer install
find "$host" -type f -printf '%P %s %T@\n' | sort | diff "$work/once" - || fail "a second install rewrote files"

step "installer wrote berth into $host; the installed unit serves a pod:"
BERTH_UNIT_FILE=$host/etc/systemd/system/berth.service BERTH_HOST_ROOT=$host \
    scripts/run-ignored-e2e.sh packaging || fail "the berth in the scratch root does not serve a pod"

# The socket probe the DaemonSet's readiness uses, against a berthd from the scratch root.
probe_dir=$work/probe
mkdir -p "$probe_dir"
cat >"$probe_dir/berth.toml" <<TOML
socket = "$probe_dir/berth.sock"
root_dir = "$probe_dir/root"
state_dir = "$probe_dir/state"
[metrics]
address = ""
[network]
bridge = "btchartprobe"
nft_table = "berth_chart_probe"
pod_cidr = "10.88.251.0/24"
[cni]
conf_dir = "$probe_dir/cni"
TOML
probe_socket() { HOST_ROOT=/ BERTH_SOCKET=$probe_dir/berth.sock bash "$chart/files/berth-install.sh" socket-answers; }
"$host/usr/local/bin/berthd" --config "$probe_dir/berth.toml" 2>"$probe_dir/stderr" &
berthd_pid=$!
for _ in $(seq 100); do probe_socket && break; sleep 0.2; done
probe_socket || { kill "$berthd_pid"; cat "$probe_dir/stderr"; fail "socket probe does not see berthd answering"; }
kill -STOP "$berthd_pid"
if probe_socket; then kill -KILL "$berthd_pid"; fail "socket probe passes for a stopped berthd"; fi
kill -KILL "$berthd_pid"
wait "$berthd_pid" 2>/dev/null || true # reports "Killed": on purpose
if probe_socket; then fail "socket probe passes for a stale socket"; fi
ip link delete btchartprobe 2>/dev/null || true
nft delete table ip berth_chart_probe 2>/dev/null || true
step "socket probe: ready while berthd answers, not ready when it hangs or is gone"

# kubelet switched to berth, idempotently, then back.
installer configure-kubelet
grep -qx 'containerRuntimeEndpoint: unix:///run/berth/berth.sock' "$host/var/lib/kubelet/config.yaml" || fail "kubelet config not pointed at berth"
grep -qx 'cgroupDriver: cgroupfs' "$host/var/lib/kubelet/config.yaml" || fail "kubelet cgroupDriver not cgroupfs"
grep -q 'container-runtime-endpoint' "$host/var/lib/kubelet/kubeadm-flags.env" && fail "kubeadm flag still overrides the endpoint"
grep -q 'pod-infra-container-image' "$host/var/lib/kubelet/kubeadm-flags.env" || fail "other kubelet flags lost"
cp -a "$host/var/lib/kubelet" "$work/kubelet-once"
installer configure-kubelet
diff -r "$work/kubelet-once" "$host/var/lib/kubelet" || fail "a second configure-kubelet changed kubelet's files"
installer uninstall
installer probe || fail "probe after uninstall"
md5sum -c --quiet "$work/kubelet.md5" || fail "kubelet's files not restored byte for byte"
find "$host" -printf '%P %m %s\n' | sort | grep -v '^run/berth' | diff "$work/before" - ||
    fail "uninstall left files in the scratch root"
step "kubelet switched to berth and restored; uninstall left only /run/berth (berth's state stays by design)"
step "ok in $((SECONDS - start))s"
