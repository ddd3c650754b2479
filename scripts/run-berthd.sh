#!/usr/bin/env bash
# Builds berthd (release) and runs it in the foreground with its embedded defaults:
# socket /run/berth/berth.sock, state in /var/lib/berth and /run/berth. Run as root.
# Extra arguments go to berthd, e.g. --log-level debug or --config /etc/berth/berth.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh build
# The built-in pod network programs NAT and host ports with nft.
command -v nft >/dev/null || apt-get install -y -qq nftables >/dev/null
scripts/build-release.sh target/dist >/dev/null
exec target/dist/berthd "$@"
