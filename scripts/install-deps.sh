#!/usr/bin/env bash
# Installs the Debian packages berth needs, on a Debian bookworm machine, as root.
# Usage: install-deps.sh [build|test]   (default: test, which includes build)
# Safe to run again: nothing is installed twice.
#   build:  protoc (k8s-cri's build script), a C compiler and static libc (test programs)
#   tests:  docker-registry (the e2e registry), apache2-utils (htpasswd for its auth),
#           busybox (dynamic; the test images' userland), nftables + iproute2 (pod network),
#           containernetworking-plugins (CNI bridge/host-local/portmap for CNI tests),
#           openssl (a throwaway certificate for the streaming server's TLS test),
#           skopeo + jq + xz-utils (critest's offline images and the critest binary)
set -euo pipefail

packages=(protobuf-compiler gcc libc6-dev ca-certificates)
if [[ ${1:-test} == test ]]; then
    packages+=(docker-registry apache2-utils busybox nftables iproute2 containernetworking-plugins openssl
        skopeo jq xz-utils)
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
